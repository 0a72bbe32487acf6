// build: -fopenmp
/* OpenMP (libgomp): reduction, parallel for, critical, thread count from the affinity. */
#include <omp.h>
#include <stdio.h>

int main(void) {
    long n = 2000000;
    double sum = 0;
#pragma omp parallel for reduction(+ : sum)
    for (long i = 1; i <= n; i++) sum += 1.0 / ((double)i * i);
    printf("basel sum=%.9f\n", sum);
    static double a[100000];
#pragma omp parallel for schedule(static)
    for (int i = 0; i < 100000; i++) a[i] = i * 0.5;
    double check = 0;
    for (int i = 0; i < 100000; i++) check += a[i];
    printf("parallel for check=%.1f\n", check);
    int seen = 0;
#pragma omp parallel
    {
#pragma omp critical
        seen++;
    }
    printf("threads seen=%d max=%d\n", seen == omp_get_max_threads(), omp_get_max_threads() >= 1);
    long hist = 0;
    for (int rep = 0; rep < 20; rep++) {
#pragma omp parallel for reduction(+ : hist) schedule(dynamic, 100)
        for (int i = 0; i < 10000; i++) hist += i % 7;
    }
    printf("dynamic reduction=%ld\n", hist);
    return 0;
}
