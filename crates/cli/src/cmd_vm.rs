//! `dualstack vm ...`: commodity VMs on QEMU, confined to the commodity cpuset. (Owned by the
//! commodity stack work, issue 5.) Parses arguments, calls `dualstack_commodity`, prints.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use dualstack_commodity::manager::tail;
use dualstack_commodity::{
    AccelChoice, BootSource, CreateOptions, GuestBuilder, HostPaths, VmInfo, VmManager, VmSpec,
    Workload,
};
use dualstack_topology::parse_size_mib;

use crate::common::GlobalOpts;

#[derive(clap::Subcommand, Debug)]
pub enum VmCmd {
    /// Create and boot a VM (the built-in guest unless --kernel or --disk is given).
    Create(CreateArgs),
    /// Boot a stopped or exited VM again with its recorded configuration.
    Start(NameArgs),
    /// List commodity VMs.
    List(ListArgs),
    /// Show one VM, including every QEMU thread's allowed CPUs.
    Show(ShowArgs),
    /// Print a VM's serial console log.
    Console(ConsoleArgs),
    /// Stop a VM (QEMU exits; the record and logs stay until `vm delete`).
    Stop(StopArgs),
    /// Stop (if running) and forget a VM, removing its files.
    Delete(NameArgs),
    /// The built-in guest image.
    #[command(subcommand)]
    Image(ImageCmd),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// VM name (letters, digits, '-', '_').
    pub name: String,
    /// Number of vCPUs (more than the commodity CPUs is allowed: overcommit).
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// Guest memory, e.g. 256M or 2G (plain anonymous memory, overcommittable).
    #[arg(long, default_value = "256M")]
    pub memory: String,
    /// Linux kernel (bzImage) to boot instead of the built-in guest.
    #[arg(long, conflicts_with = "disk")]
    pub kernel: Option<PathBuf>,
    /// Initramfs for --kernel.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Raw disk image to boot (firmware boot from a virtio disk).
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// Workload of the built-in guest: build (parallel-build stand-in) or idle.
    #[arg(long, default_value = "idle")]
    pub workload: Workload,
    /// Extra kernel command line (direct kernel boot).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Accelerator: kvm, tcg, or auto (KVM only where it can boot a stock Linux guest).
    #[arg(long, default_value = "auto")]
    pub accel: AccelChoice,
    /// Seconds to wait for the guest to come up.
    #[arg(long, default_value_t = 90)]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct NameArgs {
    /// VM name.
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// VM name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// VM name.
    pub name: String,
    /// Only the last N lines.
    #[arg(long, short = 'n')]
    pub lines: Option<usize>,
    /// Keep printing new output until interrupted (or the VM stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// VM name.
    pub name: String,
    /// Ask the guest to power off (ACPI) and wait this many seconds before quitting QEMU.
    #[arg(long, default_value_t = 0)]
    pub graceful: u64,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCmd {
    /// Build (or refresh) the built-in guest from Debian packages on this machine.
    Build(ImageArgs),
    /// Show where the built-in guest is and whether it is built.
    Show(ImageArgs),
}

#[derive(clap::Args, Debug)]
pub struct ImageArgs {
    /// Cache directory (default: $DUALSTACK_CACHE_DIR, /var/cache/dualstack for root, else
    /// $XDG_CACHE_HOME/dualstack).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Rebuild even if up to date (build only).
    #[arg(long)]
    pub force: bool,
}

fn manager(global: &GlobalOpts) -> anyhow::Result<VmManager> {
    let paths =
        HostPaths::from_env(&global.state_dir).context("finding the host's cpuset mount")?;
    Ok(VmManager::new(paths))
}

pub fn run(cmd: VmCmd, global: &GlobalOpts) -> anyhow::Result<i32> {
    match cmd {
        VmCmd::Create(a) => create(a, global),
        VmCmd::Start(a) => {
            let info = manager(global)?.start(&a.name, &CreateOptions::default())?;
            print_created(&info, "started");
            Ok(0)
        }
        VmCmd::List(a) => {
            let vms = manager(global)?.list()?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&vms)?);
            } else {
                print_table(&vms);
            }
            Ok(0)
        }
        VmCmd::Show(a) => {
            let d = manager(global)?.show(&a.name)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
                return Ok(0);
            }
            let i = &d.info;
            println!("name:        {}", i.name);
            println!(
                "state:       {}{}",
                i.state,
                i.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            println!("accel:       {} ({})", i.accel, i.accel_reason);
            println!(
                "vcpus:       {}{}",
                i.vcpus,
                if i.overcommitted {
                    " (overcommitted)"
                } else {
                    ""
                }
            );
            println!(
                "memory:      {} MiB (anonymous, overcommittable)",
                i.memory_mib
            );
            println!("boot:        {}", boot_text(&i.boot));
            if let Some(c) = &d.cmdline {
                println!("cmdline:     {c}");
            }
            println!("workload:    {}", i.workload.as_str());
            println!(
                "pid:         {}",
                i.pid.map_or("-".into(), |p| p.to_string())
            );
            println!(
                "cpuset:      {} (CPUs {})",
                i.cgroup.display(),
                or_dash(&i.commodity_cpus)
            );
            println!("serial log:  {}", i.serial_log.display());
            println!("qemu log:    {}", i.qemu_log.display());
            println!(
                "progress:    ready={} workers={} rounds={} jobs={}",
                i.progress.ready, i.progress.workers, i.progress.rounds, i.progress.jobs
            );
            if !d.threads.is_empty() {
                println!("threads:");
                for t in &d.threads {
                    let cpus: Vec<String> = t.cpus_allowed.iter().map(u32::to_string).collect();
                    println!("  {:>8}  {:<20} cpus {}", t.tid, t.name, cpus.join(","));
                }
            }
            Ok(0)
        }
        VmCmd::Console(a) => console(a, global),
        VmCmd::Stop(a) => {
            let info = manager(global)?.stop(&a.name, Duration::from_secs(a.graceful))?;
            println!("VM {} is {}", info.name, info.state);
            Ok(0)
        }
        VmCmd::Delete(a) => {
            manager(global)?.delete(&a.name)?;
            println!("VM {} deleted", a.name);
            Ok(0)
        }
        VmCmd::Image(ImageCmd::Build(a)) => {
            let b = builder(&a);
            eprintln!("building the built-in guest in {} ...", b.dir().display());
            let img = b.ensure(a.force)?;
            println!("kernel:  {} ({})", img.kernel.display(), img.kernel_package);
            println!("initrd:  {}", img.initrd.display());
            Ok(0)
        }
        VmCmd::Image(ImageCmd::Show(a)) => {
            let b = builder(&a);
            match b.find() {
                Ok(img) => {
                    println!("kernel:  {} ({})", img.kernel.display(), img.kernel_package);
                    println!("initrd:  {}", img.initrd.display());
                }
                Err(e) => println!("{e}"),
            }
            Ok(0)
        }
    }
}

