/* Signal round trip: raise(SIGUSR1) with a handler installed, N times (the tgkill, the
   handler on its signal frame, rt_sigreturn). Prints us_per_signal. argv: N. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t hits;
static void on_usr1(int sig) { (void)sig; hits++; }

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        raise(SIGUSR1);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double us = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / (double)n;
    printf("sigrt n=%ld hits=%ld us_per_signal=%.3f\n", n, (long)hits, us);
    return hits == n ? 0 : 1;
}
