/* Never stops (argv[1] = number of extra spinning threads). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static volatile long x;
static void *spin(void *a) { for (;;) x++; return a; }

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0;
    for (int i = 0; i < n; i++) { pthread_t t; pthread_create(&t, NULL, spin, NULL); }
    printf("spinning\n");
    fflush(stdout);
    spin(NULL);
    return 0;
}
