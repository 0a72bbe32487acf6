//! phdMesh: parallel contact search between moving mesh parts (Sandia's phdMesh gears test).
//!
//! The mesh is a lattice of gears, each a ring of hex8 elements (`nr` radial x `nt` around x
//! `nz` axial) with a toothed outer rim; neighbouring gears interlock and turn in opposite
//! directions. Every step: rotate each gear's nodes (rotation matrix on reference
//! coordinates), compute every element's axis-aligned bounding box from its 8 nodes, bin the
//! boxes by their minimum corner into a uniform grid (parallel counting sort) and find every
//! pair of overlapping boxes from different gears by scanning the 27 neighbouring cells. This is
//! phdMesh's proximity search (node update, box computation, spatial sort, box-box tests)
//! with a uniform grid instead of its octree key sort. Threads own blocks of nodes and
//! elements; each keeps its own preallocated pair list. The measured phase is all steps.
//!
//! Verified when the last step found some contacts and, for a subset of elements (every k-th,
//! about 2000), exactly the pairs a brute-force all-pairs test finds.

use crate::args::{ArgError, Args, Size};
use crate::cli::Report;
use crate::report::AppResult;
use crate::team::{self, Ctx, Shared};
use std::collections::BTreeSet;
use std::f64::consts::PI;
use std::sync::Mutex;
use std::time::Instant;

/// Usage text.
pub const USAGE: &str = "\
phdmesh: contact search between rotating gears (Sandia phdMesh), global size.

Options:
  --gears-x N --gears-y N   gear lattice (default 4 x 4; small 2 x 2)
  --nr N --nt N --nz N      elements per gear: radial, around, axial (default 4 128 8;
                            small 2 64 2; nt a multiple of 8)
  --steps N                 search steps (default 200; small 20)";

/// Problem parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Gears along x.
    pub gears_x: usize,
    /// Gears along y.
    pub gears_y: usize,
    /// Radial elements per gear.
    pub nr: usize,
    /// Elements around each gear (multiple of 8: the teeth).
    pub nt: usize,
    /// Axial elements per gear.
    pub nz: usize,
    /// Search steps.
    pub steps: usize,
}

impl Config {
    /// The preset for `size`.
    pub fn preset(size: Size) -> Self {
        Self {
            gears_x: size.pick(2, 4, 8),
            gears_y: size.pick(2, 4, 4),
            nr: size.pick(2, 4, 4),
            nt: size.pick(64, 128, 128),
            nz: size.pick(2, 8, 8),
            steps: size.pick(20, 200, 200),
        }
    }

    /// The preset, overridden by command-line options.
    pub fn from_args(args: &mut Args, size: Size) -> Result<Self, ArgError> {
        let d = Self::preset(size);
        let nt = args.positive("nt")?.unwrap_or(d.nt);
        if nt % 8 != 0 {
            return Err(ArgError::BadValue {
                key: "nt".into(),
                value: nt.to_string(),
                expected: "a multiple of 8".into(),
            });
        }
        Ok(Self {
            gears_x: args.positive("gears-x")?.unwrap_or(d.gears_x),
            gears_y: args.positive("gears-y")?.unwrap_or(d.gears_y),
            nr: args.positive("nr")?.unwrap_or(d.nr),
            nt,
            nz: args.positive("nz")?.unwrap_or(d.nz),
            steps: args.positive("steps")?.unwrap_or(d.steps),
        })
    }

    fn gears(&self) -> usize {
        self.gears_x * self.gears_y
    }

    fn nodes_per_gear(&self) -> usize {
        (self.nr + 1) * self.nt * (self.nz + 1)
    }

    fn elements_per_gear(&self) -> usize {
        self.nr * self.nt * self.nz
    }
}

