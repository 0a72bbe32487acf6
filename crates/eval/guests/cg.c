/* Conjugate gradient on a 27-point 3-D stencil (HPCCG's operator), OpenMP. The benchmark
 * guest for VM-vs-native ratios: compute bound, two clock reads around the solve. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
static int nx, ny, nz;
static void matvec(const double *x, double *y) {
  #pragma omp parallel for schedule(static)
  for (int k = 0; k < nz; k++)
    for (int j = 0; j < ny; j++)
      for (int i = 0; i < nx; i++) {
        double s = 27.0 * x[(k * ny + j) * nx + i];
        for (int dk = -1; dk <= 1; dk++)
          for (int dj = -1; dj <= 1; dj++)
            for (int di = -1; di <= 1; di++) {
              int kk = k + dk, jj = j + dj, ii = i + di;
              if ((dk | dj | di) == 0 || kk < 0 || kk >= nz || jj < 0 || jj >= ny || ii < 0 || ii >= nx) continue;
              s -= x[(kk * ny + jj) * nx + ii];
            }
        y[(k * ny + j) * nx + i] = s;
      }
}
static double dot(const double *a, const double *b, long n) {
  double s = 0;
  #pragma omp parallel for reduction(+:s) schedule(static)
  for (long i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  nx = ny = nz = argc > 1 ? atoi(argv[1]) : 64;
  int iters = argc > 2 ? atoi(argv[2]) : 100;
  long n = (long)nx * ny * nz;
  double *x = calloc(n, 8), *b = malloc(n * 8), *r = malloc(n * 8), *p = malloc(n * 8), *ap = malloc(n * 8);
  double *ones = malloc(n * 8);
  for (long i = 0; i < n; i++) ones[i] = 1.0;
  matvec(ones, b);
  for (long i = 0; i < n; i++) { r[i] = b[i]; p[i] = b[i]; }
  double t0 = now();
  double rr = dot(r, r, n);
  int it;
  for (it = 0; it < iters && rr > 1e-20; it++) {
    matvec(p, ap);
    double alpha = rr / dot(p, ap, n);
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) { x[i] += alpha * p[i]; r[i] -= alpha * ap[i]; }
    double rr2 = dot(r, r, n);
    double beta = rr2 / rr;
    rr = rr2;
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) p[i] = r[i] + beta * p[i];
  }
  double t1 = now();
  double err = 0;
  for (long i = 0; i < n; i++) err = fmax(err, fabs(x[i] - 1.0));
  int threads = 1;
#ifdef _OPENMP
  threads = omp_get_max_threads();
#endif
  printf("cg n=%d iters=%d threads=%d residual=%.3e maxerr=%.3e time_s=%.6f\n", nx, it, threads, sqrt(rr), err, t1 - t0);
  return err < 1e-6 ? 0 : 1;
}
