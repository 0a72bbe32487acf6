/* First thing the guest does: print the wall clock (ns since the epoch), so the benchmark can
 * measure submission -> first guest instruction. */
#include <stdio.h>
#include <time.h>
int main(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    printf("stamp_ns=%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    return 0;
}
