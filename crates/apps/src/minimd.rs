//! MiniMD: Lennard-Jones molecular dynamics with binned neighbour lists (Mantevo MiniMD, the
//! LAMMPS LJ benchmark).
//!
//! MiniMD's defaults: an fcc lattice of `nx * ny * nz` unit cells (4 atoms each) at reduced
//! density 0.8442, initial temperature 1.44, force cutoff 2.5 sigma, neighbour skin 0.3,
//! velocity Verlet with dt = 0.005, neighbour lists rebuilt every 20 steps, periodic box.
//! Threads own blocks of atoms and use full neighbour lists (each pair computed by both owners,
//! no write conflicts: MiniMD's threaded default). Binning for the rebuild uses bins of half
//! the neighbour cutoff and a 5x5x5 bin stencil, as MiniMD does. The measured phase is the time
//! stepping (including the rebuilds); lattice, velocities, first lists and forces are setup.
//!
//! Verified when total energy (kinetic + shifted LJ potential) after the run is within 1e-3
//! (relative) of the initial energy and no neighbour list overflowed. Problem size is global.

use crate::args::{ArgError, Args, Size};
use crate::cli::Report;
use crate::report::AppResult;
use crate::team::{self, Ctx, Shared};
use std::time::Instant;

/// Usage text.
pub const USAGE: &str = "\
minimd: Lennard-Jones molecular dynamics with neighbour lists (MiniMD / LAMMPS LJ), global size.

Options:
  --nx N --ny N --nz N   fcc unit cells per axis, 4 atoms each (default 24 24 24; small 8 8 8;
                         at least 5)
  --steps N              time steps (default 100)
  --reneigh N            rebuild neighbour lists every N steps (default 20)";

/// Problem parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Unit cells along x.
    pub nx: usize,
    /// Unit cells along y.
    pub ny: usize,
    /// Unit cells along z.
    pub nz: usize,
    /// Time steps.
    pub steps: usize,
    /// Neighbour list rebuild period in steps.
    pub reneigh: usize,
    /// Time step.
    pub dt: f64,
    /// Reduced density.
    pub density: f64,
    /// Initial temperature.
    pub temperature: f64,
    /// Force cutoff.
    pub cutforce: f64,
    /// Neighbour skin.
    pub skin: f64,
}

impl Config {
    /// The preset for `size`.
    pub fn preset(size: Size) -> Self {
        let n = size.pick(8, 24, 40);
        Self {
            nx: n,
            ny: n,
            nz: n,
            steps: size.pick(50, 100, 100),
            reneigh: 20,
            dt: 0.005,
            density: 0.8442,
            temperature: 1.44,
            cutforce: 2.5,
            skin: 0.3,
        }
    }

    /// The preset, overridden by command-line options.
    pub fn from_args(args: &mut Args, size: Size) -> Result<Self, ArgError> {
        let d = Self::preset(size);
        let cells = |args: &mut Args, key: &str, default: usize| match args.positive(key)? {
            Some(v) if v < 5 => Err(ArgError::BadValue {
                key: key.into(),
                value: v.to_string(),
                expected: "at least 5 unit cells".into(),
            }),
            v => Ok(v.unwrap_or(default)),
        };
        Ok(Self {
            nx: cells(args, "nx", d.nx)?,
            ny: cells(args, "ny", d.ny)?,
            nz: cells(args, "nz", d.nz)?,
            steps: args.positive("steps")?.unwrap_or(d.steps),
            reneigh: args.positive("reneigh")?.unwrap_or(d.reneigh),
            ..d
        })
    }

    fn cutneigh(&self) -> f64 {
        self.cutforce + self.skin
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Threads used.
    pub threads: usize,
    /// The parameters.
    pub cfg: Config,
    /// Number of atoms.
    pub atoms: usize,
    /// Total energy per atom before the run.
    pub etot0: f64,
    /// Total energy per atom after the run.
    pub etot: f64,
    /// Potential energy per atom after the run.
    pub pe: f64,
    /// Temperature after the run.
    pub temperature: f64,
    /// Average neighbours per atom (full list) at the last rebuild.
    pub neighbors: f64,
    /// A neighbour list ran out of room (the physics is then wrong).
    pub overflow: bool,
    /// Setup seconds.
    pub setup_s: f64,
    /// Measured-phase seconds (time stepping).
    pub time_s: f64,
}

impl Outcome {
    /// Relative drift of the total energy.
    pub fn drift(&self) -> f64 {
        ((self.etot - self.etot0) / self.etot0).abs()
    }

