/* pthread barriers: every thread sees every phase's writes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define T 3
#define PHASES 20
static pthread_barrier_t b;
static long slot[T];
static long ok = 1;

static void *worker(void *arg) {
    long me = (long)arg;
    for (int p = 0; p < PHASES; p++) {
        slot[me] = p * 10 + me;
        pthread_barrier_wait(&b);
        for (int j = 0; j < T; j++)
            if (slot[j] != p * 10 + j) __atomic_store_n(&ok, 0, __ATOMIC_SEQ_CST);
        pthread_barrier_wait(&b);
    }
    return NULL;
}

int main(void) {
    pthread_barrier_init(&b, NULL, T);
    pthread_t t[T];
    for (long i = 0; i < T; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < T; i++) pthread_join(t[i], NULL);
    printf("barrier phases=%d threads=%d consistent=%ld\n", PHASES, T, ok);
    return 0;
}
