//! AMG stand-in: a geometric multigrid V-cycle solver for the 3-D Poisson equation.
//!
//! The paper ran LLNL's AMG (BoomerAMG), whose solve phase is V-cycles of smoothing, residual,
//! restriction and interpolation sweeps over a grid hierarchy: memory-bound stencil passes that
//! get shorter and more synchronisation-heavy on coarse levels. This keeps that character with
//! a geometric hierarchy: the 7-point Laplacian on the unit cube with zero Dirichlet boundary,
//! `n` interior points per axis, coarsened by two while `n` is odd and at least 3, red-black
//! Gauss-Seidel smoothing (2 pre, 2 post), full-weighting restriction, trilinear interpolation
//! and many smoothing sweeps on the coarsest grid. Threads own blocks of z-planes on every
//! level. The measured phase is the V-cycles plus the final residual norm.
//!
//! Right-hand side `f = 3 pi^2 sin(pi x) sin(pi y) sin(pi z)`. Verified when the residual fell
//! by at least `1e-9` and the solution is within discretisation error of `sin sin sin`.
//! Problem size is global.

use crate::args::{ArgError, Args, Size};
use crate::cli::Report;
use crate::report::AppResult;
use crate::team::{self, Ctx, Shared};
use std::ops::Range;
use std::time::Instant;

/// Usage text.
pub const USAGE: &str = "\
amg: geometric multigrid V-cycles for 3-D Poisson (stand-in for LLNL AMG), global size.

Options:
  --n N          interior points per axis; best 2^k * m - 1 (default 191; small 31)
  --cycles N     V-cycles (default 12)";

/// Problem parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Interior points per axis on the finest grid.
    pub n: usize,
    /// V-cycles to run.
    pub cycles: usize,
    /// Red-black sweeps before coarsening.
    pub pre: usize,
    /// Red-black sweeps after interpolation.
    pub post: usize,
    /// Sweeps on the coarsest grid.
    pub coarse: usize,
}

impl Config {
    /// The preset for `size`.
    pub fn preset(size: Size) -> Self {
        Self {
            n: size.pick(31, 191, 319),
            cycles: 12,
            pre: 2,
            post: 2,
            coarse: 40,
        }
    }

