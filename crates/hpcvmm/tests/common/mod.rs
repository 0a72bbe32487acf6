//! Shared helpers of the HPC VMM integration tests: building the test guests statically (cached
//! by source hash), running them natively and in the VM, and a huge-page reservation guard.
#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dualstack_hpcvmm::jail::{identity, Caller, Jail, JailReport, SuperviseOptions, Supervised};
use dualstack_hpcvmm::{Backing, ExitReport, RunConfig, RunStats};
use dualstack_testutil::guest::Link;

fn guests_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/guests")
}

fn cache_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hpcvmm-guests");
    std::fs::create_dir_all(&d).expect("create the guest cache dir");
    d
}

/// The guest `tests/guests/<name>.{c,cpp,rs,f90}`, built if its source changed.
fn build(name: &str, link: Link) -> PathBuf {
    let dir = guests_src();
    let src = ["c", "cpp", "rs", "f90"]
        .iter()
        .map(|e| dir.join(format!("{name}.{e}")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no source for guest {name} in {}", dir.display()));
    dualstack_testutil::guest::build(&src, &cache_dir(), link, &[])
}

/// Whether a test may go on: `available` says whether the resource `what` (root, KVM, huge
/// pages, a compiler...) is there. When it is missing the test is skipped with a loud SKIP line,
/// unless `DUALSTACK_REQUIRE_ALL=1` is set (CI): then the test fails, so a machine lacking
/// something cannot pass without testing.
pub fn require(what: &str, available: bool) -> bool {
    if !available {
        dualstack_testutil::missing(&format!("needs {what}, which this host lacks"));
    }
    available
}

/// The statically linked guest `tests/guests/<name>.{c,cpp,rs}`, built if its source changed.
pub fn guest(name: &str) -> PathBuf {
    build(name, Link::Static)
}

/// A static guest built from a source outside `tests/guests` (e.g. a benchmark program of
/// crates/eval), with extra compiler flags.
pub fn guest_from(src: &Path, flags: &[&str]) -> PathBuf {
    dualstack_testutil::guest::build(src, &cache_dir(), Link::Static, flags)
}

/// The same guest linked dynamically (for the refusal tests).
pub fn dynamic_guest(name: &str) -> PathBuf {
    build(name, Link::Dynamic)
}

/// What a program printed and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    /// Exit status, 128+signal when killed by a signal.
    pub status: i32,
}

/// How to run a guest.
#[derive(Clone, Debug)]
pub struct Spec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Working directory natively; the guest root in the VM.
    pub dir: Option<PathBuf>,
    pub memory: u64,
    pub backing: Backing,
    pub timeout: Duration,
    pub cpus: Option<Vec<usize>>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            memory: 256 << 20,
            backing: Backing::Lazy,
            timeout: Duration::from_secs(60),
            cpus: None,
        }
    }
}

impl Spec {
    pub fn args(mut self, a: &[&str]) -> Self {
        self.args = a.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn dir(mut self, d: &Path) -> Self {
        self.dir = Some(d.to_path_buf());
        self
    }
    pub fn memory(mut self, m: u64) -> Self {
        self.memory = m;
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
}

fn argv0(bin: &Path) -> String {
    bin.file_name().unwrap().to_string_lossy().into_owned()
}

/// Run natively (argv[0] = the binary's file name, cleared environment plus `spec.env`).
pub fn native(bin: &Path, spec: &Spec) -> Outcome {
    let mut c = Command::new(bin);
    c.arg0(argv0(bin)).args(&spec.args).env_clear();
    for (k, v) in &spec.env {
        c.env(k, v);
    }
    let dir = spec.dir.clone().unwrap_or_else(std::env::temp_dir);
    c.current_dir(dir);
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} natively: {e}", bin.display()));
    let status = o
        .status
        .code()
        .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0));
    Outcome {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        status,
    }
}

use std::os::unix::process::CommandExt;

