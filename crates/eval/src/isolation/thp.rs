//! Transparent huge pages set to `always` for the `native-thp` configuration's runs, and put
//! back as they were when the guard is dropped (after the run, on failure, and on Ctrl-C, which
//! the harness turns into a graceful stop).

use std::path::{Path, PathBuf};

/// The host's THP mode file.
pub const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// The mode selected in a THP mode file's text (`always [madvise] never` -> `madvise`).
pub fn selected(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
}

/// Restores the THP mode on drop.
#[derive(Debug)]
pub struct ThpGuard {
    path: PathBuf,
    old: String,
}

impl ThpGuard {
    /// Sets `path` (normally [`THP_ENABLED`]) to `mode`, remembering the old mode.
    pub fn set(path: &Path, mode: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let old = selected(&text)
            .ok_or_else(|| format!("{} holds no [selected] mode: {text:?}", path.display()))?
            .to_string();
        std::fs::write(path, mode)
            .map_err(|e| format!("setting {} to {mode}: {e}", path.display()))?;
        Ok(ThpGuard {
            path: path.to_path_buf(),
            old,
        })
    }

    /// The mode that will be put back.
    pub fn old(&self) -> &str {
        &self.old
    }
}

impl Drop for ThpGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.old) {
            tracing::error!(
                "could not restore {} to {}: {e}",
                self.path.display(),
                self.old
            );
            eprintln!(
                "dualstack: could not restore {} to {} ({e}); write it by hand",
                self.path.display(),
                self.old
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_restores_a_mode_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("enabled");
        std::fs::write(&p, "always [madvise] never\n").unwrap();
        {
            let g = ThpGuard::set(&p, "always").unwrap();
            assert_eq!(g.old(), "madvise");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "always");
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "madvise");
        std::fs::write(&p, "garbage").unwrap();
        assert!(ThpGuard::set(&p, "always")
            .unwrap_err()
            .contains("no [selected]"));
        assert_eq!(selected("[always] madvise never"), Some("always"));
    }
}