/// Gear geometry (unit outer radius).
const R_IN: f64 = 0.6;
const R_OUT: f64 = 1.0;
const TOOTH: f64 = 0.08;
const HEIGHT: f64 = 0.5;
/// Centre distance: the pitch diameter plus a little, so the interlocking teeth (tip into
/// valley) of neighbouring gears come close and their flanks touch.
const SPACING: f64 = 2.0 * (R_OUT - TOOTH) + 0.02;

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Threads used.
    pub threads: usize,
    /// The parameters.
    pub cfg: Config,
    /// Elements (boxes).
    pub elements: usize,
    /// Grid cells of the search.
    pub cells: usize,
    /// Contact pairs found over all steps.
    pub total_pairs: u64,
    /// Contact pairs in the last step.
    pub last_pairs: u64,
    /// Elements checked against brute force.
    pub checked: usize,
    /// Pairs involving checked elements that brute force and the search disagree on.
    pub mismatches: usize,
    /// Setup seconds.
    pub setup_s: f64,
    /// Measured-phase seconds.
    pub time_s: f64,
}

impl Outcome {
    /// The app's own check of its answer.
    pub fn verified(&self) -> bool {
        self.last_pairs > 0 && self.mismatches == 0 && self.checked > 0
    }

    /// Human lines and result line.
    pub fn report(&self) -> Report {
        let c = &self.cfg;
        let result = AppResult::new("phdmesh", self.threads, self.time_s, self.verified())
            .with("gears", c.gears())
            .with("elements", self.elements)
            .with("steps", c.steps)
            .with("cells", self.cells)
            .with("total_pairs", self.total_pairs)
            .with("last_pairs", self.last_pairs)
            .with("checked", self.checked)
            .with("mismatches", self.mismatches)
            .with("setup_s", self.setup_s);
        let lines = vec![
            format!(
                "phdmesh: {} gears ({}x{}x{} elements each), {} boxes, {} grid cells, {} steps, {} threads",
                c.gears(),
                c.nr,
                c.nt,
                c.nz,
                self.elements,
                self.cells,
                c.steps,
                self.threads
            ),
            format!(
                "  {} contact pairs in all, {} in the last step; brute force on {} elements: {} mismatches",
                self.total_pairs, self.last_pairs, self.checked, self.mismatches
            ),
            format!("  setup {:.3} s, search {:.3} s", self.setup_s, self.time_s),
        ];
        Report { result, lines }
    }
}

/// Axis-aligned box: min x, y, z then max x, y, z.
type Aabb = [f64; 6];

fn overlap(a: &Aabb, b: &Aabb) -> bool {
    a[0] <= b[3] && b[0] <= a[3] && a[1] <= b[4] && b[1] <= a[4] && a[2] <= b[5] && b[2] <= a[5]
}

/// Uniform search grid over the domain every node stays in.
#[derive(Debug, Clone, Copy)]
struct Grid {
    origin: [f64; 3],
    inv_cell: f64,
    n: [usize; 3],
}

impl Grid {
    fn cells(&self) -> usize {
        self.n[0] * self.n[1] * self.n[2]
    }

    fn coord(&self, p: &[f64], d: usize) -> usize {
        (((p[d] - self.origin[d]) * self.inv_cell).max(0.0) as usize).min(self.n[d] - 1)
    }

    fn cell_of(&self, b: &Aabb) -> [usize; 3] {
        [self.coord(b, 0), self.coord(b, 1), self.coord(b, 2)]
    }

    fn index(&self, c: [usize; 3]) -> usize {
        c[0] + self.n[0] * (c[1] + self.n[1] * c[2])
    }
}

/// Mesh and search state shared by the team.
struct Mesh<'a> {
    cfg: Config,
    /// Node coordinates relative to the gear centre, unrotated.
    reference: Vec<[f64; 3]>,
    /// Element connectivity (global node numbers).
    conn: Vec<[u32; 8]>,
    nodes: Shared<'a, [f64; 3]>,
    boxes: Shared<'a, Aabb>,
    cell: Shared<'a, u32>,
    /// Per-thread cell counts, then per-thread insertion cursors: `threads x cells`.
    counts: Shared<'a, u32>,
    cell_start: Shared<'a, u32>,
    sorted: Shared<'a, u32>,
    /// Gear of each element in `sorted`, alongside it (saves a division per candidate).
    sorted_gear: Shared<'a, u32>,
    thread_totals: Shared<'a, u32>,
    grid: Grid,
}

