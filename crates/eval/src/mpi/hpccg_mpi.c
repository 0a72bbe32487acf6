/* MPI HPCCG of `dualstack bench mpi` and the isolation experiment's `hpccg-mpi` app, written
   for this project after Mantevo HPCCG (and crates/apps/src/hpccg.rs): unpreconditioned
   conjugate gradients on a 27-point 3-D stencil (27 on the diagonal, -1 off it). Each rank
   owns an NX x NY x NZ block; blocks are stacked along z (weak scaling), so every matrix-vector
   product first exchanges one plane of p with each z neighbour (halo exchange); the dot
   products are MPI_Allreduce sums. The right-hand side is b = A * ones, so the exact solution
   is all ones; the initial guess is zero and the solver runs a fixed number of iterations.

   usage: hpccg_mpi [NX NY NZ [ITERATIONS]]   (default 32 32 32 150)

   Rank 0 prints (the solve time is the slowest rank's):
     hpccg-mpi: grid NXxNYxNZ (ROWS rows, NNZ nonzeros), R ranks
     hpccg-mpi: I iterations, residual R0 -> R, max error E
     hpccg-mpi: solve T s, M MFLOPS
     hpccg-mpi TIME_S MFLOPS ITERATIONS RESIDUAL_RATIO MAX_ERROR
     PASS | FAIL
   and exits 0 on PASS, 1 on FAIL. Verified when the residual fell by at least 1e-8 and every
   entry of the solution is within 1e-6 of one. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int rank, size;
static long nx, ny, nz, plane;

/* Local rows index 0..nx*ny*nz; a column indexes the halo-extended vector: plane 0 is the
   neighbour below, planes 1..nz our own, plane nz+1 the neighbour above. */
typedef struct {
    long rows;
    long *row_ptr;
    int *cols;
    double *vals;
} Csr;

static void *alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "hpccg-mpi: out of memory (%zu bytes)\n", n);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

static Csr generate(double *b) {
    long gnz = nz * size;
    Csr a;
    a.rows = plane * nz;
    a.row_ptr = alloc(sizeof(long) * (size_t)(a.rows + 1));
    a.cols = alloc(sizeof(int) * (size_t)a.rows * 27);
    a.vals = alloc(sizeof(double) * (size_t)a.rows * 27);
    long k = 0;
    a.row_ptr[0] = 0;
    for (long iz = 0; iz < nz; iz++)
        for (long iy = 0; iy < ny; iy++)
            for (long ix = 0; ix < nx; ix++) {
                long row = iz * plane + iy * nx + ix, gz = rank * nz + iz, n = 0;
                for (long dz = -1; dz <= 1; dz++)
                    for (long dy = -1; dy <= 1; dy++)
                        for (long dx = -1; dx <= 1; dx++) {
                            long x = ix + dx, y = iy + dy, z = gz + dz;
                            if (x < 0 || x >= nx || y < 0 || y >= ny || z < 0 || z >= gnz)
                                continue;
                            a.cols[k] = (int)((iz + dz + 1) * plane + y * nx + x);
                            a.vals[k] = dx == 0 && dy == 0 && dz == 0 ? 27.0 : -1.0;
                            k++;
                            n++;
                        }
                a.row_ptr[row + 1] = k;
                b[row] = 27.0 - (double)(n - 1);
            }
    return a;
}

/* Fill p's halo planes from the z neighbours (one plane each way). */
static void exchange(double *p) {
    MPI_Request req[4];
    MPI_Status st[4];
    int n = 0;
    if (rank > 0) {
        MPI_Irecv(p, (int)plane, MPI_DOUBLE, rank - 1, 1, MPI_COMM_WORLD, &req[n++]);
        MPI_Isend(p + plane, (int)plane, MPI_DOUBLE, rank - 1, 0, MPI_COMM_WORLD, &req[n++]);
    }
    if (rank < size - 1) {
        MPI_Irecv(p + (nz + 1) * plane, (int)plane, MPI_DOUBLE, rank + 1, 0, MPI_COMM_WORLD,
                  &req[n++]);
        MPI_Isend(p + nz * plane, (int)plane, MPI_DOUBLE, rank + 1, 1, MPI_COMM_WORLD,
                  &req[n++]);
    }
    MPI_Waitall(n, req, st);
}

