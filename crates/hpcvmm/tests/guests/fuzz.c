/* Fuzzes the VMM's system call layer: random calls from the implemented set with random and
 * hostile arguments (pointers near and past the end of guest memory, in the VMM's low system
 * area, kernel addresses, huge lengths, negative fds). Deterministic: argv[1] seeds it, argv[2]
 * is the iteration count. Calls that would legitimately end or hang the program (exit, kill,
 * SET_FS, infinite sleeps or waits, unmapping its own memory) get their dangerous arguments
 * tamed; everything else is hostile. Prints a summary on a saved copy of stdout. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng;
static uint64_t next(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }
static uint64_t pick(const uint64_t *v, int n) { return v[next() % n]; }
#define PICK(arr) pick(arr, sizeof(arr) / sizeof(arr[0]))

#define SCRATCH (8 << 20)
static char *scratch;     /* valid memory the fuzz may scribble on: middle 4 MiB */
static uint64_t top;      /* end of the initial stack = end of guest memory in the VM */
static uint32_t *fword;   /* a futex word with a known value */
static struct timespec short_ts = {0, 1000}, zero_ts = {0, 0};
static struct iovec iov[4];

/* Hostile pointers: no valid memory the program depends on. */
static uint64_t hostile(void) {
    const uint64_t v[] = {0, 1, 8, 0x1000, 0x3008, 0x4000, 0x8000, 0x20000, 0x1ff000,
                          top - 8, top - 4, top - 1, top, top + 8, top + 4096, top + (2 << 20),
                          1UL << 40, (1UL << 47) - 8, 0xffff800000000000UL, ~0UL, ~0UL - 7};
    return PICK(v);
}
/* Any pointer: hostile, or somewhere in the scratch area. */
static uint64_t ptr(void) {
    if (next() % 3) return hostile();
    return (uint64_t)scratch + (2 << 20) + (next() % (4 << 20));
}
/* Lengths: small, scratch-sized, huge. Huge ones reach past guest memory. */
static uint64_t len(void) {
    const uint64_t v[] = {0, 1, 7, 8, 16, 144, 256, 4096, 65536, 1 << 20, 0x7ffff000, 1UL << 31,
                          1UL << 40, 1UL << 62, ~0UL, (uint64_t)-4096};
    uint64_t l = PICK(v);
    return l;
}
/* A length safe to combine with a scratch pointer: at most 2 MiB, which stays in scratch. */
static uint64_t slen(uint64_t p, uint64_t l) {
    if (p >= (uint64_t)scratch && p < (uint64_t)scratch + SCRATCH && l > (1 << 20) && l < (1UL << 40)) return 1 << 20;
    return l;
}
static uint64_t fd(void) {
    const uint64_t v[] = {(uint64_t)-1, (uint64_t)-100, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1023, 1024, 1 << 30, AT_FDCWD};
    return PICK(v);
}
static uint64_t path(void) {
    static const char *names[] = {"fz", "fz/a", "fz/b", "fz/d", "fz/d/x", "/", ".", "..", "/fz/../../..", "",
                                  "/proc/self/exe", "/sys/devices/system/cpu/online", "fz/out"};
    if (next() % 4 == 0) return hostile();
    return (uint64_t)names[next() % (sizeof names / sizeof *names)];
}
static uint64_t num(void) {
    const uint64_t v[] = {0, 1, 2, 3, 4, 7, 0x40, 0x41, 0x42, 0x80, 0x100, 0x241, 0x800, 0x1000, 0x10000,
                          0x80000, 0x400000, 0x7fffffff, 0x80000000, ~0UL, (uint64_t)-2};
    return PICK(v);
}
static uint64_t ts_ptr(void) {
    switch (next() % 4) {
    case 0: return (uint64_t)&short_ts;
    case 1: return (uint64_t)&zero_ts;
    default: return hostile() | (next() % 2 ? 0 : 0); /* NULL included */
    }
}

static const long calls[] = {
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_open, SYS_openat,
    SYS_close, SYS_fstat, SYS_stat, SYS_lstat, SYS_newfstatat, SYS_statx, SYS_lseek, SYS_unlink,
    SYS_unlinkat, SYS_mkdir, SYS_mkdirat, SYS_rmdir, SYS_rename, SYS_renameat, SYS_renameat2,
    SYS_getdents64, SYS_readlink, SYS_readlinkat, SYS_access, SYS_faccessat, SYS_faccessat2,
    SYS_getcwd, SYS_chdir, SYS_fchdir, SYS_ioctl, SYS_fcntl, SYS_dup, SYS_dup2, SYS_dup3, SYS_pipe,
    SYS_pipe2, SYS_ftruncate, SYS_fsync, SYS_umask, SYS_poll, SYS_ppoll, SYS_mmap, SYS_munmap,
    SYS_mprotect, SYS_mremap, SYS_madvise, SYS_brk, SYS_futex, SYS_set_tid_address,
    SYS_set_robust_list, SYS_get_robust_list, SYS_gettid, SYS_sched_getaffinity,
    SYS_sched_setaffinity, SYS_sched_yield, SYS_getcpu, SYS_arch_prctl, SYS_getpid, SYS_getppid,
    SYS_getuid, SYS_prlimit64, SYS_getrlimit, SYS_getrandom, SYS_uname, SYS_sysinfo,
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_sigaltstack, SYS_getrusage, SYS_times,
    SYS_clock_gettime, SYS_clock_getres, SYS_gettimeofday, SYS_time, SYS_nanosleep,
    SYS_clock_nanosleep, SYS_rseq, SYS_fork, SYS_execve, 1000, 335,
};

