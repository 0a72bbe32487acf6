//! The `kvm` configuration: the paper's real single-stack baseline. The built-in commodity guest
//! image (a stock Debian cloud kernel and the busybox initramfs of `dualstack vm image build`)
//! boots under QEMU with the program on the initramfs, configured the way the paper's "best
//! practices" KVM was:
//!
//! * the guest's memory on 2 MiB huge pages of the zone's NUMA node, preallocated
//!   (`memory-backend-memfd,hugetlb=on,prealloc=on,host-nodes=N,policy=bind`); the pages the
//!   pool lacks are reserved for the run as a journaled lease ([`dualstack_jobs::lease`]), so a
//!   killed harness gives them back at the next `dualstack` start or `dualstack recover`;
//! * one vCPU per zone core, each vCPU thread pinned to its own core (QEMU starts paused, QMP
//!   `query-cpus-fast` names the threads, `sched_setaffinity` pins them, then `cont`); QEMU's
//!   other threads stay in the zone's cpuset, which QEMU is started in;
//! * the program, its dynamic loader and libraries (`ldd`), a script's interpreter and the run
//!   directory's files go on a second, uncompressed cpio archive appended to the image's
//!   initramfs, with an init script (`rdinit=`) that runs the command line in `/work`, times it
//!   inside the guest (`/proc/timer_list`, ns) and prints its stdout, the end of its stderr and a
//!   marker with the exit status and wall time to the serial console, then powers off.
//!
//! The figure of merit comes from inside the guest: a built-in app's own RESULT line, a user
//! program's figure regex over its stdout, or the in-guest wall time. Where a stock guest cannot
//! boot under KVM (this development machine) the plan leaves the configuration out unless the
//! user forces QEMU TCG (`--kvm-tcg`): then the runs are real but emulated, and every table,
//! chart and JSON record marks them correctness-only.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dualstack_commodity::cpio::CpioWriter;
use dualstack_commodity::qemu::{QemuLaunch, ResolvedBoot};
use dualstack_commodity::qmp::Qmp;
use dualstack_commodity::Accel;
use serde::{Deserialize, Serialize};

use super::interrupt;
use super::plan::Plan;
use super::program::UserProgram;
use super::record::RunRecord;
use super::runner::RunContext;
use crate::native::Outcome;

/// Where the run directory appears in the guest (the command starts there).
pub const GUEST_WORKDIR: &str = "/work";
/// The init script's path in the guest (`rdinit=`).
const INIT_PATH: &str = "dualstack-kvm-init";
const MARK: &str = "dualstack-kvm:";
/// Guest memory beyond the plan's `--memory`, for the guest kernel and the unpacked initramfs.
const KERNEL_OVERHEAD: u64 = 128 << 20;
const HUGE: u64 = 2 << 20;

/// How a `kvm` run went, beside its figure (stored with the run as `kvm`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvmFigures {
    /// `kvm`, or `tcg` (forced with `--kvm-tcg`).
    pub accel: String,
    /// The run was emulated (TCG): its answer counts, its times are no performance figure.
    pub correctness_only: bool,
    /// Guest uptime when the init script started (kernel boot), seconds.
    pub boot_s: f64,
    /// The command's wall time measured inside the guest, seconds.
    pub guest_wall_s: f64,
    /// QEMU start to exit, seconds.
    pub host_wall_s: f64,
    /// Guest memory, MiB (all of it on preallocated 2 MiB huge pages).
    pub memory_mib: u64,
    /// Huge pages this run added to the pool (a lease, given back after the run).
    pub hugepages_reserved: u64,
    /// Host CPU each vCPU thread was pinned to, by vCPU index.
    pub vcpu_cpus: Vec<usize>,
    /// Bytes of the initramfs (image + program archive).
    pub initrd_bytes: u64,
}

/// What to run in the guest.
#[derive(Clone, Debug)]
pub struct Request {
    /// Short name for scratch files (the app or program name).
    pub name: String,
    /// Command line; `argv[0]` is resolved on the host (relative to `run_dir` when it holds a
    /// `/`, else on `PATH`) and put on the initramfs at the same absolute path.
    pub argv: Vec<String>,
    /// Host directory copied to [`GUEST_WORKDIR`] (the command's working directory).
    pub run_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Guest files printed back after the run (their contents land in [`Finished::files`]).
    pub fetch: Vec<String>,
    /// Longest the command may run inside the guest.
    pub timeout: Duration,
}

