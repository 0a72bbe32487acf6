//! Transparent huge pages set to `always` for the `native-thp` configuration's runs, and put
//! back as they were when the guard is dropped (after the run, on failure, and on Ctrl-C, which
//! the harness turns into a graceful stop).

use std::path::Path;

use dualstack_zones::HostPaths;

use super::runner::chain;

/// The host's THP mode file.
pub const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// The mode selected in a THP mode file's text (`always [madvise] never` -> `madvise`).
pub fn selected(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
}

/// Restores the THP mode on drop. The old mode is journaled before the change
/// ([`dualstack_jobs::setting`]), so a SIGKILL of the harness is undone by the next `dualstack`
/// start or `dualstack recover`.
#[derive(Debug)]
pub struct ThpGuard {
    lease: dualstack_jobs::setting::SettingLease,
}

impl ThpGuard {
    /// Sets `path` (normally [`THP_ENABLED`]) to `mode`, journaling the old mode in `paths`'
    /// state database first.
    pub fn set(paths: &HostPaths, path: &Path, mode: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let old = selected(&text)
            .ok_or_else(|| format!("{} holds no [selected] mode: {text:?}", path.display()))?
            .to_string();
        let lease = dualstack_jobs::setting::set(paths, path, &old, mode)
            .map_err(|e| format!("setting {} to {mode}: {}", path.display(), chain(&e)))?;
        Ok(ThpGuard { lease })
    }

    /// The mode that will be put back.
    pub fn old(&self) -> &str {
        self.lease.previous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_restores_a_mode_file() {
        let dir = tempfile::tempdir().unwrap();
        let paths = HostPaths::fake(dir.path(), false);
        std::fs::create_dir_all(&paths.state_dir).unwrap();
        let p = dir.path().join("enabled");
        std::fs::write(&p, "always [madvise] never\n").unwrap();
        {
            let g = ThpGuard::set(&paths, &p, "always").unwrap();
            assert_eq!(g.old(), "madvise");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "always");
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "madvise");
        std::fs::write(&p, "garbage").unwrap();
        assert!(ThpGuard::set(&paths, &p, "always")
            .unwrap_err()
            .contains("no [selected]"));
        assert_eq!(selected("[always] madvise never"), Some("always"));
    }
}