    /// The app's own check of its answer.
    pub fn verified(&self) -> bool {
        !self.overflow && self.drift() <= 1e-3 && self.etot.is_finite()
    }

    /// Human lines and result line.
    pub fn report(&self) -> Report {
        let rate = (self.atoms * self.cfg.steps) as f64 / self.time_s;
        let result = AppResult::new("minimd", self.threads, self.time_s, self.verified())
            .with("nx", self.cfg.nx)
            .with("ny", self.cfg.ny)
            .with("nz", self.cfg.nz)
            .with("atoms", self.atoms)
            .with("steps", self.cfg.steps)
            .with("etot0", self.etot0)
            .with("etot", self.etot)
            .with("energy_drift", self.drift())
            .with("pe", self.pe)
            .with("temperature", self.temperature)
            .with("neighbors_per_atom", self.neighbors)
            .with("neighbor_overflow", self.overflow)
            .with("atom_steps_per_s", rate)
            .with("setup_s", self.setup_s);
        let lines = vec![
            format!(
                "minimd: {} atoms, {} steps, {} threads",
                self.atoms, self.cfg.steps, self.threads
            ),
            format!(
                "  energy/atom {:.6} -> {:.6} (drift {:.2e}), T {:.4}, {:.1} neighbours/atom{}",
                self.etot0,
                self.etot,
                self.drift(),
                self.temperature,
                self.neighbors,
                if self.overflow {
                    ", NEIGHBOUR LIST OVERFLOW"
                } else {
                    ""
                }
            ),
            format!(
                "  setup {:.3} s, run {:.3} s ({:.3e} atom-steps/s)",
                self.setup_s, self.time_s, rate
            ),
        ];
        Report { result, lines }
    }
}

/// Periodic box and binning geometry.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    len: [f64; 3],
    half: [f64; 3],
    nbin: [usize; 3],
    inv_bin: [f64; 3],
}

/// Bins per neighbour cutoff along each axis (MiniMD: bins of half the cutoff).
const BIN_REACH: usize = 2;

impl Geometry {
    fn new(cfg: &Config) -> Self {
        let a = (4.0 / cfg.density).cbrt();
        let len = [cfg.nx as f64 * a, cfg.ny as f64 * a, cfg.nz as f64 * a];
        let nbin = len.map(|l| ((l / (cfg.cutneigh() / BIN_REACH as f64)) as usize).max(1));
        assert!(
            nbin.iter().all(|&n| n > 2 * BIN_REACH),
            "box {len:?} is too small for the neighbour cutoff {}: use at least 5 unit cells per axis",
            cfg.cutneigh()
        );
        Self {
            len,
            half: len.map(|l| l / 2.0),
            nbin,
            inv_bin: [0, 1, 2].map(|d| nbin[d] as f64 / len[d]),
        }
    }

    fn bin_of(&self, x: &[f64; 3]) -> [usize; 3] {
        [0, 1, 2].map(|d| ((x[d] * self.inv_bin[d]) as usize).min(self.nbin[d] - 1))
    }

    fn bin_index(&self, b: [usize; 3]) -> usize {
        b[0] + self.nbin[0] * (b[1] + self.nbin[1] * b[2])
    }

    /// Minimum-image separation (positions stay within one box length of the box). Branch
    /// free: the comparisons become masks, so the force loop has no unpredictable jumps.
    #[inline(always)]
    fn delta(&self, a: &[f64; 3], b: &[f64; 3]) -> [f64; 3] {
        let mut d = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
        for k in 0..3 {
            let up = if d[k] > self.half[k] {
                self.len[k]
            } else {
                0.0
            };
            let down = if d[k] < -self.half[k] {
                self.len[k]
            } else {
                0.0
            };
            d[k] = d[k] - up + down;
        }
        d
    }
}

/// State shared by the team.
struct System<'a> {
    x: Shared<'a, [f64; 3]>,
    v: Shared<'a, [f64; 3]>,
    f: Shared<'a, [f64; 3]>,
    neigh: Shared<'a, u32>,
    numneigh: Shared<'a, u32>,
    bin_start: Shared<'a, u32>,
    bin_atoms: Shared<'a, u32>,
    maxneigh: usize,
}

