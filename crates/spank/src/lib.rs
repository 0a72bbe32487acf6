//! `dualstack.so`, a Slurm SPANK plugin: jobs ask for an HPC zone with a job option.
//!
//! ```text
//! sbatch -N2 --dualstack=memory=8G,hugepages=1G job.sh
//! srun   --dualstack=on ./app              # the node's default zone size
//! ```
//!
//! The option takes a value (the `slurm-spank` crate registers options with a required
//! argument, so a bare `--dualstack` is not possible): `on` (or `yes`, `default`) asks for a
//! zone of the node's configured defaults,
//! otherwise a `key=value` list (`memory`, `hugepages`, `cpus`), the same keys as
//! `--comment=dualstack:...`. The plugin checks the request in `sbatch`/`srun`/`salloc`, so a
//! typo fails at submission instead of draining a node, and hands it to the Prolog through the
//! job-control environment: Slurm gives it to `dualstack slurm prolog` as `SPANK_DUALSTACK`.
//! Everything else (creating and releasing the zone) stays in `dualstack slurm prolog|epilog`.
//!
//! Enable it with a line in `plugstack.conf` on the submit hosts and every node:
//! `required /usr/local/lib/dualstack/libdualstack_spank.so` (see `contrib/slurm/plugstack.conf`),
//! optionally followed by `config=/etc/dualstack/slurm.toml` (the dualstack Slurm configuration;
//! default `$DUALSTACK_SLURM_CONFIG`, else that path).
//!
//! **Steps that run as the job's user.** The one privileged thing such a step needs from the
//! node is KVM (/dev/kvm is 0600 root on hosts that keep VMs to root): in slurmstepd, in
//! `slurm_spank_task_init_privileged` (root, in the task's own process just before it becomes
//! the job's user and execs the step's program), the plugin opens /dev/kvm for the tasks of a
//! job that has its zone on this node and whose owner (the prolog's record) is the task's user,
//! leaves it open across the exec and names it in `DUALSTACK_KVM_FD`. The zone's cgroup was
//! handed to the same user by the prolog, so `dualstack run` then runs entirely as that user:
//! no setuid binary, no daemon, nothing that outlives the task (the descriptor closes with it).

use std::error::Error;
use std::path::PathBuf;

use slurm_spank::{Context, Plugin, SpankHandle, SpankOption, SPANK_PLUGIN};

// Slurm loads a plugin only when its major.minor release matches its own (the macro needs a
// literal; `version_matches_the_slurm_headers` ties it to the headers it was built against).
SPANK_PLUGIN!(b"dualstack", 0x160500, DualstackSpank);

/// The Slurm release this plugin is for (22.05, Debian 12's).
pub const BUILT_FOR: u32 = 0x160500;

/// The option's name: `--dualstack=...`.
pub const OPTION: &str = "dualstack";
/// The job-control variable (Slurm prefixes it with `SPANK_` for the Prolog/Epilog).
pub const JOB_CONTROL_VAR: &str = "DUALSTACK";

#[derive(Default)]
struct DualstackSpank;

/// The value handed to the Prolog (as `SPANK_DUALSTACK`): the option's value, trimmed, once
/// the Prolog's own parser accepts it.
pub fn request_for(value: &str) -> Result<String, String> {
    dualstack_slurm::request::parse_option(value)
        .map_err(|e| format!("--dualstack={value}: {e}"))?;
    Ok(value.trim().to_string())
}

