/* Conjugate gradient on a 3D 7-point Laplacian (OpenMP), timing every kernel the way HPCCG
   does: getrusage(RUSAGE_SELF) before and after each SpMV, dot product and WAXPBY, plus
   CLOCK_PROCESS_CPUTIME_ID and times() once per iteration. argv: n (grid edge), iterations.
   Built with -DWALL_CLOCK (the benchmark, crates/eval) it also prints the run's wall time
   (time_s=); without it (the VMM test crates/hpcvmm/tests/signals.rs, which compares the
   output with a native run's) it prints nothing that varies from run to run. Needs -fopenmp. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/times.h>
#include <time.h>

static int n;
static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void spmv(const double *x, double *y) {
#pragma omp parallel for
    for (int k = 0; k < n; k++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < n; i++) {
                long c = ((long)k * n + j) * n + i;
                double v = 6.0 * x[c];
                if (i > 0) v -= x[c - 1];
                if (i < n - 1) v -= x[c + 1];
                if (j > 0) v -= x[c - n];
                if (j < n - 1) v -= x[c + n];
                if (k > 0) v -= x[c - (long)n * n];
                if (k < n - 1) v -= x[c + (long)n * n];
                y[c] = v;
            }
}

static double dot(const double *a, const double *b, long len) {
    double s = 0;
#pragma omp parallel for reduction(+ : s)
    for (long i = 0; i < len; i++)
        s += a[i] * b[i];
    return s;
}

static void waxpby(double alpha, const double *x, double beta, const double *y, double *w,
                   long len) {
#pragma omp parallel for
    for (long i = 0; i < len; i++)
        w[i] = alpha * x[i] + beta * y[i];
}

int main(int argc, char **argv) {
    n = argc > 1 ? atoi(argv[1]) : 32;
    int iters = argc > 2 ? atoi(argv[2]) : 50;
    long len = (long)n * n * n;
    double *x = calloc(len, 8), *b = malloc(len * 8), *r = malloc(len * 8), *p = malloc(len * 8),
           *ap = malloc(len * 8);
    for (long i = 0; i < len; i++)
        b[i] = 1.0;
    waxpby(1, b, 0, b, r, len);
    waxpby(1, r, 0, r, p, len);
    double t_spmv = 0, t_dot = 0, t_waxpby = 0, t0;
    double rr = dot(r, r, len);
    int calls = 0;
    struct timespec cpu_first, cpu_last;
#ifdef WALL_CLOCK
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
#endif
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu_first);
    for (int it = 0; it < iters; it++) {
        t0 = cpu_s();
        spmv(p, ap);
        t_spmv += cpu_s() - t0;
        t0 = cpu_s();
        double pap = dot(p, ap, len);
        t_dot += cpu_s() - t0;
        double alpha = rr / pap;
        t0 = cpu_s();
        waxpby(1, x, alpha, p, x, len);
        waxpby(1, r, -alpha, ap, r, len);
        t_waxpby += cpu_s() - t0;
        t0 = cpu_s();
        double rr_new = dot(r, r, len);
        t_dot += cpu_s() - t0;
        t0 = cpu_s();
        waxpby(1, r, rr_new / rr, p, p, len);
        t_waxpby += cpu_s() - t0;
        rr = rr_new;
        struct tms tm;
        times(&tm);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu_last);
        calls += 11;
    }
    double cpu_span = (cpu_last.tv_sec - cpu_first.tv_sec) + (cpu_last.tv_nsec - cpu_first.tv_nsec) * 1e-9;
#ifdef WALL_CLOCK
    clock_gettime(CLOCK_MONOTONIC, &w1);
    double wall = (w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) * 1e-9;
    printf("cg n=%d iters=%d residual=%.6e timer_calls=%d time_s=%.6f\n", n, iters, rr, calls, wall);
#else
    printf("cg n=%d iters=%d residual=%.6e timer_calls=%d\n", n, iters, rr, calls);
#endif
    printf("timers sane: %d\n", t_spmv >= 0 && t_dot >= 0 && t_waxpby >= 0 && cpu_span > 0);
    fprintf(stderr, "spmv %.4f s dot %.4f s waxpby %.4f s cpu %.4f s threads %d\n", t_spmv, t_dot,
            t_waxpby, cpu_span, omp_get_max_threads());
    return 0;
}
