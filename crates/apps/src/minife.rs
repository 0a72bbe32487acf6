//! MiniFE: finite-element assembly of a steady diffusion problem on a box of hex8 elements,
//! then an unpreconditioned CG solve (Mantevo MiniFE).
//!
//! Setup builds the mesh (node coordinates) and the CSR structure (27-point node graph). The
//! measured phase is what MiniFE times as assembly plus solve: per element, the 8x8 diffusion
//! matrix from 2x2x2 Gauss quadrature of trilinear shape functions (Jacobian, inverse,
//! gradients), summed into the sparse rows (binary search for each column, as MiniFE's
//! `sum_into_row`), Dirichlet conditions imposed by symmetric elimination, then CG until the
//! residual fell by `tol` (or `max_iter`). Threads own blocks of node planes and assemble every
//! element touching their rows (elements on a block border are integrated by both neighbours,
//! which avoids locks, as MiniFE's OpenMP variants do with colouring).
//!
//! Boundary conditions: u = 0 on the face x = 0, u = 1 on x = nx, natural elsewhere. The exact
//! solution u = x / nx is linear, so trilinear elements reproduce it exactly: verified when the
//! solve converged and every nodal value is within `1e-6` of it. The problem size is global
//! (strong scaling).

use crate::args::{ArgError, Args, Size};
use crate::cli::Report;
use crate::report::AppResult;
use crate::sparse::{self, CgVectors, Csr, Grid27};
use crate::team::{self, Shared};
use std::time::Instant;

/// Usage text.
pub const USAGE: &str = "\
minife: hex8 finite-element assembly + CG solve (Mantevo MiniFE), global problem size.

Options:
  --nx N --ny N --nz N   elements along each axis (default 80 80 80; small: 16 16 16)
  --max-iter N           CG iteration limit (default 1000)
  --tol X                stop when the residual fell by this factor (default 1e-10)";

/// Problem parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Elements along x.
    pub nx: usize,
    /// Elements along y.
    pub ny: usize,
    /// Elements along z (threads split node planes along z).
    pub nz: usize,
    /// CG iteration limit.
    pub max_iter: usize,
    /// Relative residual reduction that ends the solve.
    pub tol: f64,
}

impl Config {
    /// The preset for `size`.
    pub fn preset(size: Size) -> Self {
        let n = size.pick(16, 80, 140);
        Self {
            nx: n,
            ny: n,
            nz: n,
            max_iter: 1000,
            tol: 1e-10,
        }
    }

    /// The preset, overridden by command-line options.
    pub fn from_args(args: &mut Args, size: Size) -> Result<Self, ArgError> {
        let d = Self::preset(size);
        Ok(Self {
            nx: args.positive("nx")?.unwrap_or(d.nx),
            ny: args.positive("ny")?.unwrap_or(d.ny),
            nz: args.positive("nz")?.unwrap_or(d.nz),
            max_iter: args.positive("max-iter")?.unwrap_or(d.max_iter),
            tol: args.number("tol")?.unwrap_or(d.tol),
        })
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Threads used.
    pub threads: usize,
    /// The parameters.
    pub cfg: Config,
    /// Matrix rows (nodes).
    pub rows: usize,
    /// Matrix nonzeros.
    pub nnz: usize,
    /// Solver statistics.
    pub cg: sparse::CgStats,
    /// Largest deviation from the exact solution x / nx.
    pub max_error: f64,
    /// Setup seconds (mesh, matrix structure, first touch, thread start).
    pub setup_s: f64,
    /// Assembly seconds (part of the measured phase).
    pub assemble_s: f64,
    /// Solve seconds (part of the measured phase).
    pub solve_s: f64,
}

impl Outcome {
    /// Measured phase: assembly plus solve.
    pub fn time_s(&self) -> f64 {
        self.assemble_s + self.solve_s
    }

    /// The app's own check of its answer.
    pub fn verified(&self) -> bool {
        self.cg.normr <= self.cfg.tol.max(1e-14) * self.cg.normr0 && self.max_error <= 1e-6
    }