/// The RunConfig the tests use for `spec`; stdio goes to files in `io`.
pub fn config(bin: &Path, spec: &Spec, io: &Path) -> RunConfig {
    let mut argv = vec![argv0(bin)];
    argv.extend(spec.args.iter().cloned());
    let mut cfg = RunConfig::new(bin, argv);
    cfg.env = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    cfg.memory = spec.memory;
    cfg.backing = spec.backing;
    cfg.root = spec.dir.clone().unwrap_or_else(std::env::temp_dir);
    cfg.timeout = Some(spec.timeout);
    if let Some(c) = &spec.cpus {
        cfg.cpus = c.clone();
    }
    let stdin = io.join("stdin");
    File::create(&stdin).unwrap();
    cfg.stdin = Some(stdin);
    cfg.stdout = Some(io.join("stdout"));
    cfg.stderr = Some(io.join("stderr"));
    cfg
}

/// The jail every test guest runs in: this process's own identity (root here) without any
/// capability, Landlock-confined to the guest root, seccomp-filtered.
pub fn test_jail(cfg: &mut RunConfig) -> Jail {
    // SAFETY: id getters have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let caller = Caller {
        uid,
        gid,
        sudo: None,
    };
    let id = identity::resolve(None, &caller).expect("this process's identity");
    cfg.identity = Some(id.clone());
    let mut jail = Jail::new(id, &cfg.root);
    if let Ok(p) = std::fs::canonicalize(&cfg.program) {
        jail.extra_read.push(p);
    }
    jail
}

/// Run `cfg` in a supervised, jailed child (as `dualstack run` does); `Err` with the VMM's
/// error text. Set DUALSTACK_TEST_NO_JAIL=1 to run in this process instead (debugging).
pub fn run_jailed(cfg: &RunConfig) -> Result<RunStats, String> {
    if std::env::var("DUALSTACK_TEST_NO_JAIL").is_ok_and(|v| v == "1") {
        return dualstack_hpcvmm::run(cfg).map_err(|e| format!("{e:#}"));
    }
    let mut cfg = cfg.clone();
    let jail = test_jail(&mut cfg);
    let r = dualstack_hpcvmm::jail::run::run_jailed(&cfg, &jail, &SuperviseOptions::default())
        .map_err(|e| format!("the jail supervisor failed: {e:#}"))?;
    match r.result {
        Some(Ok((mut stats, report))) => {
            stats.jail = Some(report);
            Ok(stats)
        }
        Some(Err(e)) => Err(e),
        None => Err(format!(
            "the jailed VMM ended without a result: {:?} {}",
            r.supervised.end,
            r.supervised.seccomp_message().unwrap_or_default()
        )),
    }
}

/// Run `cfg` jailed as `nobody` (resolved as root would) with `root` as the guest root, as
/// `dualstack run --user nobody` does; panics when the jailed VMM ends without a result or
/// with an error. Returns the run, what the jail enforced, and how the supervisor saw it end.
pub fn run_as_nobody(cfg: &RunConfig, root: &Path) -> (RunStats, JailReport, Supervised) {
    let caller = Caller {
        uid: 0,
        gid: 0,
        sudo: None,
    };
    let nobody = identity::resolve(Some(&"nobody".parse().unwrap()), &caller).unwrap();
    let jail = Jail::new(nobody, root);
    let r =
        dualstack_hpcvmm::jail::run::run_jailed(cfg, &jail, &SuperviseOptions::default()).unwrap();
    let (stats, report) = r
        .result
        .unwrap_or_else(|| panic!("no result: {:?}", r.supervised))
        .unwrap();
    (stats, report, r.supervised)
}