fn build_reference(cfg: &Config) -> (Vec<[f64; 3]>, Vec<[u32; 8]>) {
    let mut reference = Vec::with_capacity(cfg.nodes_per_gear());
    let teeth = (cfg.nt / 8) as f64;
    for k in 0..=cfg.nz {
        for t in 0..cfg.nt {
            let th = 2.0 * PI * t as f64 / cfg.nt as f64;
            let outer = R_OUT - TOOTH + TOOTH * (teeth * th).cos();
            for a in 0..=cfg.nr {
                let r = R_IN + (outer - R_IN) * a as f64 / cfg.nr as f64;
                reference.push([
                    r * th.cos(),
                    r * th.sin(),
                    HEIGHT * k as f64 / cfg.nz as f64,
                ]);
            }
        }
    }
    let node =
        |a: usize, t: usize, k: usize| (a + (cfg.nr + 1) * ((t % cfg.nt) + cfg.nt * k)) as u32;
    let mut conn = Vec::with_capacity(cfg.elements_per_gear() * cfg.gears());
    for g in 0..cfg.gears() {
        let base = (g * cfg.nodes_per_gear()) as u32;
        for k in 0..cfg.nz {
            for t in 0..cfg.nt {
                for a in 0..cfg.nr {
                    let e = [
                        node(a, t, k),
                        node(a + 1, t, k),
                        node(a + 1, t + 1, k),
                        node(a, t + 1, k),
                        node(a, t, k + 1),
                        node(a + 1, t, k + 1),
                        node(a + 1, t + 1, k + 1),
                        node(a, t + 1, k + 1),
                    ];
                    conn.push(e.map(|n| n + base));
                }
            }
        }
    }
    (reference, conn)
}

/// Gear centre and rotation angle at `step`: neighbours turn in opposite directions, odd gears
/// half a tooth out of phase so the teeth interlock.
fn gear_pose(cfg: &Config, g: usize, step: usize) -> ([f64; 2], f64) {
    let (gx, gy) = (g % cfg.gears_x, g / cfg.gears_x);
    let odd = (gx + gy) % 2 == 1;
    let tooth = 2.0 * PI / (cfg.nt / 8) as f64;
    let omega = tooth / 40.0;
    let angle = if odd {
        -omega * step as f64 + tooth / 2.0
    } else {
        omega * step as f64
    };
    ([gx as f64 * SPACING, gy as f64 * SPACING], angle)
}

