/* N read(2) calls of 4 KiB from /dev/zero: the cost of a read-heavy system call. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000;
  static char buf[4096];
  int fd = open("/dev/zero", O_RDONLY);
  if (fd < 0) { perror("open /dev/zero"); return 1; }
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++)
    if (read(fd, buf, sizeof buf) != sizeof buf) { perror("read"); return 1; }
  clock_gettime(CLOCK_MONOTONIC, &b);
  double t = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  printf("readloop calls=%ld time_s=%.6f us_per_call=%.3f\n", n, t, t / n * 1e6);
  return 0;
}
