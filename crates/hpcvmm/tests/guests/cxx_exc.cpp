// C++ with exceptions, RTTI, the standard library and iostreams.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

struct Boom : std::runtime_error {
    int code;
    Boom(int c) : std::runtime_error("boom " + std::to_string(c)), code(c) {}
};

static int deep(int n) {
    if (n == 0) throw Boom(42);
    std::unique_ptr<int> guard(new int(n));
    return deep(n - 1) + *guard;
}

int main(int argc, char **argv) {
    try {
        deep(50);
    } catch (const Boom &b) {
        std::cout << "caught " << b.what() << " code " << b.code << "\n";
    }
    try {
        std::vector<int> v(3);
        v.at(10) = 1;
    } catch (const std::out_of_range &) {
        std::cout << "out_of_range caught\n";
    }
    try {
        throw 17;
    } catch (int x) {
        std::cout << "int " << x << "\n";
    }
    std::map<std::string, int> words;
    std::istringstream in("the quick brown fox jumps over the lazy dog the end");
    for (std::string w; in >> w;) words[w]++;
    for (auto &[w, n] : words) std::cout << w << "=" << n << " ";
    std::cout << "\n";
    std::vector<double> xs;
    for (int i = 0; i < 1000; i++) xs.push_back((i * 7919) % 1000 / 10.0);
    std::sort(xs.begin(), xs.end());
    std::cout << "median " << xs[500] << "\n";
    {
        std::ofstream f("cxx_tmp.txt");
        f << "line one\nline two\n";
    }
    std::ifstream f("cxx_tmp.txt");
    std::string line;
    int lines = 0;
    while (std::getline(f, line)) lines++;
    std::cout << "file lines " << lines << "\n";
    std::remove("cxx_tmp.txt");
    std::cerr << "to stderr\n";
    if (argc > 1) throw std::runtime_error("uncaught");
    return 3;
}
