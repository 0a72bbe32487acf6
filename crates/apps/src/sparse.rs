//! Sparse matrices on structured 3-D grids (27-point stencils) and the conjugate-gradient solver
//! shared by HPCCG and MiniFE.
//!
//! Storage is plain CSR (row pointers, `u32` column indices, `f64` values), as in the originals.
//! Rows are numbered `x + nx * (y + ny * z)` and threads own contiguous blocks of z-planes, so
//! each thread builds, owns and first-touches its rows.

use crate::team::{Ctx, Shared};
use std::ops::Range;

/// A box of `nx * ny * nz` grid points coupled by the 27-point stencil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid27 {
    /// Points along x.
    pub nx: usize,
    /// Points along y.
    pub ny: usize,
    /// Points along z (the dimension threads split).
    pub nz: usize,
}

/// Number of stencil neighbours (itself included) of coordinate `c` in a line of `n` points.
fn line_count(c: usize, n: usize) -> usize {
    1 + usize::from(c > 0) + usize::from(c + 1 < n)
}

impl Grid27 {
    /// Number of rows (points).
    pub fn rows(&self) -> usize {
        self.nx * self.ny * self.nz
    }

    /// Points per z-plane.
    pub fn plane(&self) -> usize {
        self.nx * self.ny
    }

    /// Nonzeros in the rows of planes `0..z`.
    pub fn nnz_before_plane(&self, z: usize) -> usize {
        // Sum over a line of per-coordinate counts is 3n - 2; the stencil count is a product.
        let per_plane = (3 * self.nx - 2) * (3 * self.ny - 2);
        per_plane * (0..z).map(|k| line_count(k, self.nz)).sum::<usize>()
    }

    /// Nonzeros in row `i`.
    pub fn row_nnz(&self, i: usize) -> usize {
        let (x, y, z) = self.coords(i);
        line_count(x, self.nx) * line_count(y, self.ny) * line_count(z, self.nz)
    }

    /// Total nonzeros.
    pub fn nnz(&self) -> usize {
        self.nnz_before_plane(self.nz)
    }

    /// Coordinates of row `i`.
    pub fn coords(&self, i: usize) -> (usize, usize, usize) {
        (i % self.nx, (i / self.nx) % self.ny, i / self.plane())
    }

    /// Row number of `(x, y, z)`.
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        x + self.nx * (y + self.ny * z)
    }
}

/// A CSR matrix whose arrays team threads fill and read through [`Shared`] views.
#[derive(Debug, Default)]
pub struct Csr {
    /// `row_ptr[i]..row_ptr[i + 1]` are row i's entries.
    pub row_ptr: Vec<usize>,
    /// Column of each entry.
    pub cols: Vec<u32>,
    /// Value of each entry.
    pub vals: Vec<f64>,
}

impl Csr {
    /// Allocates (without touching: threads first-touch their own rows) a matrix for `grid`.
    pub fn alloc(grid: Grid27) -> Self {
        assert!(
            grid.rows() < u32::MAX as usize,
            "grid of {} points is too large for u32 column indices",
            grid.rows()
        );
        Self {
            row_ptr: vec![0; grid.rows() + 1],
            cols: vec![0; grid.nnz()],
            vals: vec![0.0; grid.nnz()],
        }
    }

    /// Shared views for a team.
    pub fn share(&mut self) -> CsrShared<'_> {
        CsrShared {
            row_ptr: Shared::new(&mut self.row_ptr),
            cols: Shared::new(&mut self.cols),
            vals: Shared::new(&mut self.vals),
        }
    }
}

/// Team view of a [`Csr`].
pub struct CsrShared<'a> {
    /// See [`Csr::row_ptr`].
    pub row_ptr: Shared<'a, usize>,
    /// See [`Csr::cols`].
    pub cols: Shared<'a, u32>,
    /// See [`Csr::vals`].
    pub vals: Shared<'a, f64>,
}

/// Fills the structure (sorted 27-point columns) of the rows in `planes`, and their values
/// with `value(row, col)`. Called by each thread for its own planes; the thread owning the last
/// plane also writes the final row pointer.
pub fn fill_structure(
    grid: Grid27,
    a: &CsrShared<'_>,
    planes: Range<usize>,
    value: impl Fn(usize, usize) -> f64,
) {
    let rows = planes.start * grid.plane()..planes.end * grid.plane();
    let nnz = grid.nnz_before_plane(planes.start)..grid.nnz_before_plane(planes.end);
    let last = planes.end == grid.nz;
    // SAFETY: rows, and entries, of distinct plane blocks are disjoint; the final row pointer
    // belongs to the owner of the last plane only. Readers wait for a barrier.
    let (row_ptr, cols, vals) = unsafe {
        (
            a.row_ptr.part_mut(rows.start..rows.end + usize::from(last)),
            a.cols.part_mut(nnz.clone()),
            a.vals.part_mut(nnz.clone()),
        )
    };
    let mut k = 0;
    for (slot, i) in row_ptr.iter_mut().zip(rows.clone()) {
        *slot = nnz.start + k;
        let (x, y, z) = grid.coords(i);
        for zz in z.saturating_sub(1)..(z + 2).min(grid.nz) {
            for yy in y.saturating_sub(1)..(y + 2).min(grid.ny) {
                for xx in x.saturating_sub(1)..(x + 2).min(grid.nx) {
                    let j = grid.index(xx, yy, zz);
                    cols[k] = j as u32;
                    vals[k] = value(i, j);
                    k += 1;
                }
            }
        }
    }
    assert_eq!(
        k,
        nnz.len(),
        "27-point row count formula disagrees with the stencil"
    );
    if last {
        row_ptr[rows.len()] = nnz.end;
    }
}

