/* Edge cases of the file system calls, compared with Linux: errors, trailing slashes,
 * descriptors that outlive a rename, flags, vectors, limits. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#define CHECK(what, expr) do { errno = 0; long _r = (long)(expr); \
    printf("%-36s %ld%s%s\n", what, _r, _r < 0 ? " " : "", _r < 0 ? strerrorname_np(errno) : ""); } while (0)

static void put(const char *p, const char *s) {
    int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    write(fd, s, strlen(s));
    close(fd);
}

int main(void) {
    struct stat st;
    char buf[256];
    put("f", "data\n");
    mkdir("d", 0755);
    /* trailing slashes on non-directories */
    CHECK("stat f/", stat("f/", &st));
    CHECK("lstat f/", lstat("f/", &st));
    CHECK("open f/", open("f/", O_RDONLY));
    CHECK("unlink f/", unlink("f/"));
    CHECK("rename f/ g", rename("f/", "g"));
    CHECK("rmdir f/", rmdir("f/"));
    CHECK("stat f (still there)", stat("f", &st));
    CHECK("stat d/", stat("d/", &st));
    CHECK("mkdir e/", mkdir("e/", 0755));
    CHECK("rmdir e/", rmdir("e/"));
    CHECK("unlink d/", unlink("d/"));
    CHECK("unlink d", unlink("d"));
    /* wrong kinds */
    int fd = open("f", O_RDONLY);
    CHECK("write on O_RDONLY", write(fd, "x", 1));
    CHECK("getdents on file", syscall(SYS_getdents64, fd, buf, sizeof buf));
    CHECK("openat relative to a file fd", openat(fd, "x", O_RDONLY));
    CHECK("fchdir to a file fd", fchdir(fd));
    CHECK("lseek negative", lseek(fd, -10, SEEK_SET));
    CHECK("pread past eof", pread(fd, buf, 10, 1000));
    close(fd);
    int dfd = open("d", O_RDONLY | O_DIRECTORY);
    CHECK("read on a directory", read(dfd, buf, 10));
    CHECK("open dir O_WRONLY", open("d", O_WRONLY));
    CHECK("open file O_DIRECTORY", open("f", O_RDONLY | O_DIRECTORY));
    CHECK("chdir to a file", chdir("f"));
    CHECK("readlink on a file", readlink("f", buf, sizeof buf));
    CHECK("stat empty path", stat("", &st));
    CHECK("fstatat AT_EMPTY_PATH", fstatat(dfd, "", &st, AT_EMPTY_PATH));
    printf("  is dir=%d\n", S_ISDIR(st.st_mode));
    CHECK("rmdir .", rmdir("d/."));
    CHECK("mkdir existing", mkdir("d", 0755));
    CHECK("renameat2 NOREPLACE onto existing", renameat2(AT_FDCWD, "f", AT_FDCWD, "d", RENAME_NOREPLACE));
    CHECK("rename file over dir", rename("f", "d"));
    /* a directory fd keeps pointing at its directory after a rename */
    CHECK("rename d -> d2", rename("d", "d2"));
    CHECK("mkdir d (a new one)", mkdir("d", 0755));
    int xf = openat(dfd, "inside", O_CREAT | O_WRONLY, 0644);
    CHECK("openat(dfd, inside) after rename", xf >= 0 ? 0 : -1);
    if (xf >= 0) close(xf);
    CHECK("stat d2/inside", stat("d2/inside", &st));
    CHECK("stat d/inside", stat("d/inside", &st));
    CHECK("fchdir dfd", fchdir(dfd));
    CHECK("open inside (cwd = d2)", open("inside", O_RDONLY) >= 0 ? 0 : -1);
    char *cwd = getcwd(buf, sizeof buf);
    printf("  cwd ends in /d2=%d\n", cwd && strlen(cwd) >= 3 && !strcmp(cwd + strlen(cwd) - 3, "/d2"));
    /* the cwd follows its directory too */
    CHECK("rename ../d2 -> ../d3 from inside", rename("../d2", "../d3"));
    CHECK("open inside (cwd renamed)", open("inside", O_RDONLY) >= 0 ? 0 : -1);
    cwd = getcwd(buf, sizeof buf);
    printf("  cwd ends in /d3=%d\n", cwd && strlen(cwd) >= 3 && !strcmp(cwd + strlen(cwd) - 3, "/d3"));
    CHECK("getcwd tiny buffer", getcwd(buf, 2) ? 0 : -1);
    CHECK("chdir ..", chdir(".."));
    close(dfd);
    /* descriptors and flags */
    fd = open("f", O_RDWR | O_APPEND | O_CLOEXEC);
    CHECK("F_GETFD cloexec", fcntl(fd, F_GETFD));
    CHECK("F_GETFL accmode+append", fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND));
    int d2 = fcntl(fd, F_DUPFD, 10);
    CHECK("F_DUPFD >= 10", d2 >= 10);
    CHECK("dup keeps no cloexec", fcntl(d2, F_GETFD));
    CHECK("dup2 same fd", dup2(fd, fd));
    CHECK("dup3 same fd", dup3(fd, fd, 0));
    CHECK("dup3 bad flags", dup3(fd, 20, 12345));
    CHECK("dup2 onto 20", dup2(fd, 20));
    CHECK("close 20", close(20));
    CHECK("close d2", close(d2));
    struct iovec iov[3] = {{"ab", 2}, {"", 0}, {"cd\n", 3}};
    CHECK("writev", writev(fd, iov, 3));
    char x[4] = {0}, y[16] = {0};
    struct iovec rv[2] = {{x, 3}, {y, 15}};
    lseek(fd, 0, SEEK_SET);
    CHECK("readv", readv(fd, rv, 2));
    printf("  readv got [%s][%s]\n", x, y);
    CHECK("fstat size", fstat(fd, &st) == 0 ? st.st_size : -1);
    CHECK("ftruncate grow", ftruncate(fd, 100));
    CHECK("size after grow", fstat(fd, &st) == 0 ? st.st_size : -1);
    CHECK("ftruncate negative", ftruncate(fd, -1));
    close(fd);
    int p[2];
    CHECK("pipe2 cloexec", pipe2(p, O_CLOEXEC));
    CHECK("pipe read end cloexec", fcntl(p[0], F_GETFD));
    write(p[1], "z", 1);
    struct pollfd pf[2] = {{p[0], POLLIN, 0}, {-1, POLLIN, 0}};
    CHECK("poll ready", poll(pf, 2, 1000));
    printf("  revents=%d %d\n", pf[0].revents, pf[1].revents);
    struct pollfd bad = {555, POLLIN, 0};
    CHECK("poll bad fd", poll(&bad, 1, 0));
    printf("  revents=%d\n", bad.revents);
    close(p[0]);
    close(p[1]);
    CHECK("pipe2 bad flags", pipe2(p, 0x12345678));
    /* limits, signals, identity */
    struct rlimit rl;
    CHECK("getrlimit NOFILE", getrlimit(RLIMIT_NOFILE, &rl));
    CHECK("getrlimit bad", getrlimit(1000, &rl));
    rl.rlim_cur = 64;
    CHECK("setrlimit NOFILE cur=64", setrlimit(RLIMIT_NOFILE, &rl));
    CHECK("getrlimit NOFILE cur", getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (long)rl.rlim_cur : -1);
    rl.rlim_cur = rl.rlim_max + 1;
    CHECK("setrlimit cur > max", setrlimit(RLIMIT_NOFILE, &rl));
    struct sigaction sa = {0}, old;
    sa.sa_handler = SIG_IGN;
    CHECK("sigaction USR1 ign", sigaction(SIGUSR1, &sa, NULL));
    CHECK("sigaction read back", sigaction(SIGUSR1, NULL, &old) == 0 ? (long)(old.sa_handler == SIG_IGN) : -1);
    CHECK("sigaction KILL", sigaction(SIGKILL, &sa, NULL));
    CHECK("raise ignored USR1", raise(SIGUSR1));
    sigset_t s, o;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    CHECK("sigprocmask block", sigprocmask(SIG_BLOCK, &s, NULL));
    CHECK("sigprocmask read", sigprocmask(SIG_BLOCK, NULL, &o) == 0 ? sigismember(&o, SIGUSR2) : -1);
    CHECK("sigprocmask bad how", sigprocmask(99, &s, NULL));
    struct utsname u;
    uname(&u);
    printf("  uname sysname=%s machine=%s\n", u.sysname, u.machine);
    CHECK("gettid == getpid in main", gettid() == getpid());
    CHECK("kill other pid", kill(getpid() + 12345, 0));
    cpu_set_t cs;
    CHECK("sched_getaffinity", sched_getaffinity(0, sizeof cs, &cs) == 0 ? CPU_COUNT(&cs) > 0 : -1);
    CHECK("umask", umask(077));
    put("private", "p");
    CHECK("created with umask 077", stat("private", &st) == 0 ? (long)(st.st_mode & 0777) : -1);
    CHECK("unlink private", unlink("private"));
    CHECK("unlink f", unlink("f"));
    CHECK("unlink d3/inside", unlink("d3/inside"));
    CHECK("rmdir d3", rmdir("d3"));
    CHECK("rmdir d", rmdir("d"));
    return 0;
}
