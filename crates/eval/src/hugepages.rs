//! A huge page reservation held for the duration of a benchmark, given back on drop (by
//! delta, under the host-wide lock, through the zones crate's pool functions).

use std::path::PathBuf;

use dualstack_zones::hugepages::{self, HugePageError};
use dualstack_zones::paths::HUGEPAGE_LOCK;

/// Free 2 MiB huge pages system-wide.
pub fn free_2m() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Pages we added to the 2 MiB pool; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: PathBuf,
    count: u64,
}

impl Reservation {
    /// Make sure at least `pages` 2 MiB pages are free, adding only the shortfall.
    pub fn ensure_free_2m(pages: u64) -> Result<Reservation, HugePageError> {
        let pool = PathBuf::from("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages");
        let short = pages.saturating_sub(free_2m());
        if short > 0 {
            hugepages::reserve(std::path::Path::new(HUGEPAGE_LOCK), &pool, 0, 2048, short)?;
        }
        Ok(Reservation { pool, count: short })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Err(e) =
            hugepages::give_back(std::path::Path::new(HUGEPAGE_LOCK), &self.pool, self.count)
        {
            tracing::error!("could not give back {} huge pages: {e}", self.count);
        }
    }
}
