//! Static, dependency-free HPC mini-apps for dualstack's isolation experiment.
//!
//! Each app stands in for one of the paper's workloads and keeps its computational character
//! (memory access pattern, flop mix): [`hpccg`] (CG on a 27-point stencil), [`minife`]
//! (hex8 finite-element assembly + CG), [`minimd`] (Lennard-Jones MD with neighbour lists,
//! MiniMD/LAMMPS), [`amg`] (geometric multigrid V-cycles), [`phdmesh`] (bounding-box contact
//! search), [`stream`] (STREAM copy/scale/add/triad) and [`fwq`] (fixed-work-quantum noise
//! probe). Every app is a thin binary over a library kernel, so the numerics are unit-tested
//! directly.
//!
//! The binaries use only `std`, build as static glibc executables (`scripts/build-apps`) and
//! run both natively and inside the HPC VMM, which serves Linux syscalls itself. Their measured
//! phases make (almost) no syscalls: memory is allocated and first-touched during setup, threads
//! are spawned once and synchronise with spinning barriers ([`team`]), and fine-grained timing
//! reads the TSC ([`timing`]); `clock_gettime` is called only at the two edges of the phase.
//!
//! # The apps at their default size
//!
//! | app | stands in for | default problem | memory | scaling |
//! | --- | --- | --- | --- | --- |
//! | `hpccg` | HPCCG | 80^3 points per thread, 300 CG iterations | ~190 MB per thread | weak |
//! | `minife` | MiniFE | 80^3 hex8 elements, CG to 1e-10 (220 iterations) | ~190 MB | strong |
//! | `minimd` | MiniMD / LAMMPS LJ | 24^3 fcc cells (55,296 atoms), 100 steps | ~40 MB | strong |
//! | `amg` | AMG | 191^3 points, 12 V(2,2) cycles, 7 levels | ~200 MB | strong |
//! | `phdmesh` | phdMesh | 16 gears, 65,536 boxes, 200 search steps | ~15 MB | strong |
//! | `stream` | STREAM | 3 x 2^24 doubles, 40 repetitions | 384 MB | strong |
//! | `fwq` | FWQ | 15,000 quanta of ~0.18 ms per thread | tiny | per thread |
//!
//! # Command line
//!
//! Every app takes `--threads N` (default: `available_parallelism`, i.e. the CPUs in its
//! affinity mask), `--size small|default|large` (small runs in well under 0.5 s, default about
//! 2-5 s on one core), `--json`, `--help`, and app-specific size options (see each module).
//!
//! # Output format (what the harness parses)
//!
//! Human-readable lines, then as the **last line**
//!
//! ```text
//! RESULT {"app":"hpccg","threads":2,"time_s":1.234,"verified":true,"nx":80,...,"size":"default"}
//! ```
//!
//! With `--json` the app prints only the JSON object (no prefix, nothing else on stdout).
//! The object always has `app` (string), `threads` (integer), `time_s` (seconds of the measured
//! phase, setup excluded), `verified` (bool) and `size` (preset name); most apps add `setup_s`
//! and app-specific metrics (iterations, residuals, GFLOP/s, bandwidths, noise percentiles).
//! Non-finite numbers are written as `null`. [`parse_result_line`] reads either form.
//!
//! Exit status: 0 when the app's own verification passed, 1 when it failed, 2 for a bad
//! command line.

// Numeric kernels index several arrays with one loop variable; iterator chains would hide
// the stencils.
#![allow(clippy::needless_range_loop)]

pub mod amg;
pub mod args;
pub mod cli;
pub mod fwq;
pub mod hpccg;
pub mod minife;
pub mod minimd;
pub mod phdmesh;
pub mod report;
pub mod sparse;
pub mod stream;
pub mod team;
pub mod timing;

pub use report::{parse_result_line, AppResult, Json};

/// Writes every page of `v` once (volatile, so it cannot be optimised away), so the page faults
/// of freshly allocated memory happen now, in setup, and not in the measured phase.
pub fn first_touch<T: Copy>(v: &mut [T]) {
    let step = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for i in (0..v.len()).step_by(step) {
        let p: *mut T = &mut v[i];
        // SAFETY: `p` points to a live, initialised element of `v`; rewriting its own value.
        unsafe { std::ptr::write_volatile(p, std::ptr::read_volatile(p)) };
    }
}
