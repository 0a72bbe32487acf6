//! A whole run under the jail: a supervised child does the privileged set-up, applies the jail
//! at the "set-up done" hook (before any vCPU thread exists), runs the guest, and sends the
//! statistics back to the supervisor.

use super::supervisor::{run_in_child, SuperviseOptions, Supervised};
use super::{Jail, JailError, JailReport};
use crate::{RunConfig, RunStats};

/// The end of a jailed run, as the supervisor saw it.
#[derive(Debug)]
pub struct JailedRun {
    /// The run's statistics and what the jail enforced; `Err` with the VMM's error text.
    /// `None` when the child ended before reporting (a seccomp kill: see `supervised`).
    pub result: Option<Result<(RunStats, JailReport), String>>,
    pub supervised: Supervised,
}

/// Run `cfg` in a supervised, jailed child.
pub fn run_jailed(
    cfg: &RunConfig,
    jail: &Jail,
    opts: &SuperviseOptions,
) -> Result<JailedRun, JailError> {
    let r = run_in_child(opts, |side| {
        let mut jail = jail.clone();
        jail.report_fd = Some(side.report_fd());
        let report = std::sync::Arc::new(std::sync::Mutex::new(None));
        let slot = report.clone();
        let before_guest = Box::new(move || {
            let applied = jail
                .apply()
                .map_err(|e| format!("cannot jail the VMM: {}", chain(&e)))?;
            *slot.lock().unwrap() = Some(applied);
            Ok(())
        });
        let hooks = crate::RunHooks {
            before_guest: Some(before_guest),
            vcpu_thread_start: None,
        };
        let stats = crate::run_with(cfg, hooks).map_err(|e| chain(&e))?;
        let report = report.lock().unwrap().take();
        let report = report.ok_or("the jail hook never ran")?;
        Ok((stats, report))
    })?;
    Ok(JailedRun {
        result: r.result,
        supervised: r.supervised,
    })
}

/// An error and its causes, as one line ("a: b: c"): the text crosses the supervisor's pipe.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}
