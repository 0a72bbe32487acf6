/* Large allocations: malloc of hundreds of MiB, mmap/munmap/mremap, zeroed memory on reuse. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int all_zero(const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i += 512) if (p[i]) return 0;
    return p[n - 1] == 0;
}

int main(int argc, char **argv) {
    size_t big = (argc > 1 ? strtoul(argv[1], 0, 0) : 160) << 20;
    /* one big malloc, every page touched */
    unsigned char *p = malloc(big);
    printf("malloc big ok=%d\n", p != NULL);
    if (!p) return 1;
    unsigned long s1 = 0, s2 = 0;
    for (size_t i = 0; i < big; i += 4096) { p[i] = (unsigned char)(i >> 12); s1 += p[i]; }
    for (size_t i = 0; i < big; i += 4096) s2 += p[i];
    printf("big checksum match=%d\n", s1 == s2);
    free(p);

    /* calloc after free must be zero (mmap threshold sized: munmap then mmap again) */
    for (int round = 0; round < 4; round++) {
        unsigned char *a = malloc(8 << 20);
        memset(a, 0xab, 8 << 20);
        free(a);
        unsigned char *b = calloc(1, 8 << 20);
        printf("calloc round %d zero=%d\n", round, all_zero(b, 8 << 20));
        memset(b, 0xcd, 8 << 20);
        free(b);
    }
    /* small chunks from the heap */
    for (int i = 0; i < 3; i++) {
        char *a = malloc(1000);
        memset(a, 0x55, 1000);
        free(a);
        char *b = calloc(1000, 1);
        printf("small calloc zero=%d\n", all_zero((unsigned char *)b, 1000));
        free(b);
    }
    /* brk: grow, dirty, shrink, grow again -> zero */
    char *b0 = sbrk(0);
    char *b1 = sbrk(1 << 20);
    printf("sbrk grow ok=%d\n", b1 == b0);
    memset(b1, 0x77, 1 << 20);
    sbrk(-(1 << 20));
    char *b2 = sbrk(1 << 20);
    printf("sbrk regrow same=%d zero=%d\n", b2 == b1, all_zero((unsigned char *)b2, 1 << 20));
    sbrk(-(1 << 20));

    /* mmap, mremap grow (contents kept, new part zero), shrink, munmap */
    size_t m = 32 << 20;
    /* one page more than needed, then free that page: the blocker below has room */
    unsigned char *q = mmap(NULL, m + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(q + m, 4096);
    printf("mmap ok=%d aligned=%d zero=%d\n", q != MAP_FAILED, ((uintptr_t)q & 4095) == 0, all_zero(q, m));
    for (size_t i = 0; i < m; i += 4096) q[i] = 1 + (i >> 12) % 251;
    /* block in-place growth so mremap must move */
    void *blocker = mmap(q + m, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    unsigned char *r = mremap(q, m, 2 * m, MREMAP_MAYMOVE);
    int kept = 1;
    for (size_t i = 0; i < m; i += 4096) kept &= r[i] == 1 + (i >> 12) % 251;
    printf("mremap ok=%d kept=%d new part zero=%d moved=%d\n", r != MAP_FAILED, kept,
           all_zero(r + m, m), blocker != MAP_FAILED ? r != q : -1);
    if (blocker != MAP_FAILED) munmap(blocker, 4096);
    unsigned char *s = mremap(r, 2 * m, m / 2, 0);
    printf("mremap shrink in place=%d\n", s == r);
    errno = 0;
    void *nomove = mremap(s, m / 2, 1UL << 45, 0);
    printf("mremap huge no-move fails=%d ENOMEM=%d\n", nomove == MAP_FAILED, errno == ENOMEM);
    printf("munmap=%d\n", munmap(s, m / 2));
    /* MAP_FIXED over a fresh mapping, partial munmap, mprotect */
    unsigned char *t = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(t, 9, 1 << 20);
    unsigned char *u = mmap(t + 65536, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    printf("map fixed same=%d zero=%d neighbour kept=%d\n", u == t + 65536, all_zero(u, 65536), t[0] == 9 && t[131072] == 9);
    int um = munmap(t + 4096, 4096);
    printf("munmap middle=%d mprotect=%d\n", um, mprotect(t, 4096, PROT_READ));
    mprotect(t, 4096, PROT_READ | PROT_WRITE);
    /* MADV_DONTNEED on private anonymous memory reads back zero */
    int ma = madvise(t + 8192, 8192, MADV_DONTNEED);
    printf("madvise=%d zero after=%d\n", ma, all_zero(t + 8192, 8192));
    munmap(t, 1 << 20);
    /* errors */
    errno = 0;
    void *huge = mmap(NULL, 1UL << 46, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap 64 TiB fails=%d ENOMEM=%d\n", huge == MAP_FAILED, errno == ENOMEM);
    errno = 0;
    int failed = mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED;
    printf("mmap len 0=%d EINVAL=%d\n", failed, errno == EINVAL);
    errno = 0;
    failed = munmap((char *)t + 1, 4096);
    printf("munmap unaligned=%d EINVAL=%d\n", failed, errno == EINVAL);
    errno = 0;
    void *nul = malloc(1UL << 46);
    printf("malloc 64 TiB null=%d\n", nul == NULL);
    /* many small mappings */
    void *maps[200];
    int ok = 1;
    for (int i = 0; i < 200; i++) { maps[i] = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); ok &= maps[i] != MAP_FAILED; }
    for (int i = 0; i < 200; i++) { ok &= all_zero(maps[i], 65536); memset(maps[i], i, 65536); }
    for (int i = 0; i < 200; i += 2) munmap(maps[i], 65536);
    for (int i = 1; i < 200; i += 2) ok &= ((unsigned char *)maps[i])[100] == (unsigned char)i;
    for (int i = 1; i < 200; i += 2) munmap(maps[i], 65536);
    printf("200 small mappings ok=%d\n", ok);
    return 0;
}
