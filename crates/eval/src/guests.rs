//! Benchmark guest programs written in C, compiled on the machine that runs the benchmark
//! (gcc -static, or the default dynamic link for the start-up benchmark), cached by content
//! hash.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A C benchmark guest shipped with the project.
#[derive(Clone, Copy, Debug)]
pub struct GuestSource {
    pub name: &'static str,
    pub source: &'static str,
    pub openmp: bool,
}

pub const CG: GuestSource = GuestSource {
    name: "cg",
    source: include_str!("../guests/cg.c"),
    openmp: true,
};
pub const HELLO: GuestSource = GuestSource {
    name: "hello",
    source: include_str!("../guests/hello.c"),
    openmp: false,
};
pub const SYSLOOP: GuestSource = GuestSource {
    name: "sysloop",
    source: include_str!("../guests/sysloop.c"),
    openmp: false,
};
pub const READLOOP: GuestSource = GuestSource {
    name: "readloop",
    source: include_str!("../guests/readloop.c"),
    openmp: false,
};
pub const FUTEXPP: GuestSource = GuestSource {
    name: "futexpp",
    source: include_str!("../guests/futexpp.c"),
    openmp: false,
};
pub const BARRIER: GuestSource = GuestSource {
    name: "barrier",
    source: include_str!("../guests/barrier.c"),
    openmp: true,
};

pub const SIGRT: GuestSource = GuestSource {
    name: "sigrt",
    source: include_str!("../guests/sigrt.c"),
    openmp: false,
};
/// CG timing every kernel with getrusage (as HPCCG does), printing its wall time (the VMM's
/// tests build the same source without WALL_CLOCK to compare its output with a native run's).
pub const CG_TIMED: GuestSource = GuestSource {
    name: "cg_timed",
    source: concat!("#define WALL_CLOCK\n", include_str!("../guests/cg_timed.c")),
    openmp: true,
};

/// Failure to build a guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot create the guest cache directory {0}")]
    Dir(String, #[source] std::io::Error),
    #[error("cannot run gcc to build benchmark guest {name} (install gcc: scripts/install-deps)")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gcc failed to build benchmark guest {name}:\n{stderr}")]
    Compile { name: String, stderr: String },
}

/// Default cache directory for compiled guests.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("DUALSTACK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("dualstack-cache"))
        .join("guests")
}

/// Build (or reuse) a static binary of `g` in `dir`.
pub fn build(g: &GuestSource, dir: &Path) -> Result<PathBuf, GuestError> {
    build_linked(g, dir, true)
}

/// Build (or reuse) `g` linked the default, dynamic way (gcc without -static).
pub fn build_dynamic(g: &GuestSource, dir: &Path) -> Result<PathBuf, GuestError> {
    build_linked(g, dir, false)
}

fn build_linked(g: &GuestSource, dir: &Path, link_static: bool) -> Result<PathBuf, GuestError> {
    std::fs::create_dir_all(dir).map_err(|e| GuestError::Dir(dir.display().to_string(), e))?;
    let mut h = DefaultHasher::new();
    g.source.hash(&mut h);
    g.openmp.hash(&mut h);
    let kind = if link_static { "" } else { "-dyn" };
    let out = dir.join(format!("{}{kind}-{:016x}", g.name, h.finish()));
    if out.exists() {
        return Ok(out);
    }
    let src = dir.join(format!("{}{kind}.c", g.name));
    std::fs::write(&src, g.source).map_err(|e| GuestError::Dir(src.display().to_string(), e))?;
    let tmp = out.with_extension("tmp");
    let mut cmd = Command::new("gcc");
    if link_static {
        cmd.arg("-static");
    }
    cmd.args(["-O2", "-pthread", "-o"]).arg(&tmp).arg(&src);
    if g.openmp {
        cmd.arg("-fopenmp");
    }
    cmd.arg("-lm");
    let o = cmd.output().map_err(|source| GuestError::Spawn {
        name: g.name.into(),
        source,
    })?;
    if !o.status.success() {
        return Err(GuestError::Compile {
            name: g.name.into(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    std::fs::rename(&tmp, &out).map_err(|e| GuestError::Dir(out.display().to_string(), e))?;
    Ok(out)
}

/// Pull `key=value` out of a guest's output line (e.g. `time_s=1.23`).
pub fn field(output: &str, key: &str) -> Option<f64> {
    output
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse() {
        let s = "cg n=64 iters=77 threads=1 residual=9.8e-11 time_s=0.833000";
        assert_eq!(field(s, "time_s"), Some(0.833));
        assert_eq!(field(s, "threads"), Some(1.0));
        assert_eq!(field(s, "missing"), None);
    }

    /// The benchmark's CG_TIMED prints its wall time (the VMM's test builds the same source
    /// without WALL_CLOCK and prints none).
    #[test]
    fn cg_timed_prints_its_wall_time() {
        let dir = tempfile::tempdir().unwrap();
        let bin = build(&CG_TIMED, dir.path()).unwrap();
        let o = Command::new(&bin).args(["8", "3"]).output().unwrap();
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("timer_calls=33"), "{out}");
        assert!(field(&out, "time_s").is_some_and(|t| t > 0.0), "{out}");
    }
}
