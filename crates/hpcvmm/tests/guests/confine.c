/* Tries to reach files outside the guest root. argv[1] = host path of the secret file,
 * argv[2] = host path of the directory holding it. Prints what each attempt got. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void try_open(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("open %s: %s\n", path, strerrorname_np(errno)); return; }
    char buf[128] = {0};
    long n = read(fd, buf, sizeof buf - 1);
    close(fd);
    while (n > 0 && buf[n - 1] == '\n') buf[--n] = 0;
    printf("open %s: read \"%s\"\n", path, buf);
}

static void try_stat(const char *path) {
    struct stat st;
    int r = stat(path, &st);
    printf("stat %s: %s\n", path, r ? strerrorname_np(errno) : "exists");
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *secret = argv[1], *outside = argv[2];
    char p[512];
    try_open("inside.txt");
    try_open("/inside.txt");
    try_open(secret);
    try_open("../outside/secret.txt");
    try_open("/../outside/secret.txt");
    try_open("../../../../../../../../../../etc/hostname");
    try_open("abs_link");
    try_open("rel_link");
    try_open("dir_link/secret.txt");
    try_open("deep/rel_up/secret.txt");
    try_open("loop_link");
    snprintf(p, sizeof p, "/proc/self/root%s", secret);
    try_open(p);
    snprintf(p, sizeof p, "/proc/1/root%s", secret);
    try_open(p);
    try_open("/proc/self/cwd/../outside/secret.txt");
    try_open("/etc/passwd_link");
    try_stat(outside);
    try_stat("dir_link");
    try_stat("../outside");
    /* cwd can't go above the root */
    printf("chdir ..: %d\n", chdir(".."));
    printf("chdir ../../..: %d\n", chdir("../../.."));
    char cwd[256];
    printf("getcwd: %s\n", getcwd(cwd, sizeof cwd) ? cwd : strerrorname_np(errno));
    try_open("inside.txt");
    printf("chdir dir_link: %d %s\n", chdir("dir_link"), strerrorname_np(errno));
    printf("getcwd: %s\n", getcwd(cwd, sizeof cwd) ? cwd : strerrorname_np(errno));
    chdir("/");
    /* directory fds and *at calls */
    int d = open("deep", O_RDONLY | O_DIRECTORY);
    int fd = openat(d, "../../outside/secret.txt", O_RDONLY);
    printf("openat deep ../../outside: %s\n", fd < 0 ? strerrorname_np(errno) : "OPENED");
    if (fd >= 0) close(fd);
    fd = openat(d, secret, O_RDONLY);
    printf("openat deep abs secret: %s\n", fd < 0 ? strerrorname_np(errno) : "OPENED");
    close(d);
    /* modifications must stay inside */
    printf("unlink ../outside/secret.txt: %d %s\n", unlink("../outside/secret.txt"), strerrorname_np(errno));
    printf("unlink abs secret: %d %s\n", unlink(secret), strerrorname_np(errno));
    printf("unlink dir_link/secret.txt: %d %s\n", unlink("dir_link/secret.txt"), strerrorname_np(errno));
    snprintf(p, sizeof p, "%s/escaped_dir", outside);
    printf("mkdir outside: %d %s\n", mkdir(p, 0755), strerrorname_np(errno));
    printf("mkdir dir_link/x: %d %s\n", mkdir("dir_link/x", 0755), strerrorname_np(errno));
    printf("rename into outside: %d %s\n", rename("victim.txt", "../outside/moved.txt"), strerrorname_np(errno));
    printf("rename via dir_link: %d %s\n", rename("victim.txt", "dir_link/moved.txt"), strerrorname_np(errno));
    fd = open("dir_link/created.txt", O_CREAT | O_WRONLY, 0644);
    printf("create via dir_link: %s\n", fd < 0 ? strerrorname_np(errno) : "CREATED");
    fd = open("abs_link", O_WRONLY | O_TRUNC);
    printf("truncate via abs_link: %s\n", fd < 0 ? strerrorname_np(errno) : "OPENED");
    char lnk[256] = {0};
    long n = readlink("abs_link", lnk, sizeof lnk - 1);
    printf("readlink abs_link: %ld %s\n", n, n > 0 ? "text" : strerrorname_np(errno));
    fd = open("/new_at_root.txt", O_CREAT | O_WRONLY, 0644);
    printf("create /new_at_root.txt: %s\n", fd < 0 ? strerrorname_np(errno) : "CREATED");
    return 0;
}