/// SplitMix64: a small, good, deterministic generator for the initial velocities.
fn splitmix(mut z: u64) -> f64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476C_E1E5_B9B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Builds the lattice and runs the dynamics on `threads` threads.
pub fn run(cfg: &Config, threads: usize) -> Outcome {
    let threads = threads.max(1);
    let setup_start = Instant::now();
    let geo = Geometry::new(cfg);
    let n = 4 * cfg.nx * cfg.ny * cfg.nz;
    let volume_per_neigh = 4.0 / 3.0 * std::f64::consts::PI * cfg.cutneigh().powi(3);
    let maxneigh = (volume_per_neigh * cfg.density * 1.5) as usize + 16;
    let nbins = geo.nbin.iter().product::<usize>();
    let mut x = vec![[0.0f64; 3]; n];
    let mut v = vec![[0.0f64; 3]; n];
    let mut f = vec![[0.0f64; 3]; n];
    let mut neigh = vec![0u32; n * maxneigh];
    let mut numneigh = vec![0u32; n];
    let mut bin_start = vec![0u32; nbins + 1];
    let mut bin_atoms = vec![0u32; n];
    let sys = System {
        x: Shared::new(&mut x),
        v: Shared::new(&mut v),
        f: Shared::new(&mut f),
        neigh: Shared::new(&mut neigh),
        numneigh: Shared::new(&mut numneigh),
        bin_start: Shared::new(&mut bin_start),
        bin_atoms: Shared::new(&mut bin_atoms),
        maxneigh,
    };
    let out = team::run(threads, |ctx| simulate(ctx, cfg, &geo, &sys, n));
    let (e0, e1, pe, temp, neighbors, overflow, time_s) = out[0];
    let setup_s = setup_start.elapsed().as_secs_f64() - time_s;
    Outcome {
        threads,
        cfg: *cfg,
        atoms: n,
        etot0: e0,
        etot: e1,
        pe,
        temperature: temp,
        neighbors,
        overflow,
        setup_s,
        time_s,
    }
}

type ThreadOut = (f64, f64, f64, f64, f64, bool, f64);