    /// Human lines and result line.
    pub fn report(&self) -> Report {
        let c = &self.cfg;
        let elements = c.nx * c.ny * c.nz;
        let result = AppResult::new("minife", self.threads, self.time_s(), self.verified())
            .with("nx", c.nx)
            .with("ny", c.ny)
            .with("nz", c.nz)
            .with("elements", elements)
            .with("rows", self.rows)
            .with("nnz", self.nnz)
            .with("iterations", self.cg.iterations)
            .with("residual", self.cg.normr / self.cg.normr0)
            .with("max_error", self.max_error)
            .with("assemble_s", self.assemble_s)
            .with("solve_s", self.solve_s)
            .with("setup_s", self.setup_s);
        let lines = vec![
            format!(
                "minife: {}x{}x{} hex8 elements, {} rows, {} nonzeros, {} threads",
                c.nx, c.ny, c.nz, self.rows, self.nnz, self.threads
            ),
            format!(
                "  {} CG iterations, residual {:.3e} -> {:.3e}, max error {:.3e}",
                self.cg.iterations, self.cg.normr0, self.cg.normr, self.max_error
            ),
            format!(
                "  setup {:.3} s, assembly {:.3} s, solve {:.3} s, measured {:.3} s",
                self.setup_s,
                self.assemble_s,
                self.solve_s,
                self.time_s()
            ),
        ];
        Report { result, lines }
    }
}

/// Gauss point derivatives of the 8 trilinear shape functions: `dn[g][a][d]`.
type ShapeGrads = [[[f64; 3]; 8]; 8];

/// Reference coordinates of the hex8 nodes (MiniFE's / Exodus ordering).
const CORNERS: [[f64; 3]; 8] = [
    [-1.0, -1.0, -1.0],
    [1.0, -1.0, -1.0],
    [1.0, 1.0, -1.0],
    [-1.0, 1.0, -1.0],
    [-1.0, -1.0, 1.0],
    [1.0, -1.0, 1.0],
    [1.0, 1.0, 1.0],
    [-1.0, 1.0, 1.0],
];

fn shape_grads() -> ShapeGrads {
    let g = 1.0 / 3f64.sqrt();
    let mut dn = [[[0.0; 3]; 8]; 8];
    for (gp, dg) in dn.iter_mut().enumerate() {
        let q = CORNERS[gp].map(|c| c * g);
        for (a, da) in dg.iter_mut().enumerate() {
            let c = CORNERS[a];
            let f = [1.0 + c[0] * q[0], 1.0 + c[1] * q[1], 1.0 + c[2] * q[2]];
            *da = [
                0.125 * c[0] * f[1] * f[2],
                0.125 * c[1] * f[0] * f[2],
                0.125 * c[2] * f[0] * f[1],
            ];
        }
    }
    dn
}

/// The 8x8 diffusion (stiffness) matrix of a hex8 element with node coordinates `x`.
pub fn element_stiffness(x: &[[f64; 3]; 8], dn: &ShapeGrads) -> [[f64; 8]; 8] {
    let mut ke = [[0.0; 8]; 8];
    for dg in dn {
        // Jacobian J[i][j] = d x_i / d xi_j.
        let mut j = [[0.0; 3]; 3];
        for (xa, da) in x.iter().zip(dg) {
            for i in 0..3 {
                for k in 0..3 {
                    j[i][k] += xa[i] * da[k];
                }
            }
        }
        let det = j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
            - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
            + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]);
        let inv_det = 1.0 / det;
        let inv = [
            [
                (j[1][1] * j[2][2] - j[1][2] * j[2][1]) * inv_det,
                (j[0][2] * j[2][1] - j[0][1] * j[2][2]) * inv_det,
                (j[0][1] * j[1][2] - j[0][2] * j[1][1]) * inv_det,
            ],
            [
                (j[1][2] * j[2][0] - j[1][0] * j[2][2]) * inv_det,
                (j[0][0] * j[2][2] - j[0][2] * j[2][0]) * inv_det,
                (j[0][2] * j[1][0] - j[0][0] * j[1][2]) * inv_det,
            ],
            [
                (j[1][0] * j[2][1] - j[1][1] * j[2][0]) * inv_det,
                (j[0][1] * j[2][0] - j[0][0] * j[2][1]) * inv_det,
                (j[0][0] * j[1][1] - j[0][1] * j[1][0]) * inv_det,
            ],
        ];
        // grad N_a = (dN_a/dxi) J^-1.
        let mut grad = [[0.0; 3]; 8];
        for (ga, da) in grad.iter_mut().zip(dg) {
            for i in 0..3 {
                ga[i] = da[0] * inv[0][i] + da[1] * inv[1][i] + da[2] * inv[2][i];
            }
        }
        // Unit Gauss weights.
        for a in 0..8 {
            for b in 0..8 {
                ke[a][b] += det
                    * (grad[a][0] * grad[b][0] + grad[a][1] * grad[b][1] + grad[a][2] * grad[b][2]);
            }
        }
    }
    ke
}

