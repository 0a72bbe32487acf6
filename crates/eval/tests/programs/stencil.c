/* A 2-D Jacobi stencil with OpenMP: the user program of the isolation experiment's tests.
 * Usage: stencil N ITERS. Prints "time: <seconds> s" for the sweeps and "checksum: <sum>",
 * then "result ok" when the checksum matches the closed form (heat is conserved except at the
 * fixed-zero boundary, so the sum only shrinks and stays positive). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 512;
    int iters = argc > 2 ? atoi(argv[2]) : 100;
    double *a = calloc((size_t)n * n, sizeof *a), *b = calloc((size_t)n * n, sizeof *b);
    if (!a || !b || n < 3) {
        fprintf(stderr, "stencil: bad size %d\n", n);
        return 2;
    }
    for (int i = 1; i < n - 1; i++)
        for (int j = 1; j < n - 1; j++) a[(size_t)i * n + j] = 1.0;
    double start = omp_get_wtime();
    for (int it = 0; it < iters; it++) {
#pragma omp parallel for
        for (int i = 1; i < n - 1; i++)
            for (int j = 1; j < n - 1; j++)
                b[(size_t)i * n + j] = 0.25 * (a[(size_t)(i - 1) * n + j] + a[(size_t)(i + 1) * n + j] +
                                               a[(size_t)i * n + j - 1] + a[(size_t)i * n + j + 1]);
        double *t = a;
        a = b;
        b = t;
    }
    double took = omp_get_wtime() - start;
    double sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (int i = 0; i < n * n; i++) sum += a[i];
    printf("threads: %d\n", omp_get_max_threads());
    printf("time: %.6f s\n", took);
    printf("checksum: %.6f\n", sum);
    double interior = (double)(n - 2) * (n - 2);
    if (sum > 0 && sum <= interior) printf("result ok\n");
    else printf("result WRONG\n");
    return 0;
}
