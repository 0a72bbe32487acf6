//! HPCCG: unpreconditioned conjugate gradients on a 27-point 3-D stencil (Mantevo HPCCG).
//!
//! As in the original, each thread (there: MPI rank) owns an `nx * ny * nz` block, blocks are
//! stacked along z, the matrix has 27 on the diagonal and -1 off it, the right-hand side is
//! `A * 1` so the exact solution is all ones, the initial guess is zero, and the solver runs a
//! fixed number of iterations (tolerance 0). Work therefore grows with the thread count (weak
//! scaling). The measured phase is the CG solve; generating the matrix is setup.
//!
//! Verified when the residual fell by at least `1e-8` and the solution is within `1e-6` of all
//! ones.

use crate::args::{ArgError, Args, Size};
use crate::cli::Report;
use crate::report::AppResult;
use crate::sparse::{self, CgVectors, Csr, Grid27};
use crate::team::{self, Shared};
use std::time::Instant;

/// Usage text.
pub const USAGE: &str = "\
hpccg: conjugate gradients on a 27-point 3-D stencil (Mantevo HPCCG), weak scaling.

Options:
  --nx N --ny N --nz N   grid points per thread (default 80 80 80; small: 16 16 16)
  --iterations N         CG iterations (default 300; small 150)";

/// Problem parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Points along x (per thread).
    pub nx: usize,
    /// Points along y (per thread).
    pub ny: usize,
    /// Points along z per thread (blocks stack along z).
    pub nz: usize,
    /// CG iterations.
    pub iterations: usize,
}

impl Config {
    /// The preset for `size`.
    pub fn preset(size: Size) -> Self {
        // HPCCG's usual 150 iterations would need ~100^3 points per thread (370 MB) for the
        // default run time; 80^3 (190 MB per thread) with 300 iterations keeps zones small.
        let n = size.pick(16, 80, 128);
        Self {
            nx: n,
            ny: n,
            nz: n,
            iterations: size.pick(150, 300, 150),
        }
    }

    /// The preset, overridden by command-line options.
    pub fn from_args(args: &mut Args, size: Size) -> Result<Self, ArgError> {
        let d = Self::preset(size);
        Ok(Self {
            nx: args.positive("nx")?.unwrap_or(d.nx),
            ny: args.positive("ny")?.unwrap_or(d.ny),
            nz: args.positive("nz")?.unwrap_or(d.nz),
            iterations: args.positive("iterations")?.unwrap_or(d.iterations),
        })
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Threads used.
    pub threads: usize,
    /// Global grid.
    pub grid: Grid27,
    /// Matrix nonzeros.
    pub nnz: usize,
    /// Solver statistics.
    pub cg: sparse::CgStats,
    /// Largest deviation of the solution from the exact all-ones solution.
    pub max_error: f64,
    /// Setup seconds (matrix generation, first touch, thread start).
    pub setup_s: f64,
    /// Measured-phase seconds (the CG solve).
    pub time_s: f64,
}

impl Outcome {
    /// Floating-point operations of the solve (HPCCG's count).
    pub fn flops(&self) -> f64 {
        let n = self.grid.rows() as f64;
        let it = self.cg.iterations as f64;
        it * (2.0 * self.nnz as f64 + 2.0 * 2.0 * n + 3.0 * 2.0 * n)
    }

    /// The app's own check of its answer.
    pub fn verified(&self) -> bool {
        let reduced = self.cg.normr <= 1e-8 * self.cg.normr0;
        reduced && self.max_error <= 1e-6
    }

