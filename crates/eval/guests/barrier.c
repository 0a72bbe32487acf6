/* OpenMP barriers: how many VM exits one barrier costs. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000;
  struct timespec a, b;
  #pragma omp parallel
  { }
  clock_gettime(CLOCK_MONOTONIC, &a);
  #pragma omp parallel
  {
    for (long i = 0; i < n; i++) {
      #pragma omp barrier
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  printf("barrier n=%ld threads=%d time_s=%.6f us_per_barrier=%.3f\n", n, omp_get_max_threads(), s, s / n * 1e6);
  return 0;
}
