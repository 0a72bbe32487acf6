/* MPI test program for the launcher tests (crates/cli/tests/mpi.rs): one mode per run, rank 0
   prints everything so the output does not depend on how the ranks' lines interleave.
   usage: mpi_suite hello|ring|allreduce|barrier|nonblocking|big|abort|segv */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, size;

static void hello(void) {
    char name[MPI_MAX_PROCESSOR_NAME] = {0};
    int len;
    MPI_Get_processor_name(name, &len);
    char *all = malloc((size_t)size * MPI_MAX_PROCESSOR_NAME);
    MPI_Gather(name, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, 0,
               MPI_COMM_WORLD);
    if (rank == 0)
        for (int i = 0; i < size; i++)
            printf("hello from rank %d of %d on %s\n", i, size, all + i * MPI_MAX_PROCESSOR_NAME);
    free(all);
}

static void ring(void) {
    long token = 0;
    for (int lap = 0; lap < 100; lap++) {
        if (rank == 0) {
            token++;
            MPI_Send(&token, 1, MPI_LONG, (rank + 1) % size, 0, MPI_COMM_WORLD);
            MPI_Recv(&token, 1, MPI_LONG, size - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(&token, 1, MPI_LONG, rank - 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            token += rank;
            MPI_Send(&token, 1, MPI_LONG, (rank + 1) % size, 0, MPI_COMM_WORLD);
        }
    }
    if (rank == 0) printf("ring: 100 laps, token %ld\n", token);
}

static void allreduce(void) {
    double local[64], sum[64];
    for (int i = 0; i < 64; i++) local[i] = (rank + 1) * (i + 0.5);
    MPI_Allreduce(local, sum, 64, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    long imax, imin, r = rank * 10 + 1;
    MPI_Allreduce(&r, &imax, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&r, &imin, 1, MPI_LONG, MPI_MIN, MPI_COMM_WORLD);
    double total = 0;
    for (int i = 0; i < 64; i++) total += sum[i];
    if (rank == 0) printf("allreduce: sum %.3f max %ld min %ld\n", total, imax, imin);
}

static void barrier(void) {
    int counts = 0;
    for (int i = 0; i < 1000; i++) {
        MPI_Barrier(MPI_COMM_WORLD);
        counts++;
    }
    int all;
    MPI_Reduce(&counts, &all, 1, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) printf("barrier: %d barriers on %d ranks, %d passed\n", 1000, size, all);
}

static void nonblocking(void) {
    enum { N = 16, LEN = 4096 };
    int *out = malloc(N * LEN * sizeof(int)), *in = malloc(N * LEN * sizeof(int));
    MPI_Request req[2 * N];
    MPI_Status st[2 * N];
    int peer = rank ^ 1;
    for (int i = 0; i < N * LEN; i++) out[i] = rank * 1000000 + i;
    for (int m = 0; m < N; m++) {
        MPI_Irecv(in + m * LEN, LEN, MPI_INT, peer, m, MPI_COMM_WORLD, &req[m]);
        MPI_Isend(out + m * LEN, LEN, MPI_INT, peer, m, MPI_COMM_WORLD, &req[N + m]);
    }
    MPI_Waitall(2 * N, req, st);
    long bad = 0;
    for (int i = 0; i < N * LEN; i++) bad += in[i] != peer * 1000000 + i;
    long allbad;
    MPI_Reduce(&bad, &allbad, 1, MPI_LONG, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0) printf("nonblocking: %d messages each way, %ld wrong words\n", N, allbad);
    free(out);
    free(in);
}

static void big(void) {
    size_t n = 64u << 20; /* 64 MiB */
    unsigned char *buf = malloc(n);
    if (rank == 0) {
        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 7 + 3);
        MPI_Send(buf, (int)n, MPI_BYTE, 1, 0, MPI_COMM_WORLD);
        unsigned long sum;
        MPI_Recv(&sum, 1, MPI_UNSIGNED_LONG, 1, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        printf("big: 64 MiB sent, receiver's checksum %lu\n", sum);
    } else if (rank == 1) {
        memset(buf, 0, n);
        MPI_Recv(buf, (int)n, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        unsigned long sum = 0;
        for (size_t i = 0; i < n; i++) sum = sum * 31 + buf[i];
        MPI_Send(&sum, 1, MPI_UNSIGNED_LONG, 0, 1, MPI_COMM_WORLD);
    }
    free(buf);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const char *mode = argc > 1 ? argv[1] : "hello";
    if (!strcmp(mode, "hello")) hello();
    else if (!strcmp(mode, "ring")) ring();
    else if (!strcmp(mode, "allreduce")) allreduce();
    else if (!strcmp(mode, "barrier")) barrier();
    else if (!strcmp(mode, "nonblocking")) nonblocking();
    else if (!strcmp(mode, "big")) big();
    else if (!strcmp(mode, "abort")) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 1) MPI_Abort(MPI_COMM_WORLD, 3);
        MPI_Barrier(MPI_COMM_WORLD);
    } else if (!strcmp(mode, "segv")) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 1) *(volatile int *)0 = 1;
        MPI_Barrier(MPI_COMM_WORLD);
    }
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
