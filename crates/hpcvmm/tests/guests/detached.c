/* Detached threads finish on their own; main waits on a counter, then creates more (vCPU reuse). */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int done = 0;
static long sum = 0;

static void *worker(void *arg) {
    long v = (long)arg;
    pthread_mutex_lock(&m);
    sum += v;
    done++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&m);
    return NULL;
}

int main(void) {
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    for (int wave = 0; wave < 3; wave++) {
        for (long i = 1; i <= 4; i++) {
            pthread_t t;
            if (pthread_create(&t, &a, worker, (void *)(i + wave * 10)) != 0) printf("create failed\n");
        }
        pthread_mutex_lock(&m);
        while (done < 4 * (wave + 1)) pthread_cond_wait(&cv, &m);
        pthread_mutex_unlock(&m);
        printf("wave %d done=%d sum=%ld\n", wave, done, sum);
    }
    return 0;
}
