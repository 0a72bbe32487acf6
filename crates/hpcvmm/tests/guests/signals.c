/* Signal delivery, one scenario per argv[1]; prints the same natively and in the HPC VM. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/times.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

static volatile sig_atomic_t hits;
static volatile sig_atomic_t last_code;
static volatile int last_pid_ok;
static sigjmp_buf jb;
static volatile uintptr_t fault_addr;
static volatile int fault_code;
static char *alt_lo, *alt_hi;
static volatile int on_alt;

static void count(int sig) { (void)sig; hits++; }

static void on_info(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    hits++;
    last_code = si->si_code;
    last_pid_ok = si->si_pid == getpid() && si->si_signo == sig && si->si_uid == getuid();
}

static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)uc;
    char here;
    on_alt = &here >= alt_lo && &here < alt_hi;
    fault_addr = (uintptr_t)si->si_addr;
    fault_code = si->si_code;
    siglongjmp(jb, 1);
}

static void install(int sig, void (*h)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL)) {
        perror("sigaction");
        exit(1);
    }
}

static void install_info(int sig, void (*h)(int, siginfo_t *, void *), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = h;
    sa.sa_flags = flags | SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL)) {
        perror("sigaction");
        exit(1);
    }
}

static int siginfo_case(void) {
    install_info(SIGUSR1, on_info, 0);
    kill(getpid(), SIGUSR1);
    printf("siginfo: hits=%d pid_ok=%d code_user=%d\n", hits, last_pid_ok, last_code == SI_USER);
    /* Blocked, then pending, then delivered on unblock; sigqueue carries a value. */
    sigset_t s, old;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigprocmask(SIG_BLOCK, &s, &old);
    raise(SIGUSR1);
    sigset_t p;
    sigpending(&p);
    printf("blocked: pending=%d hits=%d\n", sigismember(&p, SIGUSR1), hits);
    sigprocmask(SIG_SETMASK, &old, NULL);
    printf("unblocked: hits=%d code_tkill=%d\n", hits, last_code == SI_TKILL);
    union sigval v = {.sival_int = 42};
    sigqueue(getpid(), SIGUSR1, v);
    printf("sigqueue: hits=%d code_queue=%d\n", hits, last_code == SI_QUEUE);
    /* SA_RESETHAND: the second raise is fatal... only check the action was reset. */
    install(SIGUSR2, count, SA_RESETHAND);
    raise(SIGUSR2);
    struct sigaction cur;
    sigaction(SIGUSR2, NULL, &cur);
    printf("resethand: hits=%d reset=%d\n", hits, cur.sa_handler == SIG_DFL);
    /* SIG_IGN: dropped. */
    signal(SIGUSR2, SIG_IGN);
    raise(SIGUSR2);
    printf("ignored: hits=%d\n", hits);
    /* A signalfd reads blocked signals, with poll seeing it readable. */
    {
        sigset_t m2;
        sigemptyset(&m2);
        sigaddset(&m2, SIGUSR2);
        sigprocmask(SIG_BLOCK, &m2, NULL);
        int sfd = signalfd(-1, &m2, SFD_CLOEXEC | SFD_NONBLOCK);
        struct signalfd_siginfo ssi;
        int empty = read(sfd, &ssi, sizeof ssi) < 0 && errno == EAGAIN;
        kill(getpid(), SIGUSR2);
        struct pollfd pfd = {.fd = sfd, .events = POLLIN};
        int pr = poll(&pfd, 1, 1000);
        ssize_t got = read(sfd, &ssi, sizeof ssi);
        printf("signalfd: empty=%d poll=%d revents_in=%d read=%zd signo=%u pid_ok=%d\n", empty, pr,
               (pfd.revents & POLLIN) != 0, got, ssi.ssi_signo, ssi.ssi_pid == (unsigned)getpid());
        close(sfd);
    }
    /* sigtimedwait takes a blocked signal without running the handler. */
    sigprocmask(SIG_BLOCK, &s, NULL);
    raise(SIGUSR1);
    siginfo_t si;
    struct timespec ts = {0, 100000000};
    int got = sigtimedwait(&s, &si, &ts);
    int again = sigtimedwait(&s, &si, &ts);
    printf("sigtimedwait: got=%d hits=%d timeout=%d\n", got, hits, again < 0 && errno == EAGAIN);
    return 0;
}

static int pipefd[2];
static pthread_t main_thread;

static void *poker(void *arg) {
    (void)arg;
    usleep(100000);
    pthread_kill(main_thread, SIGUSR1);
    usleep(100000);
    if (write(pipefd[1], "hello", 5) != 5)
        perror("write");
    return NULL;
}