/// Generates, assembles and solves the problem on `threads` threads.
pub fn run(cfg: &Config, threads: usize) -> Outcome {
    let threads = threads.max(1);
    let setup_start = Instant::now();
    let grid = Grid27 {
        nx: cfg.nx + 1,
        ny: cfg.ny + 1,
        nz: cfg.nz + 1,
    };
    let n = grid.rows();
    let mut a = Csr::alloc(grid);
    let nnz = a.vals.len();
    let mut coords = vec![[0.0f64; 3]; n];
    let mut vecs: Vec<Vec<f64>> = (0..5).map(|_| vec![0.0; n]).collect();
    let [b, x, r, p, ap] = vecs.as_mut_slice() else {
        unreachable!()
    };
    let shared_a = a.share();
    let shared_coords = Shared::new(&mut coords);
    let v = CgVectors {
        b: Shared::new(b),
        x: Shared::new(x),
        r: Shared::new(r),
        p: Shared::new(p),
        ap: Shared::new(ap),
    };
    let dn = shape_grads();
    let nx = cfg.nx;
    let out = team::run(threads, |ctx| {
        let planes = ctx.range(grid.nz);
        let rows = planes.start * grid.plane()..planes.end * grid.plane();
        sparse::fill_structure(grid, &shared_a, planes.clone(), |_, _| 0.0);
        // SAFETY: own rows only, before the barrier.
        unsafe {
            for (c, i) in shared_coords
                .part_mut(rows.clone())
                .iter_mut()
                .zip(rows.clone())
            {
                let (x, y, z) = grid.coords(i);
                *c = [x as f64, y as f64, z as f64];
            }
            for s in [&v.b, &v.x, &v.r, &v.p, &v.ap] {
                s.part_mut(rows.clone()).fill(0.0);
            }
        }
        ctx.barrier();
        let start = ctx.is_leader().then(Instant::now);
        assemble(
            cfg,
            grid,
            &shared_a,
            &shared_coords,
            &v,
            planes.clone(),
            &dn,
        );
        ctx.barrier();
        let assembled = start.map(|s| s.elapsed().as_secs_f64());
        let stats = sparse::cg(ctx, &shared_a, &v, rows.clone(), cfg.max_iter, cfg.tol);
        ctx.barrier();
        let elapsed = start.map(|s| s.elapsed().as_secs_f64());
        // SAFETY: the solve is over; reads only.
        let x = unsafe { v.x.get() };
        let err = rows.fold(0.0f64, |m, i| {
            m.max((x[i] - (grid.coords(i).0 as f64) / nx as f64).abs())
        });
        (stats, assembled, elapsed, ctx.max(err))
    });
    let (cg, assembled, elapsed, max_error) = out[0];
    let (assemble_s, time_s) = (
        assembled.expect("leader times"),
        elapsed.expect("leader times"),
    );
    let setup_s = setup_start.elapsed().as_secs_f64() - time_s;
    Outcome {
        threads,
        cfg: *cfg,
        rows: n,
        nnz,
        cg,
        max_error,
        setup_s,
        assemble_s,
        solve_s: time_s - assemble_s,
    }
}