static void spmv(const Csr *a, const double *x, double *y) {
    for (long i = 0; i < a->rows; i++) {
        double s = 0;
        for (long k = a->row_ptr[i]; k < a->row_ptr[i + 1]; k++) s += a->vals[k] * x[a->cols[k]];
        y[i] = s;
    }
}

static double dot(long n, const double *x, const double *y) {
    double local = 0, global;
    for (long i = 0; i < n; i++) local += x[i] * y[i];
    MPI_Allreduce(&local, &global, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return global;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    nx = argc > 3 ? atol(argv[1]) : 32;
    ny = argc > 3 ? atol(argv[2]) : 32;
    nz = argc > 3 ? atol(argv[3]) : 32;
    long iterations = argc > 4 ? atol(argv[4]) : 150;
    if (nx < 1 || ny < 1 || nz < 1 || iterations < 1 || nx * ny * (nz + 2) > 1L << 30) {
        if (rank == 0) fprintf(stderr, "usage: hpccg_mpi [NX NY NZ [ITERATIONS]]\n");
        MPI_Finalize();
        return 2;
    }
    plane = nx * ny;
    long n = plane * nz;
    double *b = alloc(sizeof(double) * (size_t)n), *x = alloc(sizeof(double) * (size_t)n);
    double *r = alloc(sizeof(double) * (size_t)n), *ap = alloc(sizeof(double) * (size_t)n);
    double *p = alloc(sizeof(double) * (size_t)(n + 2 * plane)); /* with both halo planes */
    Csr a = generate(b);
    for (long i = 0; i < n + 2 * plane; i++) p[i] = 0;
    for (long i = 0; i < n; i++) {
        x[i] = 0;
        r[i] = b[i]; /* r = b - A * 0 */
        ap[i] = 0;
    }
    double *pl = p + plane; /* our own rows of p */
    long nnz_local = a.row_ptr[n], nnz;
    MPI_Allreduce(&nnz_local, &nnz, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);

    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    double rtrans = dot(n, r, r), normr0 = sqrt(rtrans), oldrtrans = rtrans;
    for (long k = 0; k < iterations; k++) {
        double beta = k == 0 ? 0.0 : rtrans / oldrtrans;
        for (long i = 0; i < n; i++) pl[i] = r[i] + beta * pl[i];
        exchange(p);
        spmv(&a, p, ap);
        double alpha = rtrans / dot(n, pl, ap);
        for (long i = 0; i < n; i++) {
            x[i] += alpha * pl[i];
            r[i] -= alpha * ap[i];
        }
        oldrtrans = rtrans;
        rtrans = dot(n, r, r);
    }
    double dt = MPI_Wtime() - t0, time_s;
    MPI_Allreduce(&dt, &time_s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

    double err_local = 0, err;
    for (long i = 0; i < n; i++) err_local = fmax(err_local, fabs(x[i] - 1.0));
    MPI_Allreduce(&err_local, &err, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    double normr = sqrt(rtrans), ratio = normr0 > 0 ? normr / normr0 : 0;
    int pass = normr <= 1e-8 * normr0 && err <= 1e-6;
    /* HPCCG's count: SpMV 2 per nonzero, 2 dot products and 3 vector updates per row. */
    double rows = (double)n * size;
    double flops = (double)iterations * (2.0 * (double)nnz + 2.0 * 2.0 * rows + 3.0 * 2.0 * rows);
    double mflops = flops / time_s / 1e6;
    if (rank == 0) {
        printf("hpccg-mpi: grid %ldx%ldx%ld (%.0f rows, %ld nonzeros), %d ranks\n", nx, ny,
               nz * size, rows, nnz, size);
        printf("hpccg-mpi: %ld iterations, residual %.3e -> %.3e, max error %.3e\n", iterations,
               normr0, normr, err);
        printf("hpccg-mpi: solve %.4f s, %.1f MFLOPS\n", time_s, mflops);
        printf("hpccg-mpi %.6f %.2f %ld %.3e %.3e\n", time_s, mflops, iterations, ratio, err);
        printf("%s\n", pass ? "PASS" : "FAIL");
        fflush(stdout);
    }
    MPI_Finalize();
    return pass ? 0 : 1;
}