static void read_with(int flags, const char *name) {
    install(SIGUSR1, count, flags);
    if (pipe(pipefd))
        exit(1);
    hits = 0;
    main_thread = pthread_self();
    pthread_t t;
    pthread_create(&t, NULL, poker, NULL);
    char buf[16];
    ssize_t n = read(pipefd[0], buf, sizeof buf);
    int e = errno;
    pthread_join(t, NULL);
    printf("%s: read=%zd eintr=%d hits=%d\n", name, n, n < 0 && e == EINTR, hits);
    close(pipefd[0]);
    close(pipefd[1]);
}

static int restart_case(void) {
    read_with(SA_RESTART, "SA_RESTART");
    read_with(0, "no SA_RESTART");
    return 0;
}

static int depth(int n) {
    volatile char pad[1024];
    pad[0] = (char)n;
    return n == 0 ? pad[0] : depth(n + 1) + pad[0];
}

static int altstack_case(void) {
    size_t sz = 64 * 1024;
    alt_lo = malloc(sz);
    alt_hi = alt_lo + sz;
    stack_t ss = {.ss_sp = alt_lo, .ss_size = sz, .ss_flags = 0};
    if (sigaltstack(&ss, NULL)) {
        perror("sigaltstack");
        return 1;
    }
    stack_t cur;
    sigaltstack(NULL, &cur);
    printf("altstack: size_ok=%d flags=%d\n", cur.ss_size == sz, cur.ss_flags);
    install_info(SIGSEGV, on_fault, SA_ONSTACK);
    if (sigsetjmp(jb, 1) == 0) {
        depth(1);
        printf("no overflow?\n");
        return 1;
    }
    printf("stack overflow caught on the altstack: %d\n", on_alt);
    return 0;
}

static int segv_case(void) {
    install_info(SIGSEGV, on_fault, 0);
    for (int i = 0; i < 3; i++) {
        if (sigsetjmp(jb, 1) == 0) {
            *(volatile int *)(uintptr_t)(16 * i) = 1;
            printf("no fault?\n");
            return 1;
        }
        printf("recovered %d: addr=%#lx maperr=%d\n", i, (unsigned long)fault_addr,
               fault_code == SEGV_MAPERR);
    }
    /* The mask was restored by siglongjmp(.., 1): a fourth fault is still caught. */
    sigset_t m;
    sigprocmask(SIG_BLOCK, NULL, &m);
    printf("segv blocked after recovery: %d\n", sigismember(&m, SIGSEGV));
    return 0;
}

static int fpe_case(void) {
    install_info(SIGFPE, on_fault, 0);
    volatile int a = 7, b = 0;
    if (sigsetjmp(jb, 1) == 0) {
        printf("%d\n", a / b);
        return 1;
    }
    printf("SIGFPE caught: intdiv=%d\n", fault_code == FPE_INTDIV);
    return 0;
}

static volatile int tick;
static void on_alarm(int sig) { (void)sig; tick++; }

static int alarm_case(void) {
    install(SIGALRM, on_alarm, 0);
    alarm(1);
    unsigned left = alarm(1);
    printf("alarm left=%u\n", left);
    pause();
    printf("alarm fired: %d\n", tick);
    /* setitimer: 5 periodic expiries of 20 ms, waited for with sigsuspend. */
    tick = 0;
    sigset_t block, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigprocmask(SIG_BLOCK, &block, NULL);
    struct itimerval it = {{0, 20000}, {0, 20000}};
    setitimer(ITIMER_REAL, &it, NULL);
    sigemptyset(&empty);
    while (tick < 5)
        sigsuspend(&empty);
    struct itimerval off = {{0, 0}, {0, 0}}, was;
    setitimer(ITIMER_REAL, &off, &was);
    printf("setitimer fired: %d interval_us=%ld\n", tick, (long)was.it_interval.tv_usec);
    /* A POSIX timer with a value. */
    install_info(SIGRTMIN, on_info, 0);
    hits = 0;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGRTMIN;
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t)) {
        perror("timer_create");
        return 1;
    }
    struct itimerspec its = {{0, 0}, {0, 30000000}};
    timer_settime(t, 0, &its, NULL);
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    while (hits == 0)
        pause();
    printf("timer_create fired: %d code_timer=%d\n", hits, last_code == SI_TIMER);
    timer_delete(t);
    /* A timerfd: 3 expiries of 10 ms, read blocking. */
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec tis = {{0, 10000000}, {0, 10000000}};
    timerfd_settime(tfd, 0, &tis, NULL);
    uint64_t expiries = 0, e;
    while (expiries < 3 && read(tfd, &e, 8) == 8)
        expiries += e;
    struct itimerspec cur;
    timerfd_gettime(tfd, &cur);
    close(tfd);
    printf("timerfd: expiries>=3 %d interval_ns=%ld\n", expiries >= 3, cur.it_interval.tv_nsec);
    /* clock_nanosleep to an absolute deadline. */
    struct timespec now, dl;
    clock_gettime(CLOCK_MONOTONIC, &now);
    dl = now;
    dl.tv_nsec += 50000000;
    if (dl.tv_nsec >= 1000000000) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000;
    }
    int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &dl, NULL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    int late = now.tv_sec > dl.tv_sec || (now.tv_sec == dl.tv_sec && now.tv_nsec >= dl.tv_nsec);
    printf("clock_nanosleep abstime: r=%d reached=%d\n", r, late);
    return 0;
}

