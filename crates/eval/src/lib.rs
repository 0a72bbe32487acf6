//! Benchmarks and the evaluation harness. Every figure is a ratio measured side by side in one
//! run (VM vs native, loaded vs idle), never a timed test.

pub mod guests;
pub mod hugepages;
pub mod isolation;
pub mod mpi_bench;
pub mod native;
pub mod slurm_bench;
pub mod stats;
pub mod vmm_bench;
