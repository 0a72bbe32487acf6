/* Clocks advance, sleeps last at least as long as asked. */
#include <stdio.h>
#include <time.h>
#include <sys/time.h>
#include <errno.h>

static double ts(struct timespec t) { return t.tv_sec + t.tv_nsec * 1e-9; }

int main(void) {
    struct timespec a, b, r;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("monotonic non-decreasing=%d\n", ts(b) >= ts(a));
    struct timespec req = {0, 50 * 1000 * 1000};
    int rc = nanosleep(&req, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double slept = ts(b) - ts(a);
    printf("nanosleep rc=%d slept>=50ms=%d slept<2s=%d\n", rc, slept >= 0.050, slept < 2.0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    struct timespec abs;
    clock_gettime(CLOCK_MONOTONIC, &abs);
    abs.tv_nsec += 20 * 1000 * 1000;
    if (abs.tv_nsec >= 1000000000) { abs.tv_sec++; abs.tv_nsec -= 1000000000; }
    rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("clock_nanosleep abs rc=%d reached=%d\n", rc, ts(b) >= ts(abs));
    struct timespec real;
    clock_gettime(CLOCK_REALTIME, &real);
    time_t t = time(NULL);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    /* time() may be a coarse clock, a tick behind clock_gettime: allow one second either way */
    printf("realtime agrees with time()=%d gettimeofday=%d after 2020=%d\n",
           (long)t - real.tv_sec <= 1 && (long)t - real.tv_sec >= -1,
           tv.tv_sec - real.tv_sec <= 1 && tv.tv_sec - real.tv_sec >= -1, real.tv_sec > 1577836800L);
    int grc = clock_getres(CLOCK_MONOTONIC, &r);
    printf("getres rc=%d res<=1ms=%d\n", grc, r.tv_sec == 0 && r.tv_nsec <= 1000000);
    struct timespec bad = {0, 2000000000L};
    errno = 0;
    rc = nanosleep(&bad, NULL);
    printf("nanosleep bad nsec rc=%d EINVAL=%d\n", rc, errno == EINVAL);
    /* CPU clock advances with work. */
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    volatile double x = 0;
    for (long i = 0; i < 20000000; i++) x += i * 0.5;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    printf("cputime advances=%d\n", ts(c1) > ts(c0));
    return 0;
}