static volatile sig_atomic_t storm_hits, storm_done;
static volatile pid_t receiver_tid;
static void on_storm(int sig) { (void)sig; storm_hits++; }
static void on_done(int sig) { (void)sig; storm_done = 1; }

static void *receiver(void *arg) {
    (void)arg;
    receiver_tid = (pid_t)syscall(SYS_gettid);
    while (!storm_done) {
        __asm__ volatile("pause");
    }
    return NULL;
}

static int storm_case(int n) {
    install(SIGUSR1, on_storm, SA_RESTART);
    install(SIGUSR2, on_done, SA_RESTART);
    /* The sender blocks both: only the receiver takes them. */
    pthread_t t;
    pthread_create(&t, NULL, receiver, NULL);
    while (!receiver_tid)
        __asm__ volatile("pause");
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    pid_t pid = getpid();
    int fails = 0;
    for (int i = 0; i < n; i++)
        if (syscall(SYS_tgkill, pid, receiver_tid, SIGUSR1))
            fails++;
    syscall(SYS_tgkill, pid, receiver_tid, SIGUSR2);
    pthread_join(t, NULL);
    printf("storm: sent=%d fails=%d received_in_range=%d done=%d\n", n, fails,
           storm_hits >= 1 && storm_hits <= n, storm_done);
    return 0;
}

static void on_term(int sig) {
    (void)sig;
    int fd = open("checkpoint", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (write(fd, "saved\n", 6) != 6)
            _exit(9);
        close(fd);
    }
    _exit(3);
}

