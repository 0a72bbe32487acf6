// C++ std::thread, mutex, condition_variable, futures and exceptions across threads.
#include <atomic>
#include <condition_variable>
#include <future>
#include <iostream>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <vector>

static int work(int i) {
    if (i == 3) throw std::runtime_error("worker 3 failed");
    return i * i;
}

int main() {
    std::vector<std::future<int>> fs;
    for (int i = 0; i < 5; i++) fs.push_back(std::async(std::launch::async, work, i));
    for (int i = 0; i < 5; i++) {
        try {
            std::cout << "future " << i << " = " << fs[i].get() << "\n";
        } catch (const std::exception &e) {
            std::cout << "future " << i << " threw: " << e.what() << "\n";
        }
    }
    std::mutex m;
    std::condition_variable cv;
    int stage = 0;
    std::atomic<long> hits{0};
    std::vector<std::thread> ts;
    for (int i = 0; i < 3; i++)
        ts.emplace_back([&, i] {
            std::unique_lock<std::mutex> l(m);
            cv.wait(l, [&] { return stage == 1; });
            hits += i + 1;
            try {
                throw std::logic_error("inside thread");
            } catch (const std::logic_error &) {
                hits += 100;
            }
        });
    {
        std::lock_guard<std::mutex> l(m);
        stage = 1;
    }
    cv.notify_all();
    for (auto &t : ts) t.join();
    std::cout << "hits=" << hits << " hw>0=" << (std::thread::hardware_concurrency() > 0) << "\n";
    return 0;
}
