/* spin SECS [ignore-term]: runs for SECS seconds (default 5) reading the clock (few VM exits),
   saying when it started ("spinning") and ended ("done"). Built with -DCATCH_SIGTERM, a SIGTERM
   handler says it was asked to stop and exits 42, or, given a second argument, SIGTERM is
   ignored (a cancel must escalate to SIGKILL); without it SIGTERM keeps its default action. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef CATCH_SIGTERM
static void term(int s) { (void)s; write(1, "guest got SIGTERM\n", 18); _exit(42); }
#endif
int main(int argc, char **argv) {
#ifdef CATCH_SIGTERM
    signal(SIGTERM, argc > 2 ? SIG_IGN : term);
#endif
    double secs = argc > 1 ? atof(argv[1]) : 5;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    printf("spinning %.1f s\n", secs);
    fflush(stdout);
    do {
        struct timespec d = {0, 20000000};
        nanosleep(&d, 0);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    printf("done\n");
    return 0;
}