// SAFETY: the plugin holds no state and starts no threads; its callbacks only read the
// option and set one job-control variable.
unsafe impl Plugin for DualstackSpank {
    fn init(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        // The option exists where users type it (sbatch/salloc: allocator, srun: local) and
        // where slurmd must accept it when it travels with a step (remote).
        match spank.context()? {
            Context::Local | Context::Allocator | Context::Remote => {
                spank.register_option(
                    SpankOption::new(OPTION)
                        .takes_value("on|memory=SIZE,hugepages=2M|1G,cpus=N")
                        .usage(
                            "give every node of the job a dualstack HPC zone for its lifetime \
                             (on = the node's defaults)",
                        ),
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    fn init_post_opt(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        if !matches!(spank.context()?, Context::Local | Context::Allocator) {
            return Ok(());
        }
        let Some(value) = spank.get_option_value(OPTION)? else {
            return Ok(());
        };
        let text = request_for(&value)?;
        spank.job_control_setenv(JOB_CONTROL_VAR, text, true)?;
        Ok(())
    }

    fn task_init_privileged(&mut self, spank: &mut SpankHandle) -> Result<(), Box<dyn Error>> {
        // Never fail the task here: a step that then lacks KVM says so itself.
        match hand_kvm(spank) {
            Ok(Some(fd)) => {
                slurm_spank::spank_log_verbose!("dualstack: handed the task /dev/kvm as fd {fd}")
            }
            Ok(None) => {}
            Err(e) => slurm_spank::spank_log_error!("dualstack: no /dev/kvm for the task: {e}"),
        }
        Ok(())
    }
}

/// The dualstack Slurm configuration named by the plugin's `config=PATH` argument, else the
/// usual place.
fn site_config(args: &[&str]) -> Result<dualstack_slurm::SiteConfig, Box<dyn Error>> {
    match args.iter().find_map(|a| a.strip_prefix("config=")) {
        Some(path) => Ok(dualstack_slurm::SiteConfig::load_from(&PathBuf::from(
            path,
        ))?),
        None => Ok(dualstack_slurm::SiteConfig::load()?),
    }
}

/// Whether a task of job `job` on `node` running as `uid` gets /dev/kvm: only a non-root user
/// whose job has its zone on this node (the prolog's record names that user).
pub fn task_gets_kvm(
    site: &dualstack_slurm::SiteConfig,
    node: &str,
    job: u64,
    uid: u32,
) -> Result<bool, Box<dyn Error>> {
    if uid == 0 {
        return Ok(false);
    }
    let settings = site.node(node)?;
    Ok(dualstack_slurm::job_record(&settings, job).is_some_and(|r| r.uid == Some(uid)))
}

/// Open /dev/kvm for this task (inherited across its exec) when [`task_gets_kvm`].
fn hand_kvm(spank: &mut SpankHandle) -> Result<Option<i32>, Box<dyn Error>> {
    let uid = spank.job_uid()?;
    let job = u64::from(spank.job_id()?);
    let Some(node) = spank.getenv("SLURMD_NODENAME")? else {
        return Ok(None);
    };
    let site = site_config(&spank.plugin_argv()?)?;
    if !task_gets_kvm(&site, &node, job, uid)? {
        return Ok(None);
    }
    use std::os::fd::IntoRawFd;
    // Not close-on-exec: the step's program (dualstack run) inherits it.
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")?;
    let fd = kvm.into_raw_fd();
    // SAFETY: clearing FD_CLOEXEC (Rust opens with it) on the descriptor just opened.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    spank.setenv(dualstack_slurm::KVM_FD_VAR, fd.to_string(), true)?;
    Ok(Some(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matches_the_slurm_headers() {
        let headers = slurm_spank::spank_sys::SLURM_VERSION_NUMBER;
        assert_eq!(
            headers >> 8,
            BUILT_FOR >> 8,
            "libslurm-dev is release {:#x}: update BUILT_FOR and the SPANK_PLUGIN! literal",
            headers
        );
    }

    #[test]
    fn values_become_prolog_requests_or_clear_errors() {
        assert_eq!(request_for("on").unwrap(), "on");
        assert_eq!(request_for(" default").unwrap(), "default");
        assert_eq!(
            request_for("memory=8G,hugepages=1G").unwrap(),
            "memory=8G,hugepages=1G"
        );
        let e = request_for("memory=lots").unwrap_err();
        assert!(
            e.contains("--dualstack=memory=lots") && e.contains("not a size"),
            "{e}"
        );
        let e = request_for("colour=red").unwrap_err();
        assert!(e.contains("unknown key"), "{e}");
    }
}