    /// The preset, overridden by command-line options.
    pub fn from_args(args: &mut Args, size: Size) -> Result<Self, ArgError> {
        let d = Self::preset(size);
        Ok(Self {
            n: args.positive("n")?.unwrap_or(d.n),
            cycles: args.positive("cycles")?.unwrap_or(d.cycles),
            ..d
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
    /// Interior points per axis of every level, finest first.
    pub levels: Vec<usize>,
    /// Residual norm before the first cycle.
    pub res0: f64,
    /// Residual norm after the last cycle.
    pub res: f64,
    /// Largest deviation from the continuous solution.
    pub max_error: f64,
    /// Setup seconds.
    pub setup_s: f64,
    /// Measured-phase seconds.
    pub time_s: f64,
}

impl Outcome {
    /// Residual reduction over the whole solve.
    pub fn reduction(&self) -> f64 {
        self.res / self.res0
    }

    /// Average residual reduction per cycle.
    pub fn factor(&self) -> f64 {
        self.reduction().powf(1.0 / self.cfg.cycles as f64)
    }

    /// Discretisation error bound accepted for the finest grid (second order, generous).
    pub fn error_bound(&self) -> f64 {
        let h = 1.0 / (self.cfg.n + 1) as f64;
        (2.0 * h * h).max(1e-12)
    }

    /// The app's own check of its answer.
    pub fn verified(&self) -> bool {
        self.reduction() <= 1e-9 && self.max_error <= self.error_bound()
    }

    /// Human lines and result line.
    pub fn report(&self) -> Report {
        let result = AppResult::new("amg", self.threads, self.time_s, self.verified())
            .with("n", self.cfg.n)
            .with("points", self.cfg.n.pow(3))
            .with("levels", self.levels.len())
            .with("cycles", self.cfg.cycles)
            .with("residual", self.reduction())
            .with("factor_per_cycle", self.factor())
            .with("max_error", self.max_error)
            .with("setup_s", self.setup_s);
        let lines = vec![
            format!("amg: {}^3 points, levels {:?}, {} V(2,2) cycles, {} threads", self.cfg.n, self.levels, self.cfg.cycles, self.threads),
            format!(
                "  residual {:.3e} -> {:.3e} ({:.3e} per cycle), max error vs sin*sin*sin {:.3e} (bound {:.1e})",
                self.res0,
                self.res,
                self.factor(),
                self.max_error,
                self.error_bound()
            ),
            format!("  setup {:.3} s, solve {:.3} s", self.setup_s, self.time_s),
        ];
        Report { result, lines }
    }
}

/// One grid of the hierarchy: `n^3` interior points inside a layer of zero boundary points.
struct Level<'a> {
    n: usize,
    /// Points per axis including the boundary (`n + 2`).
    s: usize,
    inv_h2: f64,
    h2: f64,
    u: Shared<'a, f64>,
    f: Shared<'a, f64>,
    r: Shared<'a, f64>,
}

impl Level<'_> {
    fn idx(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.s * (j + self.s * k)
    }

    /// Interior planes owned by a thread.
    fn planes(&self, ctx: &Ctx) -> Range<usize> {
        let r = ctx.range(self.n);
        r.start + 1..r.end + 1
    }

    /// Element range of `planes` (whole planes, boundary rows included).
    fn span(&self, planes: &Range<usize>) -> Range<usize> {
        planes.start * self.s * self.s..planes.end * self.s * self.s
    }
}

/// Interior points per axis of each level, finest first.
pub fn hierarchy(n: usize) -> Vec<usize> {
    let mut levels = vec![n];
    let mut m = n;
    while m >= 3 && m % 2 == 1 {
        m = (m - 1) / 2;
        levels.push(m);
    }
    levels
}

/// Builds the hierarchy and runs the cycles on `threads` threads.
pub fn run(cfg: &Config, threads: usize) -> Outcome {
    let threads = threads.max(1);
    let setup_start = Instant::now();
    let sizes = hierarchy(cfg.n);
    let mut storage: Vec<[Vec<f64>; 3]> = sizes
        .iter()
        .map(|&n| {
            let len = (n + 2).pow(3);
            [vec![0.0; len], vec![0.0; len], vec![0.0; len]]
        })
        .collect();
    let levels: Vec<Level<'_>> = storage
        .iter_mut()
        .zip(&sizes)
        .map(|([u, f, r], &n)| {
            let h = 1.0 / (n + 1) as f64;
            Level {
                n,
                s: n + 2,
                inv_h2: 1.0 / (h * h),
                h2: h * h,
                u: Shared::new(u),
                f: Shared::new(f),
                r: Shared::new(r),
            }
        })
        .collect();
    let out = team::run(threads, |ctx| solve(ctx, cfg, &levels));
    let (res0, res, max_error, elapsed) = out[0];
    let time_s = elapsed.unwrap_or(0.0);
    let setup_s = setup_start.elapsed().as_secs_f64() - time_s;
    Outcome {
        threads,
        cfg: *cfg,
        levels: sizes,
        res0,
        res,
        max_error,
        setup_s,
        time_s,
    }
}

fn exact(l: &Level<'_>, i: usize, j: usize, k: usize) -> f64 {
    let h = 1.0 / (l.n + 1) as f64;
    let pi = std::f64::consts::PI;
    (pi * i as f64 * h).sin() * (pi * j as f64 * h).sin() * (pi * k as f64 * h).sin()
}

fn solve(ctx: &Ctx, cfg: &Config, levels: &[Level<'_>]) -> (f64, f64, f64, Option<f64>) {
    // Setup: first-touch own planes of every level (boundary planes by their neighbours'
    // owners), right-hand side on the finest grid.
    for l in levels {
        let mut planes = l.planes(ctx);
        if planes.start == 1 {
            planes.start = 0;
        }
        if planes.end == l.n + 1 {
            planes.end = l.n + 2;
        }
        // SAFETY: plane blocks of different threads are disjoint; barrier before any read.
        unsafe {
            for a in [&l.u, &l.f, &l.r] {
                a.part_mut(l.span(&planes)).fill(0.0);
            }
        }
    }
    let fine = &levels[0];
    let pi2 = std::f64::consts::PI.powi(2);
    {
        let planes = fine.planes(ctx);
        // SAFETY: own planes only.
        let f = unsafe { fine.f.part_mut(fine.span(&planes)) };
        let base = fine.span(&planes).start;
        for k in planes {
            for j in 1..=fine.n {
                for i in 1..=fine.n {
                    f[fine.idx(i, j, k) - base] = 3.0 * pi2 * exact(fine, i, j, k);
                }
            }
        }
    }
    ctx.barrier();
    let res0 = residual_norm(ctx, fine);

    ctx.barrier();
    let start = ctx.is_leader().then(Instant::now);
    for _ in 0..cfg.cycles {
        vcycle(ctx, cfg, levels);
    }
    let res = residual_norm(ctx, fine);
    let elapsed = start.map(|s| s.elapsed().as_secs_f64());

    // SAFETY: the solve is over; reads only.
    let u = unsafe { fine.u.get() };
    let mut err = 0.0f64;
    for k in fine.planes(ctx) {
        for j in 1..=fine.n {
            for i in 1..=fine.n {
                err = err.max((u[fine.idx(i, j, k)] - exact(fine, i, j, k)).abs());
            }
        }
    }
    (res0, res, ctx.max(err), elapsed)
}

/// One red-black Gauss-Seidel sweep (both colours, a barrier after each).
fn sweep(ctx: &Ctx, l: &Level<'_>) {
    let planes = l.planes(ctx);
    for color in 0..2 {
        // SAFETY: f is read-only during smoothing.
        let f = unsafe { l.f.get() };
        let u = l.u.as_ptr();
        let (s, s2) = (l.s, l.s * l.s);
        for k in planes.clone() {
            for j in 1..=l.n {
                let i0 = if (1 + j + k) % 2 == color { 1 } else { 2 };
                let row = l.idx(0, j, k);
                for i in (i0..=l.n).step_by(2) {
                    let p = row + i;
                    // SAFETY: p is an interior point, so p +- 1, s, s2 are inside the
                    // (n+2)^3 array. A point of one colour reads only points of the other
                    // colour, which nobody writes during this half sweep (barriers separate
                    // the half sweeps), and each thread writes only points of its own planes:
                    // element-wise raw access, no reference spans other threads' writes.
                    unsafe {
                        let nb = *u.add(p - 1)
                            + *u.add(p + 1)
                            + *u.add(p - s)
                            + *u.add(p + s)
                            + *u.add(p - s2)
                            + *u.add(p + s2);
                        *u.add(p) = (l.h2 * f[p] + nb) * (1.0 / 6.0);
                    }
                }
            }
        }
        ctx.barrier();
    }
}

/// `r = f - A u` on own planes (no barrier).
fn residual(ctx: &Ctx, l: &Level<'_>) {
    let planes = l.planes(ctx);
    // SAFETY: u and f are not written during this phase; r only on own planes.
    let (u, f) = unsafe { (l.u.get(), l.f.get()) };
    let base = l.span(&planes).start;
    // SAFETY: own planes of r; nobody else touches them in this phase.
    let r = unsafe { l.r.part_mut(l.span(&planes)) };
    let (s, s2) = (l.s, l.s * l.s);
    for k in planes {
        for j in 1..=l.n {
            let row = l.idx(0, j, k);
            for p in row + 1..=row + l.n {
                let nb = u[p - 1] + u[p + 1] + u[p - s] + u[p + s] + u[p - s2] + u[p + s2];
                r[p - base] = f[p] - (6.0 * u[p] - nb) * l.inv_h2;
            }
        }
    }
}

/// Two-norm of `f - A u` (includes barriers).
fn residual_norm(ctx: &Ctx, l: &Level<'_>) -> f64 {
    residual(ctx, l);
    let planes = l.planes(ctx);
    // SAFETY: own planes, just written by this thread; others touch only their own planes.
    let r = unsafe { l.r.part_mut(l.span(&planes)) };
    let local: f64 = r.iter().map(|v| v * v).sum();
    ctx.sum(local).sqrt()
}

fn vcycle(ctx: &Ctx, cfg: &Config, levels: &[Level<'_>]) {
    let (fine, rest) = levels.split_first().expect("at least one level");
    let Some(coarse) = rest.first() else {
        for _ in 0..cfg.coarse {
            sweep(ctx, fine);
        }
        return;
    };
    for _ in 0..cfg.pre {
        sweep(ctx, fine);
    }
    residual(ctx, fine);
    ctx.barrier();
    restrict(ctx, fine, coarse);
    ctx.barrier();
    vcycle(ctx, cfg, rest);
    interpolate(ctx, coarse, fine);
    ctx.barrier();
    for _ in 0..cfg.post {
        sweep(ctx, fine);
    }
}

/// Full weighting of the fine residual into the coarse right-hand side; zeroes the coarse
/// solution (own coarse planes).
fn restrict(ctx: &Ctx, fine: &Level<'_>, coarse: &Level<'_>) {
    let planes = coarse.planes(ctx);
    // SAFETY: fine r is read-only now; coarse f and u written on own coarse planes.
    let r = unsafe { fine.r.get() };
    let span = coarse.span(&planes);
    let base = span.start;
    // SAFETY: own coarse planes only.
    let (f, u) = unsafe { (coarse.f.part_mut(span.clone()), coarse.u.part_mut(span)) };
    u.fill(0.0);
    const W: [f64; 3] = [1.0, 2.0, 1.0];
    let (s, s2) = (fine.s, fine.s * fine.s);
    for k in planes {
        for j in 1..=coarse.n {
            for i in 1..=coarse.n {
                let c = fine.idx(2 * i, 2 * j, 2 * k);
                let mut acc = 0.0;
                for (c2, wz) in W.iter().enumerate() {
                    for (b, wy) in W.iter().enumerate() {
                        let p = c + c2 * s2 + b * s - s2 - s;
                        acc += wz * wy * (r[p - 1] + 2.0 * r[p] + r[p + 1]);
                    }
                }
                f[coarse.idx(i, j, k) - base] = acc * (1.0 / 64.0);
            }
        }
    }
}

/// Adds the trilinear interpolation of the coarse solution to the fine one (own fine planes).
fn interpolate(ctx: &Ctx, coarse: &Level<'_>, fine: &Level<'_>) {
    let planes = fine.planes(ctx);
    // SAFETY: coarse u is read-only now (the coarse cycle ended with a barrier); fine u is
    // written on own planes only.
    let uc = unsafe { coarse.u.get() };
    let span = fine.span(&planes);
    let base = span.start;
    // SAFETY: own fine planes only.
    let u = unsafe { fine.u.part_mut(span) };
    // Coarse neighbours of fine coordinate c: (index, weight) pairs.
    let parents = |c: usize| -> [(usize, f64); 2] {
        if c % 2 == 0 {
            [(c / 2, 1.0), (c / 2, 0.0)]
        } else {
            [((c - 1) / 2, 0.5), (c.div_ceil(2), 0.5)]
        }
    };
    for k in planes {
        let pk = parents(k);
        for j in 1..=fine.n {
            let pj = parents(j);
            // Collapse the z and y weights into four coarse rows first.
            let mut rows = [(0usize, 0.0f64); 4];
            for (a, &(kc, wk)) in pk.iter().enumerate() {
                for (b, &(jc, wj)) in pj.iter().enumerate() {
                    rows[a * 2 + b] = (coarse.idx(0, jc, kc), wk * wj);
                }
            }
            let out = &mut u[fine.idx(0, j, k) - base..];
            for i in 1..=fine.n {
                let [(i0, w0), (i1, w1)] = parents(i);
                let mut acc = 0.0;
                for &(row, w) in &rows {
                    acc += w * (w0 * uc[row + i0] + w1 * uc[row + i1]);
                }
                out[i] += acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_halves_odd_sizes() {
        assert_eq!(hierarchy(31), vec![31, 15, 7, 3, 1]);
        assert_eq!(hierarchy(191), vec![191, 95, 47, 23, 11, 5, 2]);
        assert_eq!(hierarchy(8), vec![8]);
    }

    #[test]
    fn converges_like_multigrid_with_any_thread_count() {
        let cfg = Config {
            n: 15,
            cycles: 12,
            ..Config::preset(Size::Small)
        };
        let one = run(&cfg, 1);
        assert!(one.verified(), "{one:?}");
        // Textbook V(2,2) red-black Gauss-Seidel: about 0.1 or better per cycle.
        let early = run(&Config { cycles: 3, ..cfg }, 1);
        assert!(early.factor() < 0.15, "{early:?}");
        for threads in [2, 3, 5] {
            let o = run(&cfg, threads);
            assert!(o.verified(), "{threads} threads: {o:?}");
            // Red-black ordering makes the solution independent of the thread count; only the
            // norm's reduction adds in another order.
            assert!(
                (o.res - one.res).abs() <= 1e-12 * one.res,
                "{threads} threads: {o:?}"
            );
            assert_eq!(
                o.max_error.to_bits(),
                one.max_error.to_bits(),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn one_cycle_is_not_enough() {
        let o = run(
            &Config {
                n: 31,
                cycles: 1,
                ..Config::preset(Size::Small)
            },
            2,
        );
        assert!(!o.verified(), "{o:?}");
    }
}