/// Builds the gears and runs the search on `threads` threads.
pub fn run(cfg: &Config, threads: usize) -> Outcome {
    let threads = threads.max(1);
    let setup_start = Instant::now();
    let (reference, conn) = build_reference(cfg);
    let nnodes = cfg.nodes_per_gear() * cfg.gears();
    let nelem = conn.len();
    // Largest element box under any rotation is at most the element's diameter.
    let diameter = conn[..cfg.elements_per_gear()]
        .iter()
        .map(|e| {
            let p = e.map(|n| reference[n as usize]);
            let mut d2 = 0.0f64;
            for a in &p {
                for b in &p {
                    d2 = d2
                        .max((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2));
                }
            }
            d2.sqrt()
        })
        .fold(0.0, f64::max);
    let cell = diameter * 1.001;
    let margin = R_OUT + cell;
    let origin = [-margin, -margin, -cell];
    let extent = [
        (cfg.gears_x - 1) as f64 * SPACING + 2.0 * margin,
        (cfg.gears_y - 1) as f64 * SPACING + 2.0 * margin,
        HEIGHT + 2.0 * cell,
    ];
    let grid = Grid {
        origin,
        inv_cell: 1.0 / cell,
        n: extent.map(|e| (e / cell).ceil() as usize + 1),
    };
    let ncells = grid.cells();
    let mut nodes = vec![[0.0f64; 3]; nnodes];
    let mut boxes = vec![[0.0f64; 6]; nelem];
    let mut cells = vec![0u32; nelem];
    let mut counts = vec![0u32; threads * ncells];
    let mut cell_start = vec![0u32; ncells + 1];
    let mut sorted = vec![0u32; nelem];
    let mut sorted_gear = vec![0u32; nelem];
    let mut totals = vec![0u32; threads];
    let mesh = Mesh {
        cfg: *cfg,
        reference,
        conn,
        nodes: Shared::new(&mut nodes),
        boxes: Shared::new(&mut boxes),
        cell: Shared::new(&mut cells),
        counts: Shared::new(&mut counts),
        cell_start: Shared::new(&mut cell_start),
        sorted: Shared::new(&mut sorted),
        sorted_gear: Shared::new(&mut sorted_gear),
        thread_totals: Shared::new(&mut totals),
        grid,
    };
    let found: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());
    let out = team::run(threads, |ctx| {
        let own_elems = ctx.range(nelem);
        // SAFETY: first touch of own blocks before the first barrier.
        unsafe {
            mesh.boxes.part_mut(own_elems.clone()).fill([0.0; 6]);
            mesh.cell.part_mut(own_elems.clone()).fill(0);
            mesh.sorted.part_mut(own_elems.clone()).fill(0);
            mesh.sorted_gear.part_mut(own_elems.clone()).fill(0);
            mesh.counts
                .part_mut(ctx.tid * ncells..(ctx.tid + 1) * ncells)
                .fill(0);
        }
        // Room for the expected contacts: a few per boundary element, grown only if needed.
        let mut pairs: Vec<(u32, u32)> =
            Vec::with_capacity(16 + 4 * own_elems.len() / cfg.nr.max(1));
        ctx.barrier();
        let start = ctx.is_leader().then(Instant::now);
        let mut total = 0.0;
        for step in 0..cfg.steps {
            pairs.clear();
            search_step(ctx, &mesh, step, &mut pairs);
            total += ctx.sum(pairs.len() as f64);
        }
        let elapsed = start.map(|s| s.elapsed().as_secs_f64());
        let last = ctx.sum(pairs.len() as f64);
        found
            .lock()
            .expect("no thread panicked holding the pair list")
            .extend_from_slice(&pairs);
        (total, last, elapsed)
    });
    let (total, last, elapsed) = out[0];
    let time_s = elapsed.unwrap_or(0.0);
    drop(mesh);
    let found = found
        .into_inner()
        .expect("no thread panicked holding the pair list");
    let stride = (nelem / 2000).max(1);
    let mismatches = brute_force_mismatches(&boxes, nelem, cfg.elements_per_gear(), stride, &found);
    let setup_s = setup_start.elapsed().as_secs_f64() - time_s;
    Outcome {
        threads,
        cfg: *cfg,
        elements: nelem,
        cells: ncells,
        total_pairs: total as u64,
        last_pairs: last as u64,
        checked: nelem.div_ceil(stride),
        mismatches,
        setup_s,
        time_s,
    }
}

