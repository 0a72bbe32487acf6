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
//! `required /usr/local/lib/dualstack/libdualstack_spank.so` (see `contrib/slurm/plugstack.conf`).

use std::error::Error;

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