/// `y = A x` for `rows` (y holds exactly those rows).
#[inline]
pub fn spmv(
    row_ptr: &[usize],
    cols: &[u32],
    vals: &[f64],
    x: &[f64],
    y: &mut [f64],
    rows: Range<usize>,
) {
    let ptr = &row_ptr[rows.start..=rows.end];
    for (yi, w) in y.iter_mut().zip(ptr.windows(2)) {
        let (c, v) = (&cols[w[0]..w[1]], &vals[w[0]..w[1]]);
        // Four partial sums break the add dependency chain of a 27-term row.
        let mut s = [0.0f64; 4];
        let (c4, v4) = (c.chunks_exact(4), v.chunks_exact(4));
        let (cr, vr) = (c4.remainder(), v4.remainder());
        for (cc, vv) in c4.zip(v4) {
            for l in 0..4 {
                s[l] += vv[l] * x[cc[l] as usize];
            }
        }
        for (cc, vv) in cr.iter().zip(vr) {
            s[0] += vv * x[*cc as usize];
        }
        *yi = (s[0] + s[1]) + (s[2] + s[3]);
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut s = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4
        .remainder()
        .iter()
        .zip(b4.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a4.zip(b4) {
        for l in 0..4 {
            s[l] += x[l] * y[l];
        }
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// Vectors of a CG solve, shared by the team; each thread owns the same rows in all of them.
pub struct CgVectors<'a> {
    /// Right-hand side.
    pub b: Shared<'a, f64>,
    /// Solution (in: initial guess).
    pub x: Shared<'a, f64>,
    /// Residual.
    pub r: Shared<'a, f64>,
    /// Search direction (read by every thread in the product).
    pub p: Shared<'a, f64>,
    /// `A p`.
    pub ap: Shared<'a, f64>,
}

/// How a CG solve ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgStats {
    /// Iterations done.
    pub iterations: usize,
    /// Residual norm of the initial guess.
    pub normr0: f64,
    /// Residual norm at the end (from the recurrence).
    pub normr: f64,
}

/// Unpreconditioned conjugate gradients, HPCCG's loop. Runs at most `max_iter` iterations and
/// stops early once `normr <= tol * normr0` (`tol = 0` runs all iterations unless the residual
/// vanishes). Every team thread calls this with its own `rows`; all get the same stats.
///
/// Per iteration: one sparse product, two dot products, three vector updates, one barrier and
/// two reductions.
pub fn cg(
    ctx: &Ctx,
    a: &CsrShared<'_>,
    v: &CgVectors<'_>,
    rows: Range<usize>,
    max_iter: usize,
    tol: f64,
) -> CgStats {
    // SAFETY: (whole function) each thread writes only its own `rows` of x, r, p, ap; the only
    // cross-thread reads are of `p` (in the product) and of the matrix, which nobody writes
    // here. A barrier (explicit or inside a reduction) separates every write of `p` from other
    // threads' reads of it, in both directions.
    let (row_ptr, cols, vals) = unsafe { (a.row_ptr.get(), a.cols.get(), a.vals.get()) };
    // SAFETY: b is read-only here.
    let b = unsafe { v.b.get() };
    #[allow(clippy::mut_from_ref)]
    fn part<'s>(s: &'s Shared<'_, f64>, rows: &Range<usize>) -> &'s mut [f64] {
        // SAFETY: see the function comment: only the calling thread's own rows.
        unsafe { s.part_mut(rows.clone()) }
    }
    let own = |s| part(s, &rows);
    let (x, r, ap) = (own(&v.x), own(&v.r), own(&v.ap));
    let b = &b[rows.clone()];

    // r = b - A x, through p = x so the product reads a shared vector.
    own(&v.p).copy_from_slice(x);
    ctx.barrier();
    // SAFETY: p is complete (barrier above) and nobody writes it until the next barrier.
    spmv(row_ptr, cols, vals, unsafe { v.p.get() }, ap, rows.clone());
    for ((ri, bi), ai) in r.iter_mut().zip(b).zip(ap.iter()) {
        *ri = bi - ai;
    }
    let mut rtrans = ctx.sum(dot(r, r));
    let normr0 = rtrans.sqrt();
    let mut normr = normr0;
    let mut iterations = 0;
    let mut prev_rtrans = rtrans;
    for k in 1..=max_iter {
        if normr <= tol * normr0 || normr == 0.0 {
            break;
        }
        let p = own(&v.p);
        if k == 1 {
            p.copy_from_slice(r);
        } else {
            let beta = rtrans / prev_rtrans;
            for (pi, ri) in p.iter_mut().zip(r.iter()) {
                *pi = ri + beta * *pi;
            }
        }
        ctx.barrier();
        // SAFETY: p is complete (barrier above); the next write to p is after two reductions.
        let pall = unsafe { v.p.get() };
        spmv(row_ptr, cols, vals, pall, ap, rows.clone());
        let p = &pall[rows.clone()];
        let alpha = rtrans / ctx.sum(dot(p, ap));
        for (xi, pi) in x.iter_mut().zip(p) {
            *xi += alpha * pi;
        }
        for (ri, ai) in r.iter_mut().zip(ap.iter()) {
            *ri -= alpha * ai;
        }
        prev_rtrans = rtrans;
        rtrans = ctx.sum(dot(r, r));
        normr = rtrans.sqrt();
        iterations = k;
    }
    CgStats {
        iterations,
        normr0,
        normr,
    }
}
