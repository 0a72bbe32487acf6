/* Thread-local storage: __thread variables (initialised and zeroed) are per thread. */
#include <pthread.h>
#include <stdio.h>

static __thread long counter = 1000;
static __thread char buf[64];
static __thread long zeroed;

static void *worker(void *arg) {
    long me = (long)arg;
    for (int i = 0; i < 1000; i++) counter += me;
    buf[0] = 'a' + me;
    return (void *)(counter * 10 + (zeroed == 0) + (buf[0] - 'a') * 100000);
}

int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        printf("thread %d -> %ld\n", i, (long)r);
    }
    printf("main counter=%ld buf0=%d zeroed=%ld\n", counter, buf[0], zeroed);
    return 0;
}