/// One step: move nodes, compute boxes, bin them, collect own elements' contact pairs.
fn search_step(ctx: &Ctx, m: &Mesh<'_>, step: usize, pairs: &mut Vec<(u32, u32)>) {
    let cfg = &m.cfg;
    let npg = cfg.nodes_per_gear();
    let nelem = m.conn.len();
    let ncells = m.grid.cells();
    // 1. Rotate own nodes.
    let own_nodes = ctx.range(npg * cfg.gears());
    {
        // SAFETY: own nodes only; read by others after the barrier below.
        let nodes = unsafe { m.nodes.part_mut(own_nodes.clone()) };
        let mut g_cur = usize::MAX;
        let (mut c, mut cos, mut sin) = ([0.0; 2], 1.0, 0.0);
        for (x, n) in nodes.iter_mut().zip(own_nodes.clone()) {
            let g = n / npg;
            if g != g_cur {
                let (centre, angle) = gear_pose(cfg, g, step);
                (g_cur, c, cos, sin) = (g, centre, angle.cos(), angle.sin());
            }
            let r = &m.reference[n - g * npg];
            *x = [
                c[0] + cos * r[0] - sin * r[1],
                c[1] + sin * r[0] + cos * r[1],
                r[2],
            ];
        }
    }
    ctx.barrier();
    // 2. Boxes of own elements, their cells, own cell histogram.
    let own = ctx.range(nelem);
    let row = ctx.tid * ncells..(ctx.tid + 1) * ncells;
    {
        // SAFETY: nodes are read-only until the next step's barrier; boxes, cells and the
        // histogram row are this thread's own.
        let nodes = unsafe { m.nodes.get() };
        // SAFETY: as above, own blocks only.
        let (boxes, cells, counts) = unsafe {
            (
                m.boxes.part_mut(own.clone()),
                m.cell.part_mut(own.clone()),
                m.counts.part_mut(row.clone()),
            )
        };
        counts.fill(0);
        for ((b, c), e) in boxes.iter_mut().zip(cells.iter_mut()).zip(own.clone()) {
            let mut bb = [
                f64::INFINITY,
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            ];
            for &n in &m.conn[e] {
                let p = &nodes[n as usize];
                for d in 0..3 {
                    bb[d] = bb[d].min(p[d]);
                    bb[d + 3] = bb[d + 3].max(p[d]);
                }
            }
            *b = bb;
            let cell = m.grid.index(m.grid.cell_of(&bb));
            *c = cell as u32;
            counts[cell] += 1;
        }
    }
    ctx.barrier();
    // 3. Exclusive prefix over (cell, thread), cells split among threads.
    let own_cells = ctx.range(ncells);
    let counts = m.counts.as_ptr();
    let threads = ctx.nthreads;
    let mut local = 0u32;
    for c in own_cells.clone() {
        for t in 0..threads {
            // SAFETY: in this phase every thread reads and writes only the columns (cells) it
            // owns, in every thread's row; rows were completed before the barrier above.
            local += unsafe { *counts.add(t * ncells + c) };
        }
    }
    // SAFETY: own slot; read by all after the barrier.
    unsafe { m.thread_totals.part_mut(ctx.tid..ctx.tid + 1)[0] = local };
    ctx.barrier();
    // SAFETY: totals are read-only until the next step.
    let mut off: u32 = unsafe { m.thread_totals.get() }[..ctx.tid].iter().sum();
    {
        // SAFETY: own cells of cell_start; the thread owning the last cell also writes the end.
        let starts = unsafe {
            m.cell_start
                .part_mut(own_cells.start..own_cells.end + usize::from(own_cells.end == ncells))
        };
        for (s, c) in starts.iter_mut().zip(own_cells.clone()) {
            *s = off;
            for t in 0..threads {
                // SAFETY: own columns only, as above.
                unsafe {
                    let p = counts.add(t * ncells + c);
                    let n = *p;
                    *p = off;
                    off += n;
                }
            }
        }
        if own_cells.end == ncells {
            starts[own_cells.len()] = nelem as u32;
        }
    }
    ctx.barrier();
    // 4. Scatter own elements into the sorted order (stable: thread order, then element order).
    {
        // SAFETY: cells are own; the cursor row is own; slots in `sorted` are distinct by
        // construction of the prefix sums. Raw writes: other threads write other slots.
        let cells = unsafe { m.cell.part_mut(own.clone()) };
        // SAFETY: own cursor row.
        let cursors = unsafe { m.counts.part_mut(row) };
        let (sorted, sorted_gear) = (m.sorted.as_ptr(), m.sorted_gear.as_ptr());
        let epg = cfg.elements_per_gear();
        for (&c, e) in cells.iter().zip(own.clone()) {
            let slot = &mut cursors[c as usize];
            // SAFETY: slot < nelem (prefix sums of nelem elements); each slot written once.
            unsafe {
                *sorted.add(*slot as usize) = e as u32;
                *sorted_gear.add(*slot as usize) = (e / epg) as u32;
            }
            *slot += 1;
        }
    }
    ctx.barrier();
    // 5. Query own elements against the 27 neighbouring cells.
    // SAFETY: boxes, cells, starts and the order are read-only until the next step.
    let (boxes, starts, sorted, sorted_gear) = unsafe {
        (
            m.boxes.get(),
            m.cell_start.get(),
            m.sorted.get(),
            m.sorted_gear.get(),
        )
    };
    let epg = cfg.elements_per_gear();
    let n = m.grid.n;
    for i in own {
        let bi = &boxes[i];
        let gi = (i / epg) as u32;
        let c = m.grid.cell_of(bi);
        for cz in c[2].saturating_sub(1)..(c[2] + 2).min(n[2]) {
            for cy in c[1].saturating_sub(1)..(c[1] + 2).min(n[1]) {
                let first = m.grid.index([c[0].saturating_sub(1), cy, cz]);
                let last = m.grid.index([(c[0] + 1).min(n[0] - 1), cy, cz]);
                // Cells adjacent in x are contiguous in the sorted order.
                let span = starts[first] as usize..starts[last + 1] as usize;
                for (&j, &gj) in sorted[span.clone()].iter().zip(&sorted_gear[span]) {
                    if gj != gi && j as usize > i && overlap(bi, &boxes[j as usize]) {
                        pairs.push((i as u32, j));
                    }
                }
            }
        }
    }
    // The next step rewrites nodes only after everybody finished querying.
    ctx.barrier();
}

