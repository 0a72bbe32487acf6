//! Building the small programs tests run (natively, in the HPC VM, through the CLI or the
//! daemon): one compile command per language, cached by the source text, the flags and the
//! link kind, so a suite builds each program once however many tests use it.
//!
//! ```no_run
//! # fn t(dir: &std::path::Path) {
//! use dualstack_testutil::guest;
//! // A static C program into a path of the test's own (e.g. a guest root it hands out).
//! let spin = guest::build_c(&guest::source("spin.c"), &dir.join("spin"), &[]);
//! // The same from text.
//! let hello = guest::build_c_text("int main(void) { return 0; }", &dir.join("hello"), &[]);
//! # }
//! ```
//!
//! A source may ask for compiler flags on its first line, `// build: FLAGS` (`! build:` in
//! Fortran); the caller's flags come after them.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// One compile at a time per test binary: the machine's cores are shared by everyone.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// How the program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    Static,
    Dynamic,
}

/// A program shipped with testutil for every suite (`crates/testutil/guests/<name>`).
pub fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("guests")
        .join(name)
}

/// The cache [`build_c`] and [`build_c_text`] use: `$TMPDIR/dualstack-test-guests`.
pub fn default_cache() -> PathBuf {
    std::env::temp_dir().join("dualstack-test-guests")
}

/// Extra compiler flags a source asks for on a `// build: FLAGS` first line (`! build:` in
/// Fortran).
pub fn build_flags(src: &str) -> Vec<String> {
    src.lines()
        .next()
        .and_then(|l| {
            let l = l.trim();
            l.strip_prefix("// build:")
                .or_else(|| l.strip_prefix("! build:"))
        })
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The compile command for a source file, by extension (c, cpp, rs, f90).
fn compiler(src: &Path, out: &Path, link: Link, extra: &[String]) -> Result<Command, String> {
    let link_static = link == Link::Static;
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut c = match ext {
        "c" => {
            let mut c = Command::new("gcc");
            c.args(["-O2", "-Wall", "-pthread"]);
            c
        }
        "cpp" => {
            let mut c = Command::new("g++");
            c.args(["-O2", "-Wall", "-pthread", "-std=c++17"]);
            c
        }
        "rs" => {
            let mut c = Command::new("rustc");
            c.args(["--edition", "2021", "-O"]);
            if link_static {
                c.args(["-C", "target-feature=+crt-static"]);
            }
            c.arg(src).arg("-o").arg(out).args(extra);
            return Ok(c);
        }
        "f90" => {
            let mut c = Command::new("gfortran");
            c.args(["-O2", "-Wall"]);
            if link_static {
                // Static libgfortran calls pthread functions through weak references that a
                // static link leaves null (close_unit then jumps to 0): pull them in.
                for sym in [
                    "pthread_mutex_destroy",
                    "pthread_key_create",
                    "pthread_key_delete",
                    "pthread_getspecific",
                    "pthread_setspecific",
                    "pthread_once",
                ] {
                    c.arg(format!("-Wl,-u,{sym}"));
                }
            }
            c
        }
        other => {
            return Err(format!(
                "guest {} has unknown extension {other:?} (c, cpp, rs, f90)",
                src.display()
            ))
        }
    };
    if link_static {
        c.arg("-static");
    }
    c.args(extra).arg("-o").arg(out).arg(src);
    Ok(c)
}

/// Build `src` (its `// build:` flags, then `flags`) into `cache`, or reuse the build of the
/// same text, flags and link kind: `cache/<stem>-<static|dynamic>-<hash>`. `Err` names what
/// failed with the compiler's output.
pub fn try_build(src: &Path, cache: &Path, link: Link, flags: &[&str]) -> Result<PathBuf, String> {
    let name = src
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("guest source {} has no file name", src.display()))?;
    let text = std::fs::read_to_string(src)
        .map_err(|e| format!("cannot read guest source {}: {e}", src.display()))?;
    let mut extra = build_flags(&text);
    extra.extend(flags.iter().map(|f| f.to_string()));
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    extra.hash(&mut h);
    (link == Link::Static).hash(&mut h);
    let kind = match link {
        Link::Static => "static",
        Link::Dynamic => "dynamic",
    };
    std::fs::create_dir_all(cache)
        .map_err(|e| format!("cannot create the guest cache {}: {e}", cache.display()))?;
    let out = cache.join(format!("{name}-{kind}-{:016x}", h.finish()));
    let _g = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if out.exists() {
        return Ok(out);
    }
    // Tests (and test binaries) run in parallel and may build the same guest: each build has
    // its own temporary, published by rename.
    static BUILD: AtomicUsize = AtomicUsize::new(0);
    let n = BUILD.fetch_add(1, Ordering::Relaxed);
    let tmp = out.with_extension(format!("tmp{}-{n}", std::process::id()));
    let o = compiler(src, &tmp, link, &extra)?
        .output()
        .map_err(|e| format!("cannot run the compiler for {name}: {e}"))?;
    if !o.status.success() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "building guest {name} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    std::fs::rename(&tmp, &out).map_err(|e| format!("cannot publish guest {name}: {e}"))?;
    Ok(out)
}

