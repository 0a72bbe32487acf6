//! Ctrl-C (SIGINT) and SIGTERM as a request to stop gracefully: the handler only sets a flag;
//! the harness finishes (or discards) the run in flight, then drops its guards, which stop the
//! load, release the zone and give the huge pages back. The previous handlers come back when the
//! guard is dropped.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ask for a stop from code (tests, errors elsewhere).
pub fn request() {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM handlers installed; restored on drop.
pub struct Guard {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl Guard {
    pub fn install() -> std::io::Result<Self> {
        STOP.store(false, Ordering::SeqCst);
        let mut old = vec![];
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler is
            // an extern "C" fn that only performs an atomic store (async-signal-safe); `prev`
            // is a valid out-pointer.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                libc::sigemptyset(&mut sa.sa_mask);
                sa.sa_flags = libc::SA_RESTART;
                let mut prev: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut prev) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                old.push((sig, prev));
            }
        }
        Ok(Self { old })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restores a sigaction value the kernel gave us for this signal.
            unsafe {
                libc::sigaction(*sig, prev, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigint_sets_the_flag_instead_of_killing() {
        let g = Guard::install().unwrap();
        assert!(!requested());
        // SAFETY: raise has no memory preconditions; our handler is installed.
        unsafe {
            libc::raise(libc::SIGINT);
        }
        assert!(requested());
        drop(g);
        let _g = Guard::install().unwrap();
        assert!(!requested(), "a new guard starts clear");
    }
}
