// Prints what the guest's own /proc says about it, one "key: value" line each.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/auxv.h>
#include <unistd.h>

static char buf[65536];

static long slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    long n = 0, k;
    while ((k = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += k;
    close(fd);
    buf[n] = 0;
    return n;
}

static void field(const char *path, const char *key) {
    if (slurp(path) < 0) { printf("%s: none\n", key); return; }
    char *p = strstr(buf, key);
    if (!p) { printf("%s: none\n", key); return; }
    p += strlen(key) + 1;
    while (*p == ' ' || *p == '\t') p++;
    char *e = strchr(p, '\n');
    if (e) *e = 0;
    printf("%s: %s\n", key, p);
}

int main(int argc, char **argv) {
    long n = slurp("/proc/self/cmdline");
    for (long i = 0; i < n - 1; i++) if (!buf[i]) buf[i] = ' ';
    printf("cmdline: %s\n", n > 0 ? buf : "none");
    n = slurp("/proc/self/environ");
    for (long i = 0; i < n - 1; i++) if (!buf[i]) buf[i] = ' ';
    printf("environ: %s\n", n > 0 ? buf : "none");
    n = slurp("/proc/self/auxv");
    unsigned long pagesz = 0;
    for (long i = 0; i + 16 <= n; i += 16) {
        unsigned long t, v;
        memcpy(&t, buf + i, 8);
        memcpy(&v, buf + i + 8, 8);
        if (t == AT_PAGESZ) pagesz = v;
    }
    printf("auxv-pagesz: %lu (getauxval %lu)\n", pagesz, getauxval(AT_PAGESZ));
    field("/proc/self/status", "Name:");
    field("/proc/self/status", "Pid:");
    field("/proc/thread-self/status", "Threads:");
    field("/proc/self/status", "NoNewPrivs:");
    n = slurp("/proc/self/maps");
    printf("maps-stack: %s\n", n > 0 && strstr(buf, "[stack]") ? "yes" : "no");
    printf("maps-program: %s\n", n > 0 && argc > 1 && strstr(buf, argv[1]) ? "yes" : "no");
    n = slurp("/proc/self/stat");
    char comm[64] = "";
    int pid = 0;
    sscanf(buf, "%d %63s", &pid, comm);
    printf("stat: %d %s\n", pid, comm);
    n = slurp("/proc/self/cgroup");
    printf("cgroup: %s", n > 0 ? buf : "none\n");
    char link[512];
    ssize_t k = readlink("/proc/self", link, sizeof link - 1);
    link[k > 0 ? k : 0] = 0;
    printf("self-link: %s\n", link);
    int fd = open("/proc/self/cmdline", O_RDONLY);
    snprintf(buf, 64, "/proc/self/fd/%d", fd);
    k = readlink(buf, link, sizeof link - 1);
    link[k > 0 ? k : 0] = 0;
    printf("fd-link: %s\n", link);
    printf("fd-write: %s\n", open("/proc/self/status", O_WRONLY) < 0 ? "refused" : "OPEN");
    // listing the guest's own directories
    DIR *d = opendir("/proc/self/fd");
    int fds = 0, dots = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') dots++;
        else fds++;
    }
    printf("fd-dir: %d entries, %d dots, %s\n", fds, dots, d ? "opened" : "refused");
    if (d) {
        rewinddir(d);
        int again = 0;
        while ((e = readdir(d))) again++;
        printf("fd-dir-rewound: %d\n", again);
        closedir(d);
    }
    d = opendir("/proc/self");
    int has_status = 0, has_mem = 0;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, "status")) has_status = 1;
        if (!strcmp(e->d_name, "mem")) has_mem = 1;
    }
    if (d) closedir(d);
    printf("self-dir: status %d mem %d\n", has_status, has_mem);
    d = opendir("/proc/self/task");
    int tasks = 0;
    while (d && (e = readdir(d))) if (e->d_name[0] != '.') tasks++;
    if (d) closedir(d);
    printf("task-dir: %d\n", tasks);
    field("/proc/meminfo", "MemTotal:");
    n = slurp("/sys/devices/system/cpu/possible");
    printf("cpu-possible: %s", n > 0 ? buf : "none\n");
    printf("nprocs: %ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    return 0;
}