/// Run in the HPC VM (jailed); panics if the VMM refuses the program.
pub fn in_vm(bin: &Path, spec: &Spec) -> (Outcome, RunStats) {
    let io = tempfile::tempdir().unwrap();
    let cfg = config(bin, spec, io.path());
    let stats =
        run_jailed(&cfg).unwrap_or_else(|e| panic!("the VMM refused {}: {e}", bin.display()));
    let read = |n: &str| std::fs::read_to_string(io.path().join(n)).unwrap_or_default();
    let out = Outcome {
        stdout: read("stdout"),
        stderr: read("stderr"),
        status: stats.exit_status,
    };
    (out, stats)
}

/// Run natively and in the VM; stdout and exit status must match. Returns the VM's view.
pub fn same_as_native(name: &str, spec: &Spec) -> (Outcome, RunStats) {
    same_as_native_bin(&guest(name), spec)
}

/// [`same_as_native`] for a guest built elsewhere (e.g. by [`guest_from`]).
pub fn same_as_native_bin(bin: &Path, spec: &Spec) -> (Outcome, RunStats) {
    let name = argv0(bin);
    let n = native(bin, spec);
    let (v, stats) = in_vm(bin, spec);
    assert_same(&name, &n, &v, &stats);
    (v, stats)
}

/// A VM run `v` (with `stats`) printed and ended as the native run `n` did.
#[track_caller]
pub fn assert_same(name: &str, n: &Outcome, v: &Outcome, stats: &RunStats) {
    assert_eq!(
        n.stdout, v.stdout,
        "{name}: stdout differs between native and VM\nVM stderr: {}\nVM exit: {:?}",
        v.stderr, stats.exit
    );
    assert_eq!(
        n.status, v.status,
        "{name}: exit status differs (native {}, VM {}); VM stderr: {}; VM exit: {:?}",
        n.status, v.status, v.stderr, stats.exit
    );
}

/// Assert the run exited normally with `status`.
pub fn assert_exited(stats: &RunStats, status: i32) {
    assert_eq!(
        stats.exit,
        ExitReport::Exited { status },
        "unexpected end of run"
    );
}

/// A temporary directory tree to act as a guest root / native working directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("hpcvmm-test")
        .tempdir()
        .unwrap()
}

/// Names of this process's threads (from /proc/self/task/*/comm).
pub fn thread_names() -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            if let Ok(c) = std::fs::read_to_string(e.path().join("comm")) {
                v.push(c.trim().to_string());
            }
        }
    }
    v
}

const HUGEPAGE_LOCK: &str = "/run/lock/dualstack-hugepages.lock";
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

fn with_pool_lock<T>(f: impl FnOnce(&mut File) -> T) -> T {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(HUGEPAGE_LOCK)
        .expect("open the huge page lock file");
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock {HUGEPAGE_LOCK}");
    let mut pool = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(NR_HUGEPAGES)
        .expect("open nr_hugepages");
    f(&mut pool)
}

fn read_pool(f: &mut File) -> u64 {
    let mut s = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut s).unwrap();
    s.trim().parse().unwrap()
}

fn write_pool(f: &mut File, n: u64) {
    f.seek(SeekFrom::Start(0)).unwrap();
    let _ = f.write_all(format!("{n}\n").as_bytes());
}

/// 2 MiB huge pages added to the host pool for one test, by delta under the shared lock; the
/// same number is given back on drop, also when the test panics.
pub struct HugePages {
    added: u64,
}

impl HugePages {
    /// Add `n` pages; returns None (nothing changed) if the kernel could not supply them all.
    pub fn reserve(n: u64) -> Option<HugePages> {
        with_pool_lock(|f| {
            let before = read_pool(f);
            write_pool(f, before + n);
            let after = read_pool(f);
            let added = after.saturating_sub(before);
            if added < n {
                let cur = read_pool(f);
                write_pool(f, cur - added);
                return None;
            }
            Some(HugePages { added })
        })
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let added = self.added;
        with_pool_lock(|f| {
            let cur = read_pool(f);
            write_pool(f, cur.saturating_sub(added));
        });
    }
}
