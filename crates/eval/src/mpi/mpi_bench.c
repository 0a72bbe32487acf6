/* MPI micro-benchmarks of `dualstack bench mpi`, written for this project: ping-pong latency
   and bandwidth between ranks 0 and 1 (1 B .. 4 MiB) and MPI_Allreduce latency on all ranks.
   Rank 0 prints one line per measurement:
     pingpong BYTES ITERS ONE_WAY_US MB_PER_S
     allreduce DOUBLES ITERS US_RANK0 US_RANK1 ...
   (the allreduce latency as every rank measured it, in rank order).
   Every message is checked on arrival (first and last byte). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    size_t max = 4u << 20;
    unsigned char *buf = malloc(max);
    memset(buf, 0, max);
    long errors = 0;
    for (size_t n = 1; n <= max; n *= 8) {
        size_t bytes = n == 1u << 21 ? max : n; /* 1, 8, ..., 2 MiB, then 4 MiB */
        if (n > (1u << 21)) break;
        long iters = (long)(scale * (bytes <= 4096 ? 20000 : (64u << 20) / bytes));
        if (iters < 20) iters = 20;
        long warm = iters / 10 + 1;
        double t0 = 0;
        for (long i = -warm; i < iters; i++) {
            if (i == 0) {
                MPI_Barrier(MPI_COMM_WORLD);
                t0 = MPI_Wtime();
            }
            if (rank == 0) {
                buf[0] = (unsigned char)i;
                buf[bytes - 1] = (unsigned char)(i + 1);
                MPI_Send(buf, (int)bytes, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
                MPI_Recv(buf, (int)bytes, MPI_BYTE, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                errors += buf[0] != (unsigned char)(i + 2);
            } else if (rank == 1) {
                MPI_Recv(buf, (int)bytes, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                errors += buf[bytes - 1] != (unsigned char)(i + 1);
                buf[0] = (unsigned char)(i + 2);
                MPI_Send(buf, (int)bytes, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
            }
        }
        double dt = MPI_Wtime() - t0;
        if (rank == 0) {
            double one_way_us = dt / iters / 2 * 1e6;
            printf("pingpong %zu %ld %.4f %.2f\n", bytes, iters, one_way_us,
                   bytes / (one_way_us * 1e-6) / 1e6);
        }
        if (bytes == max) break;
    }
    for (int n = 1; n <= 8192; n *= 32) {
        double *in = calloc(n, sizeof(double)), *out = calloc(n, sizeof(double));
        for (int i = 0; i < n; i++) in[i] = rank + i;
        long iters = (long)(scale * (n <= 32 ? 20000 : 2000));
        if (iters < 20) iters = 20;
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (long i = 0; i < iters; i++) MPI_Allreduce(in, out, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        double us = (MPI_Wtime() - t0) / iters * 1e6;
        double expect = (double)size * (size - 1) / 2 + (double)size * (n - 1);
        errors += out[n - 1] != expect;
        double *all_us = calloc((size_t)size, sizeof(double));
        MPI_Gather(&us, 1, MPI_DOUBLE, all_us, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            printf("allreduce %d %ld", n, iters);
            for (int r = 0; r < size; r++) printf(" %.4f", all_us[r]);
            printf("\n");
        }
        free(all_us);
        free(in);
        free(out);
    }
    long all = 0;
    MPI_Reduce(&errors, &all, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) printf("errors %ld\n", all);
    free(buf);
    MPI_Finalize();
    return all != 0;
}