fn simulate(ctx: &Ctx, cfg: &Config, geo: &Geometry, sys: &System<'_>, n: usize) -> ThreadOut {
    let own = ctx.range(n);
    let a = (4.0 / cfg.density).cbrt();
    // SAFETY: (setup) every thread writes only its own atoms before the first barrier.
    let (x, v, f) = unsafe {
        (
            sys.x.part_mut(own.clone()),
            sys.v.part_mut(own.clone()),
            sys.f.part_mut(own.clone()),
        )
    };
    const BASIS: [[f64; 3]; 4] = [
        [0.0, 0.0, 0.0],
        [0.5, 0.5, 0.0],
        [0.5, 0.0, 0.5],
        [0.0, 0.5, 0.5],
    ];
    for ((xi, vi), i) in x.iter_mut().zip(v.iter_mut()).zip(own.clone()) {
        let (cell, b) = (i / 4, i % 4);
        let c = [
            cell % cfg.nx,
            (cell / cfg.nx) % cfg.ny,
            cell / (cfg.nx * cfg.ny),
        ];
        *xi = [0, 1, 2].map(|d| (c[d] as f64 + BASIS[b][d]) * a);
        *vi = [0, 1, 2].map(|d| splitmix((i * 3 + d) as u64) - 0.5);
    }
    f.fill([0.0; 3]);
    // SAFETY: own neighbour rows, first touch.
    unsafe {
        sys.neigh
            .part_mut(own.start * sys.maxneigh..own.end * sys.maxneigh)
            .fill(0);
        sys.numneigh.part_mut(own.clone()).fill(0);
    }
    // Zero total momentum, then scale to the requested temperature (3N - 3 degrees of freedom).
    let [px, py, pz] = ctx.sum_n([0, 1, 2].map(|d| v.iter().map(|vi| vi[d]).sum::<f64>()));
    let mean = [px, py, pz].map(|p| p / n as f64);
    v.iter_mut()
        .for_each(|vi| *vi = [vi[0] - mean[0], vi[1] - mean[1], vi[2] - mean[2]]);
    let t0 = temperature(ctx, v, n);
    let scale = (cfg.temperature / t0).sqrt();
    v.iter_mut().for_each(|vi| *vi = vi.map(|c| c * scale));

    let mut overflow = rebuild(ctx, cfg, geo, sys, n, &own);
    let pe0 = forces::<true>(ctx, cfg, geo, sys, &own);
    let e0 = pe0 + 1.5 * temperature(ctx, v, n) * (3 * n - 3) as f64 / (3 * n) as f64;

    ctx.barrier();
    let start = ctx.is_leader().then(Instant::now);
    let half_dt = 0.5 * cfg.dt;
    for step in 1..=cfg.steps {
        {
            // SAFETY: own atoms; other threads read x only after the barrier below.
            let (x, v, f) = unsafe {
                (
                    sys.x.part_mut(own.clone()),
                    sys.v.part_mut(own.clone()),
                    sys.f.part_mut(own.clone()),
                )
            };
            for ((xi, vi), fi) in x.iter_mut().zip(v.iter_mut()).zip(f.iter()) {
                for d in 0..3 {
                    vi[d] += half_dt * fi[d];
                    xi[d] += cfg.dt * vi[d];
                }
            }
        }
        if step % cfg.reneigh == 0 {
            overflow |= rebuild(ctx, cfg, geo, sys, n, &own);
        }
        ctx.barrier();
        forces::<false>(ctx, cfg, geo, sys, &own);
        {
            // SAFETY: own atoms only.
            let (v, f) = unsafe { (sys.v.part_mut(own.clone()), sys.f.part_mut(own.clone())) };
            for (vi, fi) in v.iter_mut().zip(f.iter()) {
                for d in 0..3 {
                    vi[d] += half_dt * fi[d];
                }
            }
        }
        // Nobody may move its atoms while others still compute forces from them.
        ctx.barrier();
    }
    let elapsed = start.map(|s| s.elapsed().as_secs_f64());

    let pe = forces::<true>(ctx, cfg, geo, sys, &own);
    // SAFETY: own atoms only.
    let v = unsafe { sys.v.part_mut(own.clone()) };
    let temp = temperature(ctx, v, n);
    let e1 = pe + 1.5 * temp * (3 * n - 3) as f64 / (3 * n) as f64;
    // SAFETY: lists are not written any more.
    let listed: f64 = unsafe { sys.numneigh.get() }[own.clone()]
        .iter()
        .map(|&c| c as f64)
        .sum();
    let neighbors = ctx.sum(listed) / n as f64;
    let overflow = ctx.max(f64::from(u8::from(overflow))) > 0.0;
    (
        e0,
        e1,
        pe,
        temp,
        neighbors,
        overflow,
        elapsed.unwrap_or(0.0),
    )
}

/// Temperature from the velocities (3N - 3 degrees of freedom, unit mass, k_B = 1).
fn temperature(ctx: &Ctx, v: &[[f64; 3]], n: usize) -> f64 {
    let local: f64 = v
        .iter()
        .map(|vi| vi[0] * vi[0] + vi[1] * vi[1] + vi[2] * vi[2])
        .sum();
    ctx.sum(local) / (3 * n - 3) as f64
}

