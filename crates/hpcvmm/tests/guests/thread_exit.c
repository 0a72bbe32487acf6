/* argv[1]: "exit" -> a non-main thread calls exit_group(7) while main blocks;
 *          "fault" -> a non-main thread dereferences NULL while main blocks. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>

static const char *mode;
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;

static void *worker(void *a) {
    printf("worker tid=%s\n", gettid() != getpid() ? "other" : "main");
    fflush(stdout);
    if (!strcmp(mode, "exit")) _exit(7);
    *(volatile int *)16 = 1;
    return a;
}

int main(int argc, char **argv) {
    mode = argc > 1 ? argv[1] : "exit";
    pthread_mutex_lock(&m);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_mutex_lock(&m); /* blocks forever */
    printf("impossible\n");
    return 0;
}