int main(int argc, char **argv) {
    rng = argc > 1 ? strtoull(argv[1], 0, 0) * 0x9e3779b97f4a7c15ULL + 1 : 42;
    long iters = argc > 2 ? atol(argv[2]) : 3000;
    int trace = argc > 3; /* argv[3]: print every call before making it (debugging) */
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    top = ((uintptr_t)execfn + strlen(execfn) + 1 + 8 + 4095) & ~(uintptr_t)4095;
    scratch = mmap(NULL, SCRATCH, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    fword = (uint32_t *)(scratch + 4096);
    *fword = 12345;
    mkdir("fz", 0755);
    mkdir("fz/d", 0755);
    int report = fcntl(1, F_DUPFD, 200);
    int out = open("fz/out", O_CREAT | O_RDWR | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(out, 2);
    close(out);
    long done = 0, errors = 0;
    for (long i = 0; i < iters; i++) {
        long nr = calls[next() % (sizeof calls / sizeof *calls)];
        uint64_t a[6];
        for (int k = 0; k < 6; k++) a[k] = next() % 2 ? ptr() : num();
        switch (nr) {
        case SYS_read: case SYS_write: case SYS_pread64: case SYS_pwrite64: case SYS_getdents64:
            a[0] = fd(); a[1] = ptr(); a[2] = slen(a[1], len()); a[3] = num(); break;
        case SYS_readv: case SYS_writev:
            for (int k = 0; k < 4; k++) { iov[k].iov_base = (void *)ptr(); iov[k].iov_len = slen((uint64_t)iov[k].iov_base, len()) >> (next() % 2 ? 4 : 0); }
            a[0] = fd(); a[1] = next() % 3 ? (uint64_t)iov : hostile(); a[2] = next() % 5; break;
        case SYS_open: a[0] = path(); a[1] = num(); a[2] = 0644; break;
        case SYS_openat: a[0] = fd(); a[1] = path(); a[2] = num(); a[3] = 0644; break;
        case SYS_close: a[0] = fd(); break;
        case SYS_fstat: a[0] = fd(); a[1] = ptr(); break;
        case SYS_stat: case SYS_lstat: a[0] = path(); a[1] = ptr(); break;
        case SYS_newfstatat: a[0] = fd(); a[1] = path(); a[2] = ptr(); a[3] = num(); break;
        case SYS_statx: a[0] = fd(); a[1] = path(); a[2] = num(); a[3] = num(); a[4] = ptr(); break;
        case SYS_lseek: a[0] = fd(); a[1] = num(); a[2] = next() % 5; break;
        case SYS_unlink: case SYS_rmdir: case SYS_chdir: a[0] = path(); break;
        case SYS_unlinkat: case SYS_mkdirat: a[0] = fd(); a[1] = path(); a[2] = num(); break;
        case SYS_mkdir: a[0] = path(); a[1] = num(); break;
        case SYS_rename: a[0] = path(); a[1] = path(); break;
        case SYS_renameat: case SYS_renameat2: a[0] = fd(); a[1] = path(); a[2] = fd(); a[3] = path(); a[4] = next() % 8; break;
        case SYS_readlink: a[0] = path(); a[1] = ptr(); a[2] = slen(a[1], len()); break;
        case SYS_readlinkat: a[0] = fd(); a[1] = path(); a[2] = ptr(); a[3] = slen(a[2], len()); break;
        case SYS_access: a[0] = path(); a[1] = next() % 9; break;
        case SYS_faccessat: case SYS_faccessat2: a[0] = fd(); a[1] = path(); a[2] = next() % 9; a[3] = num(); break;
        case SYS_getcwd: a[0] = ptr(); a[1] = slen(a[0], len()); break;
        case SYS_fchdir: case SYS_dup: case SYS_fsync: a[0] = fd(); break;
        case SYS_ioctl: a[0] = fd(); a[1] = 0x5401 + next() % 16; a[2] = ptr(); break;
        case SYS_fcntl: a[0] = fd(); a[1] = next() % 40; a[2] = next() % 2 ? ptr() : num();
            if (a[1] == F_SETFL) a[2] |= O_NONBLOCK;
            break;
        case SYS_dup2: case SYS_dup3: a[0] = fd(); a[1] = fd(); a[2] = num(); break;
        case SYS_pipe: nr = SYS_pipe2; a[0] = ptr(); a[1] = O_NONBLOCK; break; /* an empty blocking pipe would hang */
        case SYS_pipe2: a[0] = ptr(); a[1] = num() | O_NONBLOCK; break;
        case SYS_ftruncate: a[0] = fd(); a[1] = next() % 2 ? len() : num(); break;
        case SYS_poll: a[0] = next() % 2 ? ptr() : (uint64_t)iov; a[1] = next() % 4; a[2] = 0; break;
        case SYS_ppoll: a[0] = next() % 2 ? ptr() : (uint64_t)iov; a[1] = next() % 4; a[2] = next() % 2 ? (uint64_t)&zero_ts : hostile() | 1; a[3] = 0; break;
        case SYS_mmap: a[0] = ptr(); a[1] = len(); a[2] = next() % 8; a[3] = num() & ~(uint64_t)MAP_FIXED; a[4] = fd(); a[5] = num() & ~4095UL; break;
        case SYS_munmap: case SYS_mprotect: case SYS_madvise:
            a[0] = hostile(); a[1] = (a[0] < 0x200000 || a[0] >= top) ? len() : 4096; a[2] = next() % 8;
            if (nr == SYS_munmap && a[0] < 0x200000 && a[0] + a[1] > 0x200000) a[1] = 4096;
            if (nr == SYS_madvise && a[0] < top && a[0] + a[1] > 0x200000) a[1] = 4096;
            break;
        case SYS_mremap: a[0] = hostile(); a[1] = len(); a[2] = len(); a[3] = next() % 4; a[4] = ptr() & ~4095UL;
            if (a[3] & MREMAP_FIXED) a[4] = hostile() & ~4095UL;
            break;
        case SYS_brk: a[0] = hostile(); break;
        case SYS_futex: {
            const uint64_t ops[] = {FUTEX_WAIT, FUTEX_WAKE, FUTEX_REQUEUE, FUTEX_CMP_REQUEUE, FUTEX_WAKE_OP,
                                    FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET, 6, 7, 11, 13};
            a[1] = PICK(ops) | (next() % 2 ? FUTEX_PRIVATE_FLAG : 0) | (next() % 4 ? 0 : FUTEX_CLOCK_REALTIME);
            a[0] = next() % 2 ? (uint64_t)fword + (next() % 4 ? 0 : 1 + next() % 3) : hostile();
            a[2] = *fword + 1 + next() % 5; /* never the current value: waits return at once */
            a[3] = next() % 2 ? ts_ptr() : num();
            a[4] = next() % 2 ? (uint64_t)fword : hostile();
            a[5] = next() % 2 ? num() : *fword;
            if ((a[1] & 0x7f) == FUTEX_WAIT || (a[1] & 0x7f) == FUTEX_WAIT_BITSET) a[3] = ts_ptr();
            break;
        }
        case SYS_set_tid_address: a[0] = hostile(); break;
        case SYS_set_robust_list: a[0] = hostile(); a[1] = next() % 2 ? 24 : num(); break;
        case SYS_get_robust_list: a[0] = next() % 2 ? 0 : num(); a[1] = ptr(); a[2] = ptr(); break;
        case SYS_sched_getaffinity: case SYS_sched_setaffinity: a[0] = next() % 2 ? 0 : num(); a[1] = next() % 2 ? 128 : len(); a[2] = ptr(); break;
        case SYS_arch_prctl: {
            const uint64_t codes[] = {0x1001, 0x1003, 0x1004, 0x1011, 0x3001, 0};
            a[0] = PICK(codes); a[1] = ptr(); break;
        }
        case SYS_prlimit64: a[0] = next() % 2 ? 0 : num(); a[1] = next() % 20; a[2] = next() % 3 ? 0 : ptr(); a[3] = ptr();
            if (a[1] == RLIMIT_NOFILE || a[1] == RLIMIT_STACK) a[2] = 0;
            break;
        case SYS_getrlimit: a[0] = next() % 20; a[1] = ptr(); break;
        case SYS_getrandom: a[0] = ptr(); a[1] = slen(a[0], len()); a[2] = num() & 3; break;
        case SYS_rt_sigaction: a[0] = next() % 70; a[1] = ptr(); a[2] = ptr(); a[3] = next() % 2 ? 8 : num(); break;
        case SYS_rt_sigprocmask: a[0] = next() % 4; a[1] = ptr(); a[2] = ptr(); a[3] = next() % 2 ? 8 : num(); break;
        case SYS_nanosleep: a[0] = ts_ptr(); a[1] = ptr(); break;
        case SYS_clock_nanosleep: a[0] = next() % 12; a[1] = next() % 2; a[2] = ts_ptr(); a[3] = ptr(); break;
        case SYS_clock_gettime: case SYS_clock_getres: a[0] = next() % 2 ? next() % 12 : num(); a[1] = ptr(); break;
        default: break;
        }
        if (trace) dprintf(report, "%ld: %ld(%#lx, %#lx, %#lx, %#lx, %#lx, %#lx)\n", i, nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        done++;
        if (r == -1) errors++;
        /* keep the working directory inside the fuzz dir tree or at the root */
        if (nr == SYS_chdir || nr == SYS_fchdir) chdir("/");
    }
    *fword = 0;
    dprintf(report, "fuzz: %ld calls, %ld errors\n", done, errors);
    dprintf(report, "fuzz done\n");
    return 0;
}