/// Wraps atoms into the box, bins them (leader) and rebuilds the own atoms' full neighbour
/// lists. Returns true when a list overflowed.
fn rebuild(
    ctx: &Ctx,
    cfg: &Config,
    geo: &Geometry,
    sys: &System<'_>,
    n: usize,
    own: &std::ops::Range<usize>,
) -> bool {
    {
        // SAFETY: own atoms; the barrier below publishes them.
        let x = unsafe { sys.x.part_mut(own.clone()) };
        for xi in x.iter_mut() {
            for d in 0..3 {
                if xi[d] < 0.0 {
                    xi[d] += geo.len[d];
                } else if xi[d] >= geo.len[d] {
                    xi[d] -= geo.len[d];
                }
            }
        }
    }
    ctx.barrier();
    if ctx.is_leader() {
        // SAFETY: only the leader touches the bins between these two barriers; x is read-only.
        let (x, start, atoms) = unsafe {
            (
                sys.x.get(),
                sys.bin_start.part_mut(0..sys.bin_start.len()),
                sys.bin_atoms.part_mut(0..n),
            )
        };
        start.fill(0);
        for xi in x {
            start[geo.bin_index(geo.bin_of(xi)) + 1] += 1;
        }
        for b in 1..start.len() {
            start[b] += start[b - 1];
        }
        // Fill in atom order (stable), using the next bin's start as a cursor, then shift back.
        for (i, xi) in x.iter().enumerate() {
            let b = geo.bin_index(geo.bin_of(xi));
            atoms[start[b] as usize] = i as u32;
            start[b] += 1;
        }
        for b in (1..start.len()).rev() {
            start[b] = start[b - 1];
        }
        start[0] = 0;
    }
    ctx.barrier();
    // SAFETY: x and the bins are read-only until the next rebuild; own list rows only.
    let (x, start, atoms) = unsafe { (sys.x.get(), sys.bin_start.get(), sys.bin_atoms.get()) };
    // SAFETY: own list rows only; nobody reads lists until the barrier before the force phase.
    let (neigh, numneigh) = unsafe {
        (
            sys.neigh
                .part_mut(own.start * sys.maxneigh..own.end * sys.maxneigh),
            sys.numneigh.part_mut(own.clone()),
        )
    };
    let cutneigh2 = cfg.cutneigh() * cfg.cutneigh();
    let mut overflow = false;
    let reach = BIN_REACH as isize;
    for ((row, count), i) in neigh
        .chunks_exact_mut(sys.maxneigh)
        .zip(numneigh.iter_mut())
        .zip(own.clone())
    {
        let xi = &x[i];
        let b = geo.bin_of(xi);
        let mut k = 0;
        for dz in -reach..=reach {
            let bz = (b[2] as isize + dz).rem_euclid(geo.nbin[2] as isize) as usize;
            for dy in -reach..=reach {
                let by = (b[1] as isize + dy).rem_euclid(geo.nbin[1] as isize) as usize;
                for dx in -reach..=reach {
                    let bx = (b[0] as isize + dx).rem_euclid(geo.nbin[0] as isize) as usize;
                    let bin = geo.bin_index([bx, by, bz]);
                    for &j in &atoms[start[bin] as usize..start[bin + 1] as usize] {
                        let j = j as usize;
                        let d = geo.delta(xi, &x[j]);
                        let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                        if j != i && r2 < cutneigh2 {
                            if k < row.len() {
                                row[k] = j as u32;
                                k += 1;
                            } else {
                                overflow = true;
                            }
                        }
                    }
                }
            }
        }
        *count = k as u32;
    }
    overflow
}

