/* Hostile pointers and lengths in raw system calls. Lines starting "P " must match Linux;
 * lines starting "V " depend on the memory layout (a pointer crossing the top of the stack,
 * which in the VM is the end of guest memory) and must say EFAULT in the VM. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static void show(const char *kind, const char *what, long r) {
    if (r < 0)
        printf("%s %-34s -1 %s\n", kind, what, strerrorname_np(errno));
    else
        printf("%s %-34s %ld\n", kind, what, r);
    fflush(stdout);
}
#define P(what, call) do { errno = 0; show("P", what, (long)(call)); } while (0)
#define V(what, call) do { errno = 0; show("V", what, (long)(call)); } while (0)

int main(void) {
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    uintptr_t end = ((uintptr_t)execfn + strlen(execfn) + 1 + 8 + 4095) & ~(uintptr_t)4095;
    char *top = (char *)end;
    uintptr_t kernel = 0xffff800000000000UL;
    char ok[64] = "0123456789abcdef";
    int p[2];
    pipe(p);

    P("write NULL", syscall(SYS_write, 1, NULL, 10));
    P("write kernel ptr", syscall(SYS_write, 1, kernel, 10));
    P("write -1 ptr", syscall(SYS_write, 1, (void *)-1L, 10));
    P("write low page 0x1000", syscall(SYS_write, p[1], (void *)0x1000, 10));
    P("write low page 0x4000", syscall(SYS_write, p[1], (void *)0x4000, 10));
    P("write 1 TiB", syscall(SYS_write, p[1], (void *)(1UL << 40), 10));
    P("write fd -1", syscall(SYS_write, -1, ok, 10));
    P("write fd 1<<30", syscall(SYS_write, 1 << 30, ok, 10));
    P("write len 0 NULL", syscall(SYS_write, 1, NULL, 0));
    P("write to pipe", syscall(SYS_write, p[1], ok, 16));
    P("read into NULL", syscall(SYS_read, p[0], NULL, 16));
    P("read into kernel", syscall(SYS_read, p[0], kernel, 16));
    P("read fd -100", syscall(SYS_read, -100, ok, 16));
    V("write crossing end", syscall(SYS_write, p[1], top - 8, 16));
    V("write huge len", syscall(SYS_write, p[1], ok, 1UL << 62));
    V("read crossing end", syscall(SYS_read, p[0], top - 8, 16));
    V("read huge len", syscall(SYS_read, p[0], ok, 1UL << 62));
    V("pread crossing end", syscall(SYS_pread64, p[0], top - 4, 16, 0));
    V("getrandom crossing end", syscall(SYS_getrandom, top - 8, 16, 0));
    /* whole structs written by the kernel: all or EFAULT, on Linux too */
    struct iovec iov = {NULL, 10};
    P("writev NULL iov_base", syscall(SYS_writev, 1, &iov, 1));
    P("writev iov ptr NULL", syscall(SYS_writev, 1, NULL, 1));
    P("writev iovcnt -1", syscall(SYS_writev, 1, &iov, -1));
    P("fstat NULL", syscall(SYS_fstat, 1, NULL));
    P("fstat crossing end", syscall(SYS_fstat, 1, top - 8));
    P("fstat fd -1", syscall(SYS_fstat, -1, ok));
    P("clock_gettime NULL", syscall(SYS_clock_gettime, CLOCK_MONOTONIC, NULL));
    P("clock_gettime crossing", syscall(SYS_clock_gettime, CLOCK_MONOTONIC, top - 8));
    P("clock_gettime bad clock", syscall(SYS_clock_gettime, 12345, ok));
    P("uname 0x1000", syscall(SYS_uname, (void *)0x1000));
    P("uname crossing end", syscall(SYS_uname, top - 100));
    P("gettimeofday kernel", syscall(SYS_gettimeofday, kernel, NULL));
    P("nanosleep NULL", syscall(SYS_nanosleep, NULL, NULL));
    struct timespec neg = {-1, 0};
    P("nanosleep negative", syscall(SYS_nanosleep, &neg, NULL));
    P("getcwd NULL", syscall(SYS_getcwd, NULL, 100));
    P("getcwd crossing end", syscall(SYS_getcwd, top - 1, 100));
    P("pipe2 NULL", syscall(SYS_pipe2, NULL, 0));
    P("pipe2 crossing end", syscall(SYS_pipe2, top - 4, 0));
    P("sysinfo crossing", syscall(SYS_sysinfo, top - 16));
    P("rt_sigaction crossing", syscall(SYS_rt_sigaction, 10, top - 8, NULL, 8));
    P("prlimit64 old crossing", syscall(SYS_prlimit64, 0, 7, NULL, top - 8));
    P("sched_getaffinity crossing", syscall(SYS_sched_getaffinity, 0, 128, top - 4));
    /* path arguments */
    P("open NULL", syscall(SYS_openat, AT_FDCWD, NULL, O_RDONLY));
    P("open kernel ptr", syscall(SYS_openat, AT_FDCWD, kernel, O_RDONLY));
    P("open bad dirfd", syscall(SYS_openat, 12345, "x", O_RDONLY));
    P("stat NULL path", syscall(SYS_newfstatat, AT_FDCWD, NULL, ok, 0));
    P("mkdir kernel ptr", syscall(SYS_mkdir, kernel, 0755));
    P("unlink 0x1000", syscall(SYS_unlink, (void *)0x1000));
    P("rename NULL", syscall(SYS_rename, NULL, "b"));
    P("chdir NULL", syscall(SYS_chdir, NULL));
    memset(top - 16, 'A', 16); /* a path string running off the end */
    P("open unterminated at end", syscall(SYS_openat, AT_FDCWD, top - 16, O_RDONLY));
    P("stat unterminated at end", syscall(SYS_newfstatat, AT_FDCWD, top - 16, ok, 0));
    /* futex */
    static uint32_t word = 7;
    struct timespec bad = {0, 2000000000L};
    struct timespec negt = {-5, 0};
    struct timespec far = {1L << 62, 0};
    P("futex wait unaligned", syscall(SYS_futex, (char *)&word + 1, FUTEX_WAIT_PRIVATE, 7, NULL));
    P("futex wake unaligned", syscall(SYS_futex, (char *)&word + 2, FUTEX_WAKE_PRIVATE, 1));
    P("futex wait NULL", syscall(SYS_futex, NULL, FUTEX_WAIT_PRIVATE, 0, NULL));
    P("futex wait kernel", syscall(SYS_futex, kernel, FUTEX_WAIT_PRIVATE, 0, NULL));
    P("futex wait 0x1000", syscall(SYS_futex, 0x1000, FUTEX_WAIT_PRIVATE, 0, NULL));
    P("futex wait at end", syscall(SYS_futex, top, FUTEX_WAIT_PRIVATE, 0, NULL));
    P("futex wait bad nsec", syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 7, &bad));
    P("futex wait negative", syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 7, &negt));
    P("futex wait timeout NULLish", syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 7, (void *)8));
    P("futex wait far, value differs", syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 8, &far));
    P("futex bad op", syscall(SYS_futex, &word, 99, 0));
    P("futex wake_bitset 0", syscall(SYS_futex, &word, FUTEX_WAKE_BITSET | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0));
    P("futex cmp_requeue unaligned", syscall(SYS_futex, &word, FUTEX_CMP_REQUEUE_PRIVATE, 1, 1, (char *)&word + 1, 7));
    P("futex wake_op on kernel", syscall(SYS_futex, &word, FUTEX_WAKE_OP_PRIVATE, 1, 1, kernel, 0));
    /* memory calls with absurd arguments */
    P("mmap huge", (long)syscall(SYS_mmap, NULL, 1UL << 62, 3, 0x22, -1, 0) < 0 ? -1 : 0);
    P("munmap unaligned", syscall(SYS_munmap, 1, 4096));
    char *pg = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    P("munmap len ~0", syscall(SYS_munmap, pg, ~0UL));
    P("munmap len 1<<62", syscall(SYS_munmap, pg, 1UL << 62));
    P("munmap len 0", syscall(SYS_munmap, pg, 0));
    P("madvise len ~0", syscall(SYS_madvise, pg, ~0UL, MADV_DONTNEED));
    P("madvise len 1<<62", syscall(SYS_madvise, pg, 1UL << 62, MADV_DONTNEED));
    P("mprotect len ~0", syscall(SYS_mprotect, pg, ~0UL, 3));
    P("mremap new_len ~0", syscall(SYS_mremap, pg, 4096, ~0UL, MREMAP_MAYMOVE) == -1 ? -1 : 0);
    P("mremap new_len 0", syscall(SYS_mremap, pg, 4096, 0, MREMAP_MAYMOVE) == -1 ? -1 : 0);
    P("mmap len ~0", syscall(SYS_mmap, NULL, ~0UL, 3, 0x22, -1, 0) == -1 ? -1 : 0);
    P("mmap fixed at kernel", syscall(SYS_mmap, 0xffff800000000000UL, 4096, 3, 0x32, -1, 0) == -1 ? -1 : 0);
    pg[0] = 1; /* still mapped after all that */
    P("munmap page", syscall(SYS_munmap, pg, 4096));
    P("mremap unaligned", syscall(SYS_mremap, 3, 4096, 8192, 0));
    P("madvise unaligned", syscall(SYS_madvise, 5, 4096, 4));
    P("mprotect unaligned", syscall(SYS_mprotect, 7, 4096, 3));
    P("brk to kernel", syscall(SYS_brk, kernel) == (long)sbrk(0) ? 0 : 1);
    P("close -1", syscall(SYS_close, -1));
    P("dup2 to -1", syscall(SYS_dup2, 1, -1));
    P("dup3 same fd", syscall(SYS_dup3, 1, 1, 0));
    P("fcntl bad fd", syscall(SYS_fcntl, -7, F_GETFD));
    P("ioctl bad fd", syscall(SYS_ioctl, -7, 0x5401, ok));
    P("lseek bad fd", syscall(SYS_lseek, 99, 0, 0));
    printf("survived\n");
    return 0;
}