static int term_case(void) {
    install(SIGTERM, on_term, 0);
    int fd = open("ready", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    close(fd);
    printf("waiting for SIGTERM\n");
    fflush(stdout);
    /* Compute until the signal comes (no system call: the vCPU must be kicked). */
    volatile unsigned long x = 0;
    while (x != ~0UL)
        x++;
    return 0;
}

static int cont_case(void) {
    /* SIGUSR1 with SA_SIGINFO from outside: si_pid is the sender's (0 seen from the VM). */
    install_info(SIGUSR1, on_info, 0);
    int fd = open("ready", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    close(fd);
    while (hits == 0)
        pause();
    printf("usr1 from outside: hits=%d code_user=%d\n", hits, last_code == SI_USER);
    return 0;
}

/* A JVM-style handler: skip the faulting ud2 by moving RIP in the ucontext. The FPU state
   of the interrupted code survives a handler that uses the FPU itself. */
static void on_ill(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    ucontext_t *uc = ucv;
    volatile double junk = 0;
    for (int i = 0; i < 10; i++)
        junk = junk * 1.5 + si->si_code;
    uc->uc_mcontext.gregs[REG_RIP] += 2;
    uc->uc_mcontext.gregs[REG_RAX] = 1234;
    /* What ucontext readers check: UC_FP_XSTATE and the fpx_sw_bytes magic. */
    unsigned *fx = (unsigned *)uc->uc_mcontext.fpregs;
    last_code = (uc->uc_flags & 1) && fx[116] == 0x46505853 && uc->uc_mcontext.fpregs->mxcsr == 0x1f80;
    hits++;
}

static int ucontext_case(void) {
    install_info(SIGILL, on_ill, 0);
    double x = 1.25;
    long rax;
    __asm__ volatile("movsd %1, %%xmm7\n\tmov $5, %%rax\n\tud2\n\tmovsd %%xmm7, %1"
                     : "=a"(rax), "+m"(x)
                     :
                     : "xmm7", "memory");
    printf("ucontext: hits=%d rax=%ld xmm7=%.2f xstate=%d\n", hits, rax, x, last_code);
    /* Hostile pointers: EFAULT, like Linux. */
    long r1 = syscall(SYS_rt_sigaction, SIGUSR1, (void *)8, NULL, 8);
    int e1 = errno;
    long r2 = syscall(SYS_rt_sigaction, SIGUSR1, NULL, (void *)8, 8);
    int e2 = errno;
    long r3 = syscall(SYS_rt_sigaction, SIGKILL, NULL, NULL, 8);
    long r4 = syscall(SYS_rt_sigaction, SIGUSR1, NULL, NULL, 16);
    int e4 = errno;
    printf("hostile: act=%ld/%d old=%ld/%d kill_query=%ld size=%ld/%d\n", r1, e1 == EFAULT, r2,
           e2 == EFAULT, r3, r4, e4 == EINVAL);
    return 0;
}

/* A handler that faults while handling: SIGSEGV with the default action (139). */
static void on_segv_faulting(int sig) {
    (void)sig;
    printf("in handler\n");
    volatile uintptr_t bad = 8;
    *(volatile int *)bad = 1;
}

/* A handler that corrupts its frame (reserved MXCSR bits): rt_sigreturn answers SIGSEGV. */
static void on_usr1_corrupt(int sig, siginfo_t *si, void *ucv) {
    (void)sig;
    (void)si;
    ucontext_t *uc = ucv;
    uc->uc_mcontext.fpregs->mxcsr = 0xffffffff;
}

static long ts_ns(struct timespec t) { return t.tv_sec * 1000000000L + t.tv_nsec; }

/* The calls answered inside the guest give Linux's answers. */
static int clocks_case(void) {
    int tid_ok = syscall(SYS_gettid) == getpid();
    unsigned cpu = 99, node = 99;
    int gc = syscall(SYS_getcpu, &cpu, &node, NULL);
    int bad = syscall(SYS_getcpu, (void *)8, NULL, NULL);
    int e = errno;
    struct timespec res, a, b;
    clock_getres(CLOCK_PROCESS_CPUTIME_ID, &res);
    int mono = 1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (int i = 0; i < 100000; i++) {
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        if (ts_ns(b) < ts_ns(a))
            mono = 0;
        a = b;
    }
    struct rusage r0, r1, t0;
    getrusage(RUSAGE_SELF, &r0);
    getrusage(RUSAGE_THREAD, &t0);
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    do
        clock_gettime(CLOCK_MONOTONIC, &w1);
    while (ts_ns(w1) - ts_ns(w0) < 100000000);
    getrusage(RUSAGE_SELF, &r1);
    long used = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1000000L +
                (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000000L +
                (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    struct tms tm;
    clock_t c = times(&tm);
    int bad_ru = syscall(SYS_getrusage, RUSAGE_SELF, (void *)8);
    int e2 = errno;
    printf("clocks: tid=pid %d getcpu=%d node=%u efault=%d res=%ld mono=%d busy_cpu_ok=%d times_ok=%d "
           "ru_efault=%d yield=%d\n",
           tid_ok, gc, node, bad < 0 && e == EFAULT, res.tv_nsec, mono, used > 1000 && used < 1000000,
           c != (clock_t)-1 && tm.tms_utime >= 0, bad_ru < 0 && e2 == EFAULT, sched_yield());
    return 0;
}

int main(int argc, char **argv) {
    const char *m = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strcmp(m, "siginfo"))
        return siginfo_case();
    if (!strcmp(m, "restart"))
        return restart_case();
    if (!strcmp(m, "altstack"))
        return altstack_case();
    if (!strcmp(m, "segv"))
        return segv_case();
    if (!strcmp(m, "fpe"))
        return fpe_case();
    if (!strcmp(m, "alarm"))
        return alarm_case();
    if (!strcmp(m, "storm"))
        return storm_case(argc > 2 ? atoi(argv[2]) : 100000);
    if (!strcmp(m, "term"))
        return term_case();
    if (!strcmp(m, "usr1"))
        return cont_case();
    if (!strcmp(m, "clocks"))
        return clocks_case();
    if (!strcmp(m, "ucontext"))
        return ucontext_case();
    if (!strcmp(m, "nested")) {
        install(SIGSEGV, on_segv_faulting, 0);
        *(volatile int *)0 = 1;
        return 0;
    }
    if (!strcmp(m, "badframe")) {
        install_info(SIGUSR1, on_usr1_corrupt, 0);
        printf("corrupting\n");
        raise(SIGUSR1);
        printf("survived?\n");
        return 0;
    }
    if (!strcmp(m, "sigkill")) {
        printf("killing\n");
        kill(getpid(), SIGKILL);
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", m);
    return 2;
}