/// Compares the search's pairs with brute force for every `stride`-th element.
fn brute_force_mismatches(
    boxes: &[Aabb],
    nelem: usize,
    epg: usize,
    stride: usize,
    found: &[(u32, u32)],
) -> usize {
    let checked = |e: usize| e % stride == 0;
    let mut expect = BTreeSet::new();
    for i in (0..nelem).step_by(stride) {
        for j in 0..nelem {
            if i / epg != j / epg && overlap(&boxes[i], &boxes[j]) {
                expect.insert((i.min(j) as u32, i.max(j) as u32));
            }
        }
    }
    let got: BTreeSet<(u32, u32)> = found
        .iter()
        .copied()
        .filter(|&(i, j)| checked(i as usize) || checked(j as usize))
        .collect();
    let duplicates = found.len() - found.iter().copied().collect::<BTreeSet<_>>().len();
    expect.symmetric_difference(&got).count() + duplicates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Config {
        Config {
            gears_x: 3,
            gears_y: 2,
            nr: 2,
            nt: 32,
            nz: 2,
            steps: 6,
        }
    }

    #[test]
    fn search_matches_brute_force_for_every_element() {
        // 6 gears x 128 elements: stride 1, so every element is checked.
        for threads in [1, 2, 3] {
            let o = run(&tiny(), threads);
            assert_eq!(o.checked, o.elements);
            assert!(o.verified(), "{threads} threads: {o:?}");
        }
    }

    #[test]
    fn neighbouring_gears_touch_and_counts_do_not_depend_on_threads() {
        let one = run(&tiny(), 1);
        let two = run(&tiny(), 2);
        assert!(one.last_pairs > 0);
        assert_eq!(one.total_pairs, two.total_pairs);
        assert_eq!(one.last_pairs, two.last_pairs);
    }

    #[test]
    fn lone_gear_has_no_contacts_and_fails_verification() {
        let o = run(
            &Config {
                gears_x: 1,
                gears_y: 1,
                ..tiny()
            },
            2,
        );
        assert_eq!(o.total_pairs, 0);
        assert!(!o.verified());
    }

    #[test]
    fn overlap_is_inclusive_and_per_axis() {
        let a = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        assert!(overlap(&a, &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]));
        assert!(!overlap(&a, &[1.1, 0.0, 0.0, 2.0, 1.0, 1.0]));
        assert!(!overlap(&a, &[0.0, 0.0, -2.0, 1.0, 1.0, -0.1]));
    }
}