/// Computes the own atoms' forces; returns the potential energy per atom when `ENERGY`.
fn forces<const ENERGY: bool>(
    ctx: &Ctx,
    cfg: &Config,
    geo: &Geometry,
    sys: &System<'_>,
    own: &std::ops::Range<usize>,
) -> f64 {
    // SAFETY: positions and lists are read-only during the force phase (barriers around it);
    // each thread writes only its own forces.
    let (x, neigh, numneigh) = unsafe { (sys.x.get(), sys.neigh.get(), sys.numneigh.get()) };
    // SAFETY: own forces only.
    let f = unsafe { sys.f.part_mut(own.clone()) };
    let cut2 = cfg.cutforce * cfg.cutforce;
    let sr6c = 1.0 / (cut2 * cut2 * cut2);
    let shift = 4.0 * sr6c * (sr6c - 1.0);
    let mut pe = 0.0;
    for (fi, i) in f.iter_mut().zip(own.clone()) {
        let xi = x[i];
        let list = &neigh[i * sys.maxneigh..i * sys.maxneigh + numneigh[i] as usize];
        let mut acc = [0.0f64; 3];
        for &j in list {
            let d = geo.delta(&xi, &x[j as usize]);
            let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
            // Outside the cutoff the pair contributes zero: a 0/1 factor, not a branch (the
            // list holds atoms up to the neighbour cutoff, so ~30% are outside).
            let inside = r2 < cut2;
            let sr2 = f64::from(u8::from(inside)) / r2;
            let sr6 = sr2 * sr2 * sr2;
            let force = 48.0 * sr6 * (sr6 - 0.5) * sr2;
            acc[0] += d[0] * force;
            acc[1] += d[1] * force;
            acc[2] += d[2] * force;
            if ENERGY && inside {
                pe += 0.5 * (4.0 * sr6 * (sr6 - 1.0) - shift);
            }
        }
        *fi = acc;
    }
    if ENERGY {
        ctx.sum(pe) / x.len() as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(steps: usize) -> Config {
        Config {
            nx: 5,
            ny: 6,
            nz: 5,
            steps,
            ..Config::preset(Size::Small)
        }
    }

    #[test]
    fn neighbour_list_forces_match_brute_force() {
        let cfg = small(1);
        let geo = Geometry::new(&cfg);
        let n = 4 * cfg.nx * cfg.ny * cfg.nz;
        let maxneigh = 200;
        // A random gas, not a lattice: every bin and image case occurs.
        let mut x: Vec<[f64; 3]> = (0..n)
            .map(|i| [0, 1, 2].map(|d| splitmix((7 * i + d) as u64) * geo.len[d]))
            .collect();
        let (mut v, mut f) = (vec![[0.0; 3]; n], vec![[0.0; 3]; n]);
        let (mut neigh, mut numneigh) = (vec![0u32; n * maxneigh], vec![0u32; n]);
        let nbins: usize = geo.nbin.iter().product();
        let (mut bs, mut ba) = (vec![0u32; nbins + 1], vec![0u32; n]);
        let xs = x.clone();
        let sys = System {
            x: Shared::new(&mut x),
            v: Shared::new(&mut v),
            f: Shared::new(&mut f),
            neigh: Shared::new(&mut neigh),
            numneigh: Shared::new(&mut numneigh),
            bin_start: Shared::new(&mut bs),
            bin_atoms: Shared::new(&mut ba),
            maxneigh,
        };
        let pes = team::run(3, |ctx| {
            let own = ctx.range(n);
            assert!(!rebuild(ctx, &cfg, &geo, &sys, n, &own));
            ctx.barrier();
            forces::<true>(ctx, &cfg, &geo, &sys, &own)
        });
        #[allow(clippy::drop_non_drop)]
        drop(sys); // Ends the borrows of the arrays checked below.
        let cut2 = cfg.cutforce * cfg.cutforce;
        let mut pe = 0.0;
        for i in 0..n {
            let mut acc = [0.0; 3];
            for j in 0..n {
                let d = geo.delta(&xs[i], &xs[j]);
                let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
                if i != j && r2 < cut2 {
                    let sr6 = (1.0 / r2).powi(3);
                    let fr = 48.0 * sr6 * (sr6 - 0.5) / r2;
                    (0..3).for_each(|k| acc[k] += d[k] * fr);
                    pe += 0.5
                        * (4.0 * sr6 * (sr6 - 1.0) - 4.0 * cut2.powi(-3) * (cut2.powi(-3) - 1.0));
                }
            }
            for k in 0..3 {
                let tol = 1e-9 * acc[k].abs().max(1.0);
                assert!(
                    (f[i][k] - acc[k]).abs() <= tol,
                    "atom {i} axis {k}: {} vs {}",
                    f[i][k],
                    acc[k]
                );
            }
            assert!(numneigh[i] > 0);
        }
        assert!(
            (pes[0] - pe / n as f64).abs() < 1e-9 * pe.abs().max(1.0),
            "{} vs {}",
            pes[0],
            pe / n as f64
        );
    }

    #[test]
    fn conserves_energy_and_agrees_across_thread_counts() {
        let one = run(&small(200), 1);
        assert!(one.verified(), "{one:?}");
        assert!(one.drift() < 1e-4, "{one:?}");
        assert!(
            (one.temperature - 0.7).abs() < 0.2,
            "lattice melts to about T 0.7: {one:?}"
        );
        let three = run(&small(200), 3);
        // Full lists make the trajectory independent of the thread count; only the energy
        // reductions add in another order.
        assert!((one.etot - three.etot).abs() < 1e-12, "{one:?} {three:?}");
        assert!((one.etot0 - three.etot0).abs() < 1e-12);
    }

    #[test]
    fn too_large_time_step_is_caught() {
        let cfg = Config {
            dt: 0.05,
            ..small(100)
        };
        let o = run(&cfg, 2);
        assert!(!o.verified(), "{o:?}");
    }
}
