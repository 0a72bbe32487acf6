//! Launch phase marks for `dualstack bench api`: when `DUALSTACK_LAUNCH_TRACE` names a file,
//! each process on the way from a job's submission to its guest appends `<phase> <unix time>`
//! to it (one `O_APPEND` write per mark, so the daemon, the supervisor and the run can share
//! it). Unset (always, outside the bench), a mark costs one environment lookup.

use std::io::Write;

/// The variable naming the trace file.
pub const ENV: &str = "DUALSTACK_LAUNCH_TRACE";

/// Append `phase` with the wall clock now, if tracing.
pub fn mark(phase: &str) {
    let Some(path) = std::env::var_os(ENV) else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        let _ = f.write_all(format!("{phase} {now:.6}\n").as_bytes());
    }
}

/// Read a trace: `(phase, unix time)` in the order written.
pub fn read(path: &std::path::Path) -> Vec<(String, f64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, t) = l.rsplit_once(' ')?;
            Some((p.to_string(), t.parse().ok()?))
        })
        .collect()
}