/// Assembles the rows of node `planes` (element integration, sum into rows, Dirichlet).
fn assemble(
    cfg: &Config,
    grid: Grid27,
    a: &sparse::CsrShared<'_>,
    coords: &Shared<'_, [f64; 3]>,
    v: &CgVectors<'_>,
    planes: std::ops::Range<usize>,
    dn: &ShapeGrads,
) {
    let rows = planes.start * grid.plane()..planes.end * grid.plane();
    // SAFETY: the structure and coordinates are read-only now (filled before a barrier); this
    // thread writes only the values and right-hand side of its own rows.
    let (row_ptr, cols, coords) = unsafe { (a.row_ptr.get(), a.cols.get(), coords.get()) };
    let nnz_range = row_ptr[rows.start]..row_ptr[rows.end];
    // SAFETY: as above; the value range of own rows is disjoint from other threads'.
    let (vals, b) = unsafe {
        (
            a.vals.part_mut(nnz_range.clone()),
            v.b.part_mut(rows.clone()),
        )
    };
    let base = nnz_range.start;
    let mut node = [0usize; 8];
    let mut x = [[0.0; 3]; 8];
    for ez in planes.start.saturating_sub(1)..planes.end.min(cfg.nz) {
        for ey in 0..cfg.ny {
            for ex in 0..cfg.nx {
                for (a, c) in CORNERS.iter().enumerate() {
                    let (dx, dy, dz) = (
                        usize::from(c[0] > 0.0),
                        usize::from(c[1] > 0.0),
                        usize::from(c[2] > 0.0),
                    );
                    node[a] = grid.index(ex + dx, ey + dy, ez + dz);
                    x[a] = coords[node[a]];
                }
                let ke = element_stiffness(&x, dn);
                for (ra, &gi) in node.iter().enumerate() {
                    if !rows.contains(&gi) {
                        continue;
                    }
                    let (s, e) = (row_ptr[gi], row_ptr[gi + 1]);
                    let row_cols = &cols[s..e];
                    for (cb, &gj) in node.iter().enumerate() {
                        let k = row_cols
                            .binary_search(&(gj as u32))
                            .expect("element node is in the row's stencil");
                        vals[s - base + k] += ke[ra][cb];
                    }
                }
            }
        }
    }
    // Dirichlet: u = 0 at x = 0, u = 1 at x = nx, eliminated symmetrically.
    let bc = |node: usize| match node % grid.nx {
        0 => Some(0.0),
        i if i == cfg.nx => Some(1.0),
        _ => None,
    };
    for (bi, i) in b.iter_mut().zip(rows.clone()) {
        let (s, e) = (row_ptr[i] - base, row_ptr[i + 1] - base);
        let row_cols = &cols[s + base..e + base];
        let row_vals = &mut vals[s..e];
        if let Some(value) = bc(i) {
            for (vv, &c) in row_vals.iter_mut().zip(row_cols) {
                *vv = if c as usize == i { 1.0 } else { 0.0 };
            }
            *bi = value;
        } else {
            for (vv, &c) in row_vals.iter_mut().zip(row_cols) {
                if let Some(value) = bc(c as usize) {
                    *bi -= *vv * value;
                    *vv = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_cube_stiffness_is_the_textbook_matrix() {
        // For the unit cube the hex8 Laplacian has diagonal 1/3 and rows summing to zero.
        let x = CORNERS.map(|c| c.map(|v| (v + 1.0) / 2.0));
        let ke = element_stiffness(&x, &shape_grads());
        for a in 0..8 {
            assert!((ke[a][a] - 1.0 / 3.0).abs() < 1e-14, "{}", ke[a][a]);
            assert!(ke[a].iter().sum::<f64>().abs() < 1e-14);
            for b in 0..8 {
                assert!((ke[a][b] - ke[b][a]).abs() < 1e-15);
            }
        }
        // Opposite corners (0 and 6) couple with -1/12; edge neighbours (0 and 1) with 0.
        assert!((ke[0][6] + 1.0 / 12.0).abs() < 1e-14, "{}", ke[0][6]);
        assert!(ke[0][1].abs() < 1e-14, "{}", ke[0][1]);
    }

    #[test]
    fn stretched_element_scales_like_the_integral() {
        // Doubling every length doubles the stiffness (h^3 volume / h^2 gradients).
        let dn = shape_grads();
        let x1 = CORNERS.map(|c| c.map(|v| (v + 1.0) / 2.0));
        let x2 = x1.map(|p| p.map(|v| 2.0 * v + 5.0));
        let (k1, k2) = (element_stiffness(&x1, &dn), element_stiffness(&x2, &dn));
        for a in 0..8 {
            for b in 0..8 {
                assert!((k2[a][b] - 2.0 * k1[a][b]).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn solves_the_linear_problem_exactly_with_any_thread_count() {
        let cfg = Config {
            nx: 7,
            ny: 4,
            nz: 5,
            max_iter: 500,
            tol: 1e-12,
        };
        let reference = run(&cfg, 1);
        assert!(reference.verified(), "{reference:?}");
        assert!(reference.max_error < 1e-9, "{reference:?}");
        for threads in [2, 3, 6] {
            let o = run(&cfg, threads);
            assert!(o.verified(), "{threads} threads: {o:?}");
            assert!(o.cg.iterations.abs_diff(reference.cg.iterations) <= 2);
        }
    }

    #[test]
    fn iteration_limit_fails_verification() {
        let o = run(
            &Config {
                nx: 12,
                ny: 3,
                nz: 3,
                max_iter: 2,
                tol: 1e-10,
            },
            2,
        );
        assert_eq!(o.cg.iterations, 2);
        assert!(!o.verified());
    }
}