/// [`try_build`], panicking with the compiler's output on failure.
#[track_caller]
pub fn build(src: &Path, cache: &Path, link: Link, flags: &[&str]) -> PathBuf {
    try_build(src, cache, link, flags).unwrap_or_else(|e| panic!("{e}"))
}

/// The static C program `src` built into `out` (a copy of the cached build in
/// [`default_cache`]). `Err` names what failed.
pub fn try_build_c(src: &Path, out: &Path, flags: &[&str]) -> Result<PathBuf, String> {
    let built = try_build(src, &default_cache(), Link::Static, flags)?;
    std::fs::copy(&built, out)
        .map_err(|e| format!("cannot copy guest to {}: {e}", out.display()))?;
    Ok(out.to_path_buf())
}

/// [`try_build_c`], panicking with the compiler's output on failure.
#[track_caller]
pub fn build_c(src: &Path, out: &Path, flags: &[&str]) -> PathBuf {
    try_build_c(src, out, flags).unwrap_or_else(|e| panic!("{e}"))
}

/// [`build_c`] from source text (written to the cache as `<out's name>-<hash>.c`).
#[track_caller]
pub fn build_c_text(text: &str, out: &Path, flags: &[&str]) -> PathBuf {
    let name = out
        .file_name()
        .and_then(|s| s.to_str())
        .expect("an output file name");
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    let cache = default_cache();
    std::fs::create_dir_all(&cache).expect("create the guest cache");
    let src = cache.join(format!("{name}-{:016x}.c", h.finish()));
    if !src.exists() {
        let n = std::process::id();
        let tmp = cache.join(format!(".{name}-{:016x}.c.tmp{n}", h.finish()));
        std::fs::write(&tmp, text).expect("write the guest source");
        std::fs::rename(&tmp, &src).expect("publish the guest source");
    }
    build_c(&src, out, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_flags_come_from_the_first_line() {
        assert_eq!(
            build_flags("// build: -fopenmp -lm\nint x;"),
            ["-fopenmp", "-lm"]
        );
        assert_eq!(build_flags("! build: -fopenmp\n"), ["-fopenmp"]);
        assert!(build_flags("int x;\n// build: -lm").is_empty());
    }

    #[test]
    fn a_c_program_is_built_once_and_copied_where_asked() {
        let dir = tempfile_dir();
        let text = "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", X); return 0; }\n";
        let a = build_c_text(text, &dir.join("a"), &["-DX=7"]);
        let b = build_c_text(text, &dir.join("b"), &["-DX=7"]);
        let c = build_c_text(text, &dir.join("c"), &["-DX=8"]);
        for (bin, want) in [(&a, "7\n"), (&b, "7\n"), (&c, "8\n")] {
            let o = Command::new(bin).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&o.stdout), want);
        }
        // Static and not PIE: ET_EXEC.
        let elf = std::fs::read(&a).unwrap();
        assert_eq!(u16::from_le_bytes([elf[16], elf[17]]), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_compile_error_is_reported_with_the_compiler_output() {
        let dir = tempfile_dir();
        let src = dir.join("broken.c");
        std::fs::write(&src, "int main(void) { return missing_symbol; }\n").unwrap();
        let e = try_build_c(&src, &dir.join("broken"), &[]).unwrap_err();
        assert!(
            e.contains("building guest broken failed") && e.contains("missing_symbol"),
            "{e}"
        );
        let e = try_build(&dir.join("x.pas"), &dir, Link::Static, &[]).unwrap_err();
        assert!(e.contains("cannot read guest source"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "dualstack-testutil-guest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