fn builder(a: &ImageArgs) -> GuestBuilder {
    GuestBuilder::new(
        &a.cache_dir
            .clone()
            .unwrap_or_else(dualstack_commodity::guest::default_cache_dir),
    )
}

fn create(a: CreateArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let boot = match (a.kernel, a.initrd, a.disk) {
        (Some(kernel), initrd, None) => BootSource::Kernel { kernel, initrd },
        (None, None, Some(image)) => BootSource::Disk { image },
        _ => BootSource::Builtin,
    };
    let spec = VmSpec {
        name: a.name,
        vcpus: a.vcpus,
        memory_mib: parse_size_mib(&a.memory).with_context(|| format!("--memory {}", a.memory))?,
        boot,
        workload: a.workload,
        cmdline: a.cmdline,
        accel: a.accel,
    };
    let opts = CreateOptions {
        timeout: Duration::from_secs(a.timeout),
        ..CreateOptions::default()
    };
    let info = manager(global)?.create(&spec, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_created(&info, "created");
    }
    Ok(0)
}

fn print_created(info: &VmInfo, verb: &str) {
    println!(
        "VM {} {verb}: {}, accel {} ({}), pid {}, {} vCPUs, {} MiB, cpuset {} (CPUs {})",
        info.name,
        info.state,
        info.accel,
        info.accel_reason,
        info.pid.map_or("-".into(), |p| p.to_string()),
        info.vcpus,
        info.memory_mib,
        info.cgroup.display(),
        or_dash(&info.commodity_cpus),
    );
    if info.overcommitted {
        eprintln!(
            "warning: {} vCPUs on {} commodity CPUs ({}): the VM is overcommitted",
            info.vcpus,
            dualstack_topology::CpuList::parse_list(&info.commodity_cpus).map_or(0, |l| l.len()),
            info.commodity_cpus
        );
    }
    println!(
        "console: dualstack vm console {} (log {})",
        info.name,
        info.serial_log.display()
    );
}

fn print_table(vms: &[VmInfo]) {
    println!(
        "{:<16} {:<9} {:<5} {:>5} {:>8} {:>8} {:<8} {:>9}  NOTE",
        "NAME", "STATE", "ACCEL", "VCPUS", "MEM", "PID", "CPUS", "JOBS"
    );
    for v in vms {
        println!(
            "{:<16} {:<9} {:<5} {:>5} {:>7}M {:>8} {:<8} {:>9}  {}",
            v.name,
            v.state.as_str(),
            v.accel.to_string(),
            format!("{}{}", v.vcpus, if v.overcommitted { "!" } else { "" }),
            v.memory_mib,
            v.pid.map_or("-".into(), |p| p.to_string()),
            or_dash(&v.commodity_cpus),
            v.progress.jobs,
            v.note.as_deref().unwrap_or(""),
        );
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn boot_text(b: &BootSource) -> String {
    match b {
        BootSource::Builtin => "built-in guest".into(),
        BootSource::Kernel { kernel, initrd } => format!(
            "kernel {}{}",
            kernel.display(),
            initrd
                .as_ref()
                .map(|i| format!(" initrd {}", i.display()))
                .unwrap_or_default()
        ),
        BootSource::Disk { image } => format!("disk {}", image.display()),
    }
}

fn console(a: ConsoleArgs, global: &GlobalOpts) -> anyhow::Result<i32> {
    let mgr = manager(global)?;
    let rec = mgr.record(&a.name)?;
    let path = rec.serial_log();
    let mut out = std::io::stdout().lock();
    match a.lines {
        Some(n) => writeln!(out, "{}", tail(&path, n))?,
        None => {
            let bytes = std::fs::read(&path).unwrap_or_default();
            out.write_all(&bytes)?;
        }
    }
    out.flush()?;
    if !a.follow {
        return Ok(0);
    }
    let mut f =
        std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::End(0))?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        f.read_to_end(&mut buf)?;
        if !buf.is_empty() {
            out.write_all(&buf)?;
            out.flush()?;
        } else if !mgr.record(&a.name)?.state.has_process() {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
