/* More threads than cores, all alive at once (a barrier holds them), each doing work. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_barrier_t b;
static long results[64];

static void *worker(void *arg) {
    long me = (long)arg;
    pthread_barrier_wait(&b);
    long s = 0;
    for (long i = 0; i < 200000; i++) s += (i ^ me) % 13;
    results[me] = s;
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 8;
    pthread_barrier_init(&b, NULL, n);
    pthread_t t[64];
    for (long i = 0; i < n; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    long total = 0;
    for (int i = 0; i < n; i++) { pthread_join(t[i], NULL); total += results[i]; }
    printf("threads=%d total=%ld\n", n, total);
    return 0;
}
