// Tries each way out of the jail and prints what it got, one "what: result" line each.
// argv[1]: the VMM's host pid; argv[2]: a file to create (the test checks its owner).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static void report(const char *what, int ok) {
    if (ok)
        printf("%s: OPEN\n", what);
    else
        printf("%s: %s\n", what, strerrorname_np(errno));
}

static void try_open(const char *what, const char *path, int flags) {
    int fd = open(path, flags);
    report(what, fd >= 0);
    if (fd >= 0) close(fd);
}

int main(int argc, char **argv) {
    const char *vmm = argc > 1 ? argv[1] : "1";
    char path[256], buf[8192], pidbuf[32];
    // "-": the VMM's host pid comes on stdin (the test sends it once it has looked at the
    // jailed VMM from outside).
    if (strcmp(vmm, "-") == 0) {
        ssize_t k = read(0, pidbuf, sizeof pidbuf - 1);
        pidbuf[k > 0 ? k : 0] = 0;
        pidbuf[strcspn(pidbuf, "\n")] = 0;
        vmm = pidbuf;
    }

    // /proc/self/mem: write and read
    int fd = open("/proc/self/mem", O_RDWR);
    report("self-mem-rw", fd >= 0);
    if (fd >= 0) close(fd);
    try_open("self-mem-ro", "/proc/self/mem", O_RDONLY);
    try_open("self-pagemap", "/proc/self/pagemap", O_RDONLY);
    try_open("self-syscall", "/proc/self/syscall", O_RDONLY);

    // /proc/self/maps names no host binary
    fd = open("/proc/self/maps", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = 0;
    printf("maps-read: %s\n", n > 0 ? "yes" : "no");
    printf("maps-host-binary: %s\n",
           strstr(buf, "dualstack") || strstr(buf, "libc.so") || (strstr(buf, "[vdso]") && strstr(buf, "ld-linux")) ? "yes" : "no");

    // /proc/self/status: the guest's user, no capability
    fd = open("/proc/self/status", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = 0;
    char *uid = strstr(buf, "Uid:");
    char *cap = strstr(buf, "CapEff:");
    if (uid) *strchr(uid, '\n') = 0;
    printf("status-uid: %s\n", uid ? uid + 5 : "none");
    if (cap) *strchr(cap, '\n') = 0;
    printf("status-capeff: %s\n", cap ? cap + 8 : "none");

    // the VMM's own pid
    snprintf(path, sizeof path, "/proc/%s/mem", vmm);
    try_open("vmm-mem", path, O_RDWR);
    snprintf(path, sizeof path, "/proc/%s/root/etc/hostname", vmm);
    try_open("vmm-root", path, O_RDONLY);
    snprintf(path, sizeof path, "/proc/%s/cwd", vmm);
    try_open("vmm-cwd", path, O_RDONLY | O_DIRECTORY);

    // devices and secrets
    try_open("dev-kvm", "/dev/kvm", O_RDWR);
    try_open("dev-mem", "/dev/mem", O_RDONLY);
    try_open("dev-port", "/dev/port", O_RDONLY);
    try_open("etc-shadow", "/etc/shadow", O_RDONLY);
    try_open("dev-null", "/dev/null", O_RDWR);
    try_open("dev-zero", "/dev/zero", O_RDONLY);
    try_open("dev-urandom", "/dev/urandom", O_RDONLY);

    // a VMM descriptor through /proc/self/fd (the guest has 0-2 only)
    int reopened = 0;
    for (int i = 3; i < 64; i++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", i);
        int f = open(path, O_RDWR);
        if (f >= 0) { reopened++; close(f); }
    }
    printf("vmm-fd-reopen: %d\n", reopened);
    // ... nor by number: the guest's fd table holds 0-2 only
    int direct = 0;
    for (int i = 3; i < 1024; i++) {
        struct stat st;
        if (fcntl(i, F_GETFD) >= 0 || fstat(i, &st) == 0 || lseek(i, 0, SEEK_CUR) >= 0) direct++;
    }
    printf("vmm-fd-direct: %d\n", direct);
    snprintf(path, sizeof path, "/dev/fd/%d", 5);
    try_open("dev-fd-5", path, O_RDWR);

    // ptrace / process_vm_writev of the VMM
    long r = ptrace(PTRACE_ATTACH, atoi(vmm), 0, 0);
    report("ptrace-attach", r == 0);
    struct iovec l = {buf, 8}, rv = {(void *)0x400000, 8};
    r = syscall(SYS_process_vm_writev, atoi(vmm), &l, 1, &rv, 1, 0);
    report("process-vm-writev", r >= 0);

    // a created file: the test checks its owner; re-opening it through /proc/self/fd works
    if (argc > 2) {
        int c = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        report("create", c >= 0);
        if (c >= 0) {
            write(c, "x\n", 2);
            snprintf(path, sizeof path, "/proc/self/fd/%d", c);
            try_open("self-fd-reopen", path, O_RDONLY);
            close(c);
        }
    }

    // what the guest's /proc and /sys say about the run
    n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("exe-link: %s\n", buf);
    fd = open("/proc/cpuinfo", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = 0;
    int procs = 0;
    for (char *p = buf; (p = strstr(p, "processor")); p++) procs++;
    printf("cpuinfo-processors: %d\n", procs);
    fd = open("/proc/meminfo", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = 0;
    long kb = 0;
    sscanf(buf, "MemTotal: %ld kB", &kb);
    printf("meminfo-total-kb: %ld\n", kb);
    fd = open("/sys/devices/system/cpu/online", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0) close(fd);
    buf[n > 0 ? n : 0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    printf("cpu-online: %s\n", buf);
    snprintf(path, sizeof path, "/dev/shm/dualstack-escape-%d", (int)getpid());
    int shm = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    report("dev-shm", shm >= 0);
    if (shm >= 0) { close(shm); unlink(path); }
    printf("escape done\n");
    return 0;
}
