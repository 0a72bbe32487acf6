/* Futex ping-pong between two threads: wake-to-run latency (round trip / 2). */
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static _Atomic int word = 0;
static long rounds;
static void fwait(int val) { while (atomic_load(&word) == val) syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0); }
static void fset(int val) { atomic_store(&word, val); syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }
static void *pong(void *arg) {
  (void)arg;
  for (long i = 0; i < rounds; i++) { fwait(0); fset(0); }
  return NULL;
}
int main(int argc, char **argv) {
  rounds = argc > 1 ? atol(argv[1]) : 200;
  pthread_t t;
  pthread_create(&t, NULL, pong, NULL);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < rounds; i++) { fset(1); fwait(1); }
  clock_gettime(CLOCK_MONOTONIC, &b);
  pthread_join(t, NULL);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  printf("futexpp rounds=%ld time_s=%.6f us_per_handoff=%.3f\n", rounds, s, s / rounds / 2 * 1e6);
  return 0;
}
