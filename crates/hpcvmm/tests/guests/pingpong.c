/* Mutex + condition variable ping-pong between two threads, N rounds. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int turn = 0, rounds;
static long total = 0;

static void *player(void *arg) {
    int me = (int)(long)arg;
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&m);
        while (turn != me) pthread_cond_wait(&cv, &m);
        total += me + 1;
        turn = 1 - me;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&m);
    }
    return (void *)(long)(me * 100);
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atoi(argv[1]) : 200;
    pthread_t t[2];
    for (long i = 0; i < 2; i++) pthread_create(&t[i], NULL, player, (void *)i);
    void *r0, *r1;
    pthread_join(t[0], &r0);
    pthread_join(t[1], &r1);
    printf("rounds=%d total=%ld joined=%ld,%ld\n", rounds, total, (long)r0, (long)r1);
    return 0;
}