    /// Human lines and result line.
    pub fn report(&self) -> Report {
        let g = self.grid;
        let gflops = self.flops() / self.time_s / 1e9;
        let result = AppResult::new("hpccg", self.threads, self.time_s, self.verified())
            .with("nx", g.nx)
            .with("ny", g.ny)
            .with("nz", g.nz)
            .with("rows", g.rows())
            .with("nnz", self.nnz)
            .with("iterations", self.cg.iterations)
            .with("residual", self.cg.normr / self.cg.normr0)
            .with("max_error", self.max_error)
            .with("gflops", gflops)
            .with("setup_s", self.setup_s);
        let lines = vec![
            format!(
                "hpccg: grid {}x{}x{} ({} rows, {} nonzeros), {} threads",
                g.nx,
                g.ny,
                g.nz,
                g.rows(),
                self.nnz,
                self.threads
            ),
            format!(
                "  {} iterations, residual {:.3e} -> {:.3e}, max error {:.3e}",
                self.cg.iterations, self.cg.normr0, self.cg.normr, self.max_error
            ),
            format!(
                "  setup {:.3} s, solve {:.3} s ({gflops:.2} GFLOP/s)",
                self.setup_s, self.time_s
            ),
        ];
        Report { result, lines }
    }
}

/// Generates the problem and solves it on `threads` threads.
pub fn run(cfg: &Config, threads: usize) -> Outcome {
    let threads = threads.max(1);
    let setup_start = Instant::now();
    let grid = Grid27 {
        nx: cfg.nx,
        ny: cfg.ny,
        nz: cfg.nz * threads,
    };
    let n = grid.rows();
    let mut a = Csr::alloc(grid);
    let nnz = a.vals.len();
    let mut vecs: Vec<Vec<f64>> = (0..5).map(|_| vec![0.0; n]).collect();
    let [b, x, r, p, ap] = vecs.as_mut_slice() else {
        unreachable!()
    };
    let (shared_a, v) = (
        a.share(),
        CgVectors {
            b: Shared::new(b),
            x: Shared::new(x),
            r: Shared::new(r),
            p: Shared::new(p),
            ap: Shared::new(ap),
        },
    );
    let out = team::run(threads, |ctx| {
        let planes = ctx.tid * cfg.nz..(ctx.tid + 1) * cfg.nz;
        let rows = planes.start * grid.plane()..planes.end * grid.plane();
        sparse::fill_structure(
            grid,
            &shared_a,
            planes,
            |i, j| if i == j { 27.0 } else { -1.0 },
        );
        // First touch of the vectors by their owner; b = A * ones is 27 - (neighbours).
        // SAFETY: each thread writes only its own rows, before the barrier.
        unsafe {
            for (bi, i) in v.b.part_mut(rows.clone()).iter_mut().zip(rows.clone()) {
                *bi = 27.0 - (grid.row_nnz(i) as f64 - 1.0);
            }
            for s in [&v.x, &v.r, &v.p, &v.ap] {
                s.part_mut(rows.clone()).fill(0.0);
            }
        }
        ctx.barrier();
        let start = ctx.is_leader().then(Instant::now);
        let stats = sparse::cg(ctx, &shared_a, &v, rows.clone(), cfg.iterations, 0.0);
        ctx.barrier();
        let elapsed = start.map(|s| s.elapsed().as_secs_f64());
        // SAFETY: the solve is over (barrier above); reads of own rows only.
        let x = unsafe { v.x.get() };
        let err = x[rows].iter().fold(0.0f64, |m, xi| m.max((xi - 1.0).abs()));
        (stats, elapsed, ctx.max(err))
    });
    let (stats, elapsed, max_error) = out[0];
    let time_s = elapsed.expect("leader times the solve");
    let setup_s = setup_start.elapsed().as_secs_f64() - time_s;
    Outcome {
        threads,
        grid,
        nnz,
        cg: stats,
        max_error,
        setup_s,
        time_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_all_ones_with_any_thread_count() {
        let cfg = Config {
            nx: 6,
            ny: 5,
            nz: 4,
            iterations: 150,
        };
        for threads in [1, 2, 3] {
            let o = run(&cfg, threads);
            assert_eq!(o.grid.rows(), 6 * 5 * 4 * threads);
            assert!(o.verified(), "{o:?}");
            assert!(o.max_error < 1e-10, "{o:?}");
        }
    }

    #[test]
    fn too_few_iterations_fail_verification() {
        let o = run(
            &Config {
                nx: 12,
                ny: 12,
                nz: 12,
                iterations: 3,
            },
            1,
        );
        assert_eq!(o.cg.iterations, 3);
        assert!(!o.verified(), "{o:?}");
    }

    #[test]
    fn matrix_rows_match_the_stencil() {
        let grid = Grid27 {
            nx: 3,
            ny: 4,
            nz: 5,
        };
        let mut a = Csr::alloc(grid);
        let s = a.share();
        team::run(2, |ctx| {
            sparse::fill_structure(grid, &s, ctx.range(grid.nz), |i, j| (i * 1000 + j) as f64)
        });
        for i in 0..grid.rows() {
            let (x, y, z) = grid.coords(i);
            let cols = &a.cols[a.row_ptr[i]..a.row_ptr[i + 1]];
            let expect: Vec<u32> = (0..grid.rows())
                .filter(|&j| {
                    let (u, v, w) = grid.coords(j);
                    x.abs_diff(u) <= 1 && y.abs_diff(v) <= 1 && z.abs_diff(w) <= 1
                })
                .map(|j| j as u32)
                .collect();
            assert_eq!(cols, expect.as_slice(), "row {i}");
            for k in a.row_ptr[i]..a.row_ptr[i + 1] {
                assert_eq!(a.vals[k], (i * 1000 + a.cols[k] as usize) as f64);
            }
        }
        assert_eq!(a.row_ptr[grid.rows()], grid.nnz());
    }
}
