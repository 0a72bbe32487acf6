//! Processes by pid, safe against pid reuse: a pid names "our" process only while its start
//! time (`/proc/PID/stat` field 22) is the one recorded when it was started.

/// `(state, start time)` from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    // rest starts at field 3 (state); start time is field 22.
    let start = f.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of `pid` (clock ticks since boot).
pub fn start_time(pid: u32) -> Option<u64> {
    stat(pid).map(|(_, s)| s)
}

/// Whether `pid` is still the process that started at `start` and has not exited (a zombie
/// has exited).
pub fn alive(pid: u32, start: u64) -> bool {
    matches!(stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}

/// Send `sig` to process group `pgid` if its leader is still the recorded process.
pub fn signal_group(pgid: u32, start: u64, sig: i32) -> bool {
    if pgid <= 1 || !alive(pgid, start) {
        return false;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe { libc::kill(-(pgid as i32), sig) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_reuse_is_detected() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
        assert!(!alive(u32::MAX - 1, 0));
    }
}
