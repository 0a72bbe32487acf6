/* sched_getaffinity reports the run's cores; sched_setaffinity narrows it per thread. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

static void *worker(void *a) {
    cpu_set_t s;
    sched_getaffinity(0, sizeof s, &s);
    printf("new thread inherits pinned mask: count=%d\n", CPU_COUNT(&s));
    return a;
}

int main(void) {
    cpu_set_t s;
    sched_getaffinity(0, sizeof s, &s);
    int n = CPU_COUNT(&s);
    printf("count=%d nprocs_matches=%d\n", n, n == sysconf(_SC_NPROCESSORS_ONLN));
    int first = -1;
    for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
        if (CPU_ISSET(i, &s)) first = i;
    CPU_ZERO(&s);
    CPU_SET(first, &s);
    printf("setaffinity one cpu=%d\n", sched_setaffinity(0, sizeof s, &s));
    sched_getaffinity(0, sizeof s, &s);
    printf("after pin: count=%d on first=%d\n", CPU_COUNT(&s), CPU_ISSET(first, &s) != 0);
    printf("running on it=%d\n", sched_getcpu() == first);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    CPU_ZERO(&s);
    printf("empty mask=%d\n", sched_setaffinity(0, sizeof s, &s));
    return 0;
}
