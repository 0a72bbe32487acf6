/* Map as much anonymous memory as the VM gives, then either fill it with a pattern (`write`)
 * or check that every word of it reads zero (`check`). Prints what it saw. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define MAXMAPS 4096

int main(int argc, char **argv) {
    int write = argc > 1 && strcmp(argv[1], "write") == 0;
    static uint64_t *maps[MAXMAPS];
    static size_t lens[MAXMAPS];
    int n = 0;
    size_t total = 0;
    for (size_t size = (size_t)1 << 30; size >= 4096 && n < MAXMAPS;) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            size /= 2;
            continue;
        }
        maps[n] = p;
        lens[n] = size;
        n++;
        total += size;
    }
    uint64_t nonzero = 0, words = 0;
    for (int i = 0; i < n; i++) {
        uint64_t *w = maps[i];
        size_t cnt = lens[i] / 8;
        for (size_t j = 0; j < cnt; j++) {
            if (write) {
                w[j] = 0xa5a5a5a5a5a5a5a5ull ^ (uint64_t)(uintptr_t)&w[j];
            } else if (w[j] != 0) {
                nonzero++;
            }
        }
        words += cnt;
    }
    printf("%s mapped=%zu maps=%d words=%llu nonzero=%llu\n", write ? "write" : "check", total, n,
           (unsigned long long)words, (unsigned long long)nonzero);
    if (argc > 2 && strcmp(argv[2], "spin") == 0) {
        fflush(stdout);
        for (;;) {
        }
    }
    return nonzero != 0;
}
