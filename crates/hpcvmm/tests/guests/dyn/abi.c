/* The rest of the Linux ABI real programs call (issue 11): file systems, accounting,
 * limits, eventfd/epoll/select, prctl, personality, scheduler queries, groups, memfd,
 * sendfile, copy_file_range, fadvise, fallocate, flock, modes, owners, links, times, mincore.
 * Prints only what is the same natively and in the VM. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysinfo.h>
#include <unistd.h>

int main(void) {
    struct statfs sf;
    int r0 = statfs(".", &sf);
    printf("statfs=%d bsize>0=%d\n", r0, sf.f_bsize > 0);
    int fd = open("f.txt", O_CREAT | O_RDWR | O_TRUNC, 0644);
    if (write(fd, "0123456789", 10) != 10)
        return 10;
    printf("fstatfs=%d\n", fstatfs(fd, &sf));
    struct sysinfo si;
    r0 = sysinfo(&si);
    printf("sysinfo=%d ram>0=%d unit>0=%d\n", r0, si.totalram > 0, si.mem_unit > 0);
    struct rusage ru;
    int ru1 = getrusage(RUSAGE_THREAD, &ru);
    int ru2 = getrusage(RUSAGE_SELF, &ru);
    printf("rusage thread=%d self=%d\n", ru1, ru2);
    struct rlimit rl = {256, 512};
    printf("setrlimit=%d", setrlimit(RLIMIT_NOFILE, &rl));
    getrlimit(RLIMIT_NOFILE, &rl);
    printf(" nofile=%lu/%lu\n", (unsigned long)rl.rlim_cur, (unsigned long)rl.rlim_max);

    int e = eventfd(2, EFD_CLOEXEC);
    eventfd_write(e, 3);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 42};
    int ctl = epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev);
    struct epoll_event out[2];
    int n = epoll_wait(ep, out, 2, 1000);
    eventfd_t v = 0;
    eventfd_read(e, &v);
    int after = epoll_wait(ep, out + 1, 1, 0);
    printf("epoll ctl=%d n=%d data=%lu value=%lu after=%d\n", ctl, n, (unsigned long)out[0].data.u64,
           (unsigned long)v, after);

    int p[2];
    if (pipe(p))
        return 11;
    fd_set r;
    FD_ZERO(&r);
    FD_SET(p[0], &r);
    struct timeval tv = {0, 1000};
    printf("select empty=%d\n", select(p[0] + 1, &r, NULL, NULL, &tv));
    if (write(p[1], "x", 1) != 1)
        return 12;
    FD_SET(p[0], &r);
    int s = select(p[0] + 1, &r, NULL, NULL, NULL);
    printf("select ready=%d isset=%d\n", s, FD_ISSET(p[0], &r) != 0);
    struct timespec zero = {0, 0};
    FD_SET(p[0], &r);
    printf("pselect=%d\n", pselect(p[0] + 1, &r, NULL, NULL, &zero, NULL));

    prctl(PR_SET_NAME, "dyn-worker-with-long-name");
    char nm[16] = {0};
    prctl(PR_GET_NAME, nm);
    int pd = prctl(PR_SET_PDEATHSIG, SIGTERM);
    int pdv = 0;
    prctl(PR_GET_PDEATHSIG, &pdv);
    printf("name=%s pdeathsig=%d %d\n", nm, pd, pdv);
    printf("personality=%#x\n", personality(0xffffffff));
    struct sched_param sp = {.sched_priority = 7};
    int pol = sched_getscheduler(0);
    sched_getparam(0, &sp);
    printf("sched=%d prio=%d\n", pol, sp.sched_priority);
    printf("groups>=0=%d\n", getgroups(0, NULL) >= 0);

    int m = memfd_create("scratch", MFD_CLOEXEC);
    off_t off = 2;
    ssize_t sent = sendfile(m, fd, &off, 5);
    printf("sendfile=%zd off=%ld\n", sent, (long)off);
    char buf[16] = {0};
    if (pread(m, buf, 5, 0) != 5)
        return 13;
    printf("memfd=%s\n", buf);
    int c = open("g.txt", O_CREAT | O_RDWR | O_TRUNC, 0600);
    loff_t oi = 0;
    printf("copy_file_range=%zd\n", copy_file_range(fd, &oi, c, NULL, 10, 0));
    int adv = posix_fadvise(c, 0, 0, POSIX_FADV_SEQUENTIAL);
    int fal = fallocate(c, 0, 0, 4096);
    printf("fadvise=%d fallocate=%d\n", adv, fal);
    struct stat st;
    fstat(c, &st);
    int lk = flock(c, LOCK_EX | LOCK_NB);
    printf("size=%ld flock=%d\n", (long)st.st_size, lk);
    int m1 = fchmod(c, 0640);
    int m2 = fchmodat(AT_FDCWD, "g.txt", 0604, 0);
    int own = fchown(c, (uid_t)-1, (gid_t)-1);
    stat("g.txt", &st);
    printf("fchmod=%d fchmodat=%d mode=%o fchown=%d\n", m1, m2, st.st_mode & 0777, own);
    int sl = symlink("g.txt", "s.lnk");
    int hl = link("g.txt", "h.txt");
    stat("h.txt", &st);
    char target[64] = {0};
    ssize_t rl2 = readlink("s.lnk", target, 63);
    printf("symlink=%d link=%d nlink=%lu readlink=%zd %s\n", sl, hl, (unsigned long)st.st_nlink, rl2,
           target);
    struct timespec ts[2] = {{100, 0}, {200, 0}};
    int ut = utimensat(AT_FDCWD, "s.lnk", ts, 0);
    stat("g.txt", &st);
    printf("utimensat=%d mtime=%ld\n", ut, (long)st.st_mtime);
    unsigned char vec[4] = {0};
    char *a = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 1, 4 * 4096);
    int mc = mincore(a, 4 * 4096, vec);
    printf("mincore=%d resident=%d\n", mc, vec[0] & vec[3] & 1);
    unlink("s.lnk");
    unlink("h.txt");
    unlink("g.txt");
    unlink("f.txt");
    return 0;
}