/// A finished guest run.
#[derive(Clone, Debug)]
pub struct Finished {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// Contents of the requested `fetch` files (missing ones left out).
    pub files: Vec<(String, String)>,
    pub timed_out: bool,
    pub interrupted: bool,
    pub figures: KvmFigures,
}

/// The accelerator the plan's `kvm` runs use.
pub fn accel(plan: &Plan) -> Accel {
    if plan.kvm_tcg {
        Accel::Tcg
    } else {
        Accel::Kvm
    }
}

/// How long a guest may take to boot (and power off) beyond the command's own time.
fn boot_allowance(accel: Accel) -> Duration {
    match accel {
        Accel::Kvm => Duration::from_secs(60),
        Accel::Tcg => Duration::from_secs(240),
    }
}

/// Reads an executable's first bytes.
fn head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; 256];
    let mut f = std::fs::File::open(path)?;
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Shared libraries and loader of a dynamic ELF file, from `ldd` (the same dynamic loader that
/// will load it in the guest resolves them).
pub fn libraries(path: &Path) -> Result<Vec<PathBuf>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    match dualstack_commodity::guest::static_elf_problem(&bytes) {
        None => return Ok(vec![]),
        Some(p) if !p.contains("dynamically") => {
            return Err(format!("{} {p}", path.display()));
        }
        Some(_) => {}
    }
    let out = Command::new("ldd")
        .arg(path)
        .output()
        .map_err(|e| format!("running ldd {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "ldd {} failed: {} {}",
            path.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_ldd(&text).map_err(|lib| {
        format!(
            "{} needs {lib}, which the host's loader cannot find",
            path.display()
        )
    })
}

/// The paths in `ldd` output; `Err(lib)` for a library that is `not found`.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut v = vec![];
    for line in text.lines() {
        let line = line.trim();
        let target = match line.split_once("=>") {
            Some((lib, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(lib.trim().to_string());
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if target.starts_with('/') {
            v.push(PathBuf::from(target));
        }
    }
    Ok(v)
}

/// Resolves `argv0` to a host file: relative to `run_dir` with a `/`, else on the host's
/// `PATH`.
fn resolve(argv0: &str, run_dir: Option<&Path>) -> Result<PathBuf, String> {
    if argv0.starts_with('/') {
        return Ok(PathBuf::from(argv0));
    }
    if argv0.contains('/') {
        let dir = run_dir.ok_or_else(|| format!("{argv0} is relative but the run has no files"))?;
        return Ok(dir.join(argv0));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(argv0))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{argv0} is not on PATH"))
}

/// Everything a guest needs from the host to exec `exe`: itself (when not in the run directory),
/// a script's interpreter, and their libraries. Absolute host paths.
fn closure(exe: &Path, in_run_dir: bool) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    let mut todo = vec![(exe.to_path_buf(), in_run_dir)];
    let mut depth = 0;
    while let Some((f, skip)) = todo.pop() {
        depth += 1;
        if depth > 8 {
            return Err(format!("{}: too many nested interpreters", exe.display()));
        }
        let h = head(&f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        if !skip {
            out.push(f.clone());
        }
        if let Some(rest) = h.strip_prefix(b"#!") {
            let line = String::from_utf8_lossy(rest);
            let interp = line
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().next())
                .ok_or_else(|| format!("{}: empty #! line", f.display()))?;
            todo.push((PathBuf::from(interp), false));
        } else {
            out.extend(libraries(&f)?);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The guest-relative archive name of a host path.
fn rel(path: &Path) -> String {
    path.display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}

/// Adds `name`'s parent directories (once each).
fn parents(
    w: &mut CpioWriter<Vec<u8>>,
    made: &mut BTreeSet<String>,
    name: &str,
) -> Result<(), String> {
    let mut acc = String::new();
    let parts: Vec<&str> = name.split('/').collect();
    for p in &parts[..parts.len().saturating_sub(1)] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(p);
        if made.insert(acc.clone()) {
            w.dir(&acc, 0o755).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn add_file(
    w: &mut CpioWriter<Vec<u8>>,
    made: &mut BTreeSet<String>,
    name: &str,
    host: &Path,
) -> Result<(), String> {
    let data = std::fs::read(host).map_err(|e| format!("reading {}: {e}", host.display()))?;
    let mode = std::fs::metadata(host)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    parents(w, made, name)?;
    w.file(name, mode, &data).map_err(|e| e.to_string())
}

fn add_tree(
    w: &mut CpioWriter<Vec<u8>>,
    made: &mut BTreeSet<String>,
    name: &str,
    host: &Path,
) -> Result<(), String> {
    if host.is_dir() {
        parents(w, made, &format!("{name}/x"))?;
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .map_err(|e| format!("listing {}: {e}", host.display()))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let n = format!("{name}/{}", e.file_name().to_string_lossy());
            add_tree(w, made, &n, &e.path())?;
        }
        Ok(())
    } else {
        add_file(w, made, name, host)
    }
}

fn quote(s: &str) -> Result<String, String> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|e| format!("cannot quote {s:?} for the guest's shell: {e}"))
}

/// The guest's init script for `argv` (already resolved) with `env`.
pub fn init_script(
    argv: &[String],
    env: &[(String, String)],
    fetch: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let cmd = argv
        .iter()
        .map(|a| quote(a))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    let mut exports = String::new();
    for (k, v) in env {
        exports += &format!("export {k}={}\n", quote(v)?);
    }
    let mut fetches = String::new();
    for f in fetch {
        let q = quote(f)?;
        fetches += &format!(
            "if [ -f {q} ]; then echo \"{MARK} file begin {f}\"; cat {q}; printf '\\n%s\\n' \"{MARK} file end\"; fi\n"
        );
    }
    let secs = timeout.as_secs().max(1);
    Ok(format!(
        r#"#!/bin/busybox sh
# dualstack bench isolation, configuration kvm: runs one command and powers off.
/bin/busybox mkdir -p /proc /sys /dev /tmp {GUEST_WORKDIR}
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
dmesg -n 1 2>/dev/null
now() {{
  ns=$(grep -m1 'now at' /proc/timer_list 2>/dev/null | cut -d' ' -f3)
  [ -n "$ns" ] || ns=$(awk '{{ printf "%d", $1 * 1000000000 }}' /proc/uptime)
  echo "$ns"
}}
read -r up _ < /proc/uptime
echo "{MARK} booted uptime=$up vcpus=$(nproc) kernel=$(uname -r)"
{exports}cd {GUEST_WORKDIR}
t0=$(now)
timeout -s KILL {secs} {cmd} > /tmp/.dualstack-out 2> /tmp/.dualstack-err < /dev/null
st=$?
t1=$(now)
echo "{MARK} stdout begin"
cat /tmp/.dualstack-out
printf '\n%s\n' "{MARK} stdout end"
echo "{MARK} stderr begin"
tail -c 4000 /tmp/.dualstack-err
printf '\n%s\n' "{MARK} stderr end"
{fetches}echo "{MARK} done exit=$st wall_ns=$((t1 - t0))"
sync
poweroff -f
"#
    ))
}

/// What the serial console said.
#[derive(Debug, Clone, PartialEq)]
pub struct Console {
    pub boot_s: f64,
    pub status: i32,
    pub wall_s: f64,
    pub stdout: String,
    pub stderr: String,
    pub files: Vec<(String, String)>,
}

fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let b = text.find(begin)? + begin.len();
    let rest = &text[b..];
    let rest = rest.strip_prefix('\n').unwrap_or(rest);
    let e = rest.find(end)?;
    let body = &rest[..e];
    Some(body.strip_suffix('\n').unwrap_or(body))
}

/// Parses the serial log of a guest run; `None` without the final marker.
pub fn parse_console(log: &str) -> Option<Console> {
    let text = log.replace('\r', "");
    let done = text.lines().rev().find_map(|l| {
        // The firmware's escape sequences may precede a marker on its line.
        let tag = format!("{MARK} done ");
        let rest = &l[l.find(&tag)? + tag.len()..];
        let mut status = None;
        let mut ns = None;
        for w in rest.split_whitespace() {
            if let Some(v) = w.strip_prefix("exit=") {
                status = v.parse::<i32>().ok();
            }
            if let Some(v) = w.strip_prefix("wall_ns=") {
                ns = v.parse::<i64>().ok();
            }
        }
        Some((status?, ns?))
    })?;
    let boot_s = text
        .lines()
        .find_map(|l| {
            let tag = format!("{MARK} booted uptime=");
            l[l.find(&tag)? + tag.len()..]
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0);
    let stdout = between(
        &text,
        &format!("{MARK} stdout begin"),
        &format!("\n{MARK} stdout end"),
    )
    .unwrap_or("");
    let stderr = between(
        &text,
        &format!("{MARK} stderr begin"),
        &format!("\n{MARK} stderr end"),
    )
    .unwrap_or("");
    let mut files = vec![];
    let mut rest = text.as_str();
    let begin = format!("{MARK} file begin ");
    while let Some(at) = rest.find(&begin) {
        let after = &rest[at + begin.len()..];
        let Some(nl) = after.find('\n') else { break };
        let name = after[..nl].trim().to_string();
        let body = &after[nl + 1..];
        let end = format!("\n{MARK} file end");
        let Some(e) = body.find(&end) else { break };
        files.push((name, body[..e].to_string()));
        rest = &body[e + end.len()..];
    }
    Some(Console {
        boot_s,
        status: done.0,
        wall_s: done.1.max(0) as f64 / 1e9,
        stdout: format!("{stdout}\n").trim_start_matches('\n').to_string(),
        stderr: stderr.to_string(),
        files,
    })
}

/// Pins thread `tid` to `cpu`.
fn pin_thread(tid: i32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads
    // `size_of::<cpu_set_t>()` bytes from it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kills QEMU (our child) and reaps it.
fn kill(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Boots the commodity guest with `req`'s command on its initramfs and waits for it.
pub fn run(ctx: &RunContext, plan: &Plan, req: &Request) -> Result<Finished, String> {
    let accel = accel(plan);
    let builder = dualstack_commodity::GuestBuilder::new(
        &ctx.guest_cache
            .clone()
            .unwrap_or_else(dualstack_commodity::guest::default_cache_dir),
    );
    let image = builder.ensure(false).map_err(|e| {
        format!(
            "building the commodity guest image: {}",
            super::runner::chain(&e)
        )
    })?;
    let work = ctx.scratch.join(format!("kvm-{}", req.name));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    let result = run_in(ctx, plan, req, accel, &image, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_in(
    ctx: &RunContext,
    plan: &Plan,
    req: &Request,
    accel: Accel,
    image: &dualstack_commodity::GuestImage,
    work: &Path,
) -> Result<Finished, String> {
    // The program archive.
    let argv0 = req.argv.first().ok_or("an empty command line")?;
    let exe = resolve(argv0, req.run_dir.as_deref())?;
    if !exe.is_file() {
        return Err(format!("{} does not exist", exe.display()));
    }
    let in_run_dir = req.run_dir.as_deref().is_some_and(|d| exe.starts_with(d));
    let host_files = closure(&exe, in_run_dir)?;
    let mut argv = req.argv.clone();
    if !in_run_dir {
        // The exact host program, not a busybox applet of the same name.
        argv[0] = exe.display().to_string();
    }
    let lib_dirs: BTreeSet<String> = host_files
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".so"))
        })
        .filter_map(|f| f.parent().map(|p| p.display().to_string()))
        .collect();
    let mut env = req.env.clone();
    if !lib_dirs.is_empty() {
        env.push((
            "LD_LIBRARY_PATH".into(),
            lib_dirs.into_iter().collect::<Vec<_>>().join(":"),
        ));
    }
    let script = init_script(&argv, &env, &req.fetch, req.timeout)?;
    let mut w = CpioWriter::new(Vec::new());
    let mut made = BTreeSet::new();
    if let Some(d) = &req.run_dir {
        add_tree(&mut w, &mut made, GUEST_WORKDIR.trim_start_matches('/'), d)?;
    }
    for f in &host_files {
        add_file(&mut w, &mut made, &rel(f), f)?;
    }
    w.file(INIT_PATH, 0o755, script.as_bytes())
        .map_err(|e| e.to_string())?;
    let archive = w.finish().map_err(|e| e.to_string())?;
    let mut initrd = std::fs::read(&image.initrd)
        .map_err(|e| format!("reading {}: {e}", image.initrd.display()))?;
    // The kernel unpacks concatenated archives; each must start 4-byte aligned.
    initrd.resize(initrd.len().div_ceil(512) * 512, 0);
    initrd.extend_from_slice(&archive);
    let initrd_path = work.join("initrd.img");
    std::fs::write(&initrd_path, &initrd)
        .map_err(|e| format!("writing {}: {e}", initrd_path.display()))?;

    // Memory: the plan's memory plus room for the kernel and the unpacked initramfs, all on
    // huge pages of the zone's node.
    let bytes =
        (plan.memory_bytes + KERNEL_OVERHEAD + 2 * initrd.len() as u64).div_ceil(HUGE) * HUGE;
    let memory_mib = bytes >> 20;
    let pages = bytes / HUGE;
    let numa = ctx.zone.numa_node;
    let pool = dualstack_jobs::lease::pool_dir(&ctx.paths, 2048, Some(numa));
    // Claimed for the guest's lifetime (what the pool lacks beyond other runs' promised pages
    // is reserved, journaled, given back when the lease drops).
    let lease =
        dualstack_jobs::lease::hugepages(&ctx.paths, &pool, numa, 2048, pages).map_err(|e| {
            format!(
                "huge pages for the guest's {memory_mib} MiB: {}",
                super::runner::chain(&e)
            )
        })?;

    let cpus = ctx.zone_cpus();
    let launch = QemuLaunch {
        binary: PathBuf::from("qemu-system-x86_64"),
        name: format!("kvm-{}", req.name),
        vcpus: plan.zone_cores,
        memory_mib,
        accel,
        boot: ResolvedBoot::Kernel {
            kernel: image.kernel.clone(),
            initrd: Some(initrd_path.clone()),
            cmdline: format!("console=ttyS0 panic=-1 quiet loglevel=1 rdinit=/{INIT_PATH}"),
        },
        qmp_socket: work.join("qmp.sock"),
        serial_log: work.join("serial.log"),
    };
    let mut args = launch.args();
    args.extend(
        [
            "-S".to_string(),
            "-object".into(),
            format!(
                "memory-backend-memfd,id=dualstack-ram,size={memory_mib}M,hugetlb=on,hugetlbsize=2M,prealloc=on,host-nodes={numa},policy=bind"
            ),
            "-machine".into(),
            "memory-backend=dualstack-ram".into(),
        ]
        .map(Into::into),
    );
    let log_path = work.join("qemu.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&launch.binary);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    // SAFETY: runs in the forked child before exec; prctl only sets the calling process's
    // parent-death signal (QEMU dies with the harness, even on SIGKILL).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // QEMU starts inside the zone's cpuset (every thread it makes stays there).
    let entry = dualstack_zones::enter(&ctx.paths, &ctx.zone)
        .map_err(|e| format!("entering zone {}: {e}", ctx.zone.name))?;
    let t = Instant::now();
    let spawned = cmd.spawn();
    entry
        .leave()
        .map_err(|e| format!("leaving zone {}: {e}", ctx.zone.name))?;
    let mut child = spawned.map_err(|e| format!("starting qemu-system-x86_64: {e}"))?;
    let qemu_log = |extra: &str| {
        format!(
            "{extra}; QEMU's log: {}; serial console: {}",
            tail(&std::fs::read_to_string(&log_path).unwrap_or_default(), 6).replace('\n', " | "),
            tail(
                &std::fs::read_to_string(&launch.serial_log).unwrap_or_default(),
                8
            )
            .replace('\n', " | ")
        )
    };

    // Pin the vCPUs, then let the guest run.
    let pinned = (|| -> Result<Vec<usize>, String> {
        let until = Instant::now() + Duration::from_secs(60);
        while !launch.qmp_socket.exists() {
            if let Ok(Some(s)) = child.try_wait() {
                return Err(format!("QEMU exited before its QMP socket appeared ({s})"));
            }
            if Instant::now() > until {
                return Err("QEMU's QMP socket did not appear within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut qmp = Qmp::connect(&launch.qmp_socket, Duration::from_secs(30))
            .map_err(|e| super::runner::chain(&e))?;
        let vcpus = qmp.query_vcpus().map_err(|e| super::runner::chain(&e))?;
        let mut on = vec![0; vcpus.len()];
        for v in &vcpus {
            let cpu = cpus[v.cpu_index as usize % cpus.len()];
            pin_thread(v.thread_id, cpu).map_err(|e| {
                format!(
                    "pinning vCPU {} (thread {}) to CPU {cpu}: {e}",
                    v.cpu_index, v.thread_id
                )
            })?;
            if let Some(slot) = on.get_mut(v.cpu_index as usize) {
                *slot = cpu;
            }
        }
        qmp.execute("cont", None)
            .map_err(|e| super::runner::chain(&e))?;
        Ok(on)
    })();
    let vcpu_cpus = match pinned {
        Ok(v) => v,
        Err(e) => {
            kill(&mut child);
            drop(lease);
            return Err(qemu_log(&e));
        }
    };

    let deadline = req.timeout + boot_allowance(accel);
    let (mut timed_out, mut interrupted) = (false, false);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => {
                kill(&mut child);
                return Err(format!("waiting for QEMU: {e}"));
            }
        }
        if t.elapsed() > deadline || interrupt::requested() {
            timed_out = t.elapsed() > deadline;
            interrupted = !timed_out;
            kill(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let host_wall_s = t.elapsed().as_secs_f64();
    let hugepages_reserved = lease.reserved_pages();
    lease.give_back().map_err(|e| {
        format!(
            "giving back the guest's huge pages: {}",
            super::runner::chain(&e)
        )
    })?;
    let serial = std::fs::read_to_string(&launch.serial_log).unwrap_or_default();
    let mut figures = KvmFigures {
        accel: match accel {
            Accel::Kvm => "kvm".into(),
            Accel::Tcg => "tcg".into(),
        },
        correctness_only: accel == Accel::Tcg,
        boot_s: 0.0,
        guest_wall_s: 0.0,
        host_wall_s,
        memory_mib,
        hugepages_reserved,
        vcpu_cpus,
        initrd_bytes: initrd.len() as u64,
    };
    let Some(c) = parse_console(&serial) else {
        if timed_out || interrupted {
            return Ok(Finished {
                status: 137,
                stdout: String::new(),
                stderr: tail(&serial, 20),
                files: vec![],
                timed_out,
                interrupted,
                figures,
            });
        }
        return Err(qemu_log(&format!(
            "the guest ended without reporting the command's exit status (QEMU {})",
            status.map_or("killed".to_string(), |s| s.to_string())
        )));
    };
    figures.boot_s = c.boot_s;
    figures.guest_wall_s = c.wall_s;
    // `timeout -s KILL` in the guest ends a command that overran with 137.
    let guest_timeout = c.status == 137 && c.wall_s >= req.timeout.as_secs_f64() * 0.99;
    Ok(Finished {
        status: c.status,
        stdout: c.stdout,
        stderr: c.stderr,
        files: c.files,
        timed_out: timed_out || guest_timeout,
        interrupted,
        figures,
    })
}

/// A built-in app's run in the guest: its own RESULT line is the figure (measured inside the
/// guest); an FWQ `--dump` file is fetched back to the host path the runner reads.
pub fn run_app(
    ctx: &RunContext,
    plan: &Plan,
    program: &Path,
    args: &[String],
    rec: &mut RunRecord,
) -> Result<Outcome, String> {
    let dump = args
        .windows(2)
        .find(|w| w[0] == "--dump")
        .map(|w| w[1].clone());
    let mut argv = vec![program.display().to_string()];
    argv.extend(args.iter().cloned());
    let req = Request {
        name: rec.app.clone(),
        argv,
        run_dir: None,
        env: vec![],
        fetch: dump.iter().cloned().collect(),
        timeout: ctx.timeout,
    };
    let f = run(ctx, plan, &req)?;
    rec.cpus = f.figures.vcpu_cpus.clone();
    rec.kvm = Some(f.figures.clone());
    if f.timed_out {
        return Err(format!(
            "did not finish within --run-timeout {} s (the guest was ended)",
            ctx.timeout.as_secs_f64()
        ));
    }
    if f.interrupted {
        return Err("stopped by Ctrl-C".into());
    }
    if let Some(d) = dump {
        if let Some((_, body)) = f.files.iter().find(|x| x.0 == d) {
            let name = Path::new(&d).file_name().unwrap_or_default();
            let host = ctx.scratch.join(name);
            std::fs::write(&host, body).map_err(|e| format!("writing {}: {e}", host.display()))?;
        }
    }
    Ok(Outcome {
        stdout: f.stdout,
        status: f.status,
        wall_s: f.figures.guest_wall_s,
        stats: None,
    })
}

/// A user program's run in the guest: its run directory (`dir`, already staged) becomes
/// [`GUEST_WORKDIR`]. MPI programs are refused: their launcher and MPI library would have to
/// run inside the guest.
pub fn run_program(
    ctx: &RunContext,
    plan: &Plan,
    p: &UserProgram,
    dir: &Path,
    rec: &mut RunRecord,
) -> Result<Finished, String> {
    if let Some(l) = &p.launcher {
        return Err(format!(
            "the kvm configuration runs programs without an MPI launcher only: {} needs `{l}` and its MPI library inside the guest, which this build does not put there; no run was made",
            p.name
        ));
    }
    let req = Request {
        name: p.name.clone(),
        argv: p.argv(plan.zone_cores).map_err(|e| e.to_string())?,
        run_dir: Some(dir.to_path_buf()),
        env: vec![(
            "OMP_NUM_THREADS".to_string(),
            p.threads(plan.zone_cores).to_string(),
        )],
        fetch: vec![],
        timeout: ctx.timeout,
    };
    let f = run(ctx, plan, &req)?;
    rec.cpus = f.figures.vcpu_cpus.clone();
    rec.kvm = Some(f.figures.clone());
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgomp.so.1 => /lib/x86_64-linux-gnu/libgomp.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgomp.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so => not found\n").unwrap_err(),
            "libfoo.so"
        );
    }

    #[test]
    fn dynamic_programs_bring_their_loader_and_libraries() {
        let libs = closure(Path::new("/bin/ls"), false).unwrap();
        assert!(libs.contains(&PathBuf::from("/bin/ls")));
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux-x86-64")),
            "{libs:?}"
        );
        assert!(libs.iter().any(|l| l.to_string_lossy().contains("libc.so")));
        // A static program needs nothing else.
        if Path::new("/bin/busybox").is_file() {
            assert_eq!(
                closure(Path::new("/bin/busybox"), false).unwrap(),
                [PathBuf::from("/bin/busybox")]
            );
        }
    }

    #[test]
    fn init_script_and_console_round_trip() {
        let s = init_script(
            &["./prog".into(), "a b".into()],
            &[("OMP_NUM_THREADS".into(), "2".into())],
            &["/work/dump.csv".into()],
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(s.contains("timeout -s KILL 30 ./prog 'a b' >"), "{s}");
        assert!(s.contains("export OMP_NUM_THREADS=2\n"), "{s}");
        assert!(s.contains("poweroff -f"));
        let log = "Booting from ROM..\x1bc\x1b[?7l\x1b[2Jdualstack-kvm: booted uptime=1.52 vcpus=1 kernel=6.1\r\ndualstack-kvm: stdout begin\r\ntime: 0.25 s\r\nresult ok\r\n\r\ndualstack-kvm: stdout end\r\ndualstack-kvm: stderr begin\r\nwarn\r\n\r\ndualstack-kvm: stderr end\r\ndualstack-kvm: file begin /work/dump.csv\r\n1,2\r\n3,4\r\ndualstack-kvm: file end\r\ndualstack-kvm: done exit=0 wall_ns=250000000\r\n";
        let c = parse_console(log).unwrap();
        assert_eq!(c.status, 0);
        assert_eq!(c.wall_s, 0.25);
        assert_eq!(c.boot_s, 1.52);
        assert_eq!(c.stdout, "time: 0.25 s\nresult ok\n");
        assert_eq!(c.stderr, "warn");
        assert_eq!(
            c.files,
            [("/work/dump.csv".to_string(), "1,2\n3,4".to_string())]
        );
        assert!(parse_console("dualstack-kvm: booted uptime=1\n").is_none());
    }
}
