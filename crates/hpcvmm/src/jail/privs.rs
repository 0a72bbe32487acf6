//! Dropping root for good: groups, gids, uids, every capability set, `no_new_privs`, and no
//! `/proc/PID/mem` access for anyone but root.
//!
//! Credentials and capability sets are per thread in Linux, so this runs while the process has
//! exactly one thread: every thread created afterwards (the vCPUs) inherits the dropped state.

use std::io;

use super::identity::Identity;

/// Why the privilege drop failed. The process must not go on serving a guest after any of these.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    #[error("the jail must be applied while the process has one thread, but it has {0}")]
    Threads(usize),
    #[error("{what} failed")]
    Call {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("after the drop the process still holds {what} (wanted {wanted}, found {found})")]
    Verify {
        what: &'static str,
        wanted: String,
        found: String,
    },
}

fn check(what: &'static str, rc: libc::c_long) -> Result<(), PrivError> {
    if rc < 0 {
        return Err(PrivError::Call {
            what,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Threads of this process (entries of /proc/self/task).
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// The calling thread's (effective, permitted, inheritable) sets as 64-bit masks.
pub fn current_caps() -> io::Result<(u64, u64, u64)> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData structs (the v3 layout) into `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(hi) << 32 | u64::from(lo);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

fn clear_capsets() -> Result<(), PrivError> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads two CapData structs (the v3 layout) from `data`.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    check("capset(all sets empty)", rc)
}

fn prctl(what: &'static str, op: libc::c_int, arg: libc::c_ulong) -> Result<(), PrivError> {
    // SAFETY: the prctl operations used here take plain integer arguments.
    let rc = unsafe {
        libc::prctl(
            op,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check(what, rc.into())
}

/// Set `no_new_privs`: nothing this process or its threads exec can gain privileges (and a
/// seccomp filter may be installed without CAP_SYS_ADMIN).
pub fn set_no_new_privs() -> Result<(), PrivError> {
    prctl("prctl(PR_SET_NO_NEW_PRIVS)", libc::PR_SET_NO_NEW_PRIVS, 1)
}

/// Become `id` for good and keep no capability. Must run single-threaded.
pub fn drop_to(id: &Identity) -> Result<(), PrivError> {
    let n = thread_count().map_err(|source| PrivError::Call {
        what: "listing /proc/self/task",
        source,
    })?;
    if n != 1 {
        return Err(PrivError::Threads(n));
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // Capabilities must not survive the uid change, and the bounding set can only shrink while
    // CAP_SETPCAP is held, i.e. before it.
    prctl("prctl(PR_SET_KEEPCAPS, 0)", libc::PR_SET_KEEPCAPS, 0)?;
    if root {
        for cap in 0..=last_cap() {
            // SAFETY: PR_CAPBSET_DROP takes a capability number.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(PrivError::Call {
                    what: "prctl(PR_CAPBSET_DROP)",
                    source: io::Error::last_os_error(),
                });
            }
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no further argument.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    check("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", rc.into())?;
    if root {
        let groups: Vec<libc::gid_t> = id.groups.clone();
        // SAFETY: `groups` holds groups.len() gids.
        let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
        check("setgroups", rc.into())?;
        // SAFETY: plain integer arguments. glibc applies set*id to every thread of the
        // process; there is only one.
        let rc = unsafe { libc::setresgid(id.gid, id.gid, id.gid) };
        check("setresgid", rc.into())?;
        // SAFETY: as above.
        let rc = unsafe { libc::setresuid(id.uid, id.uid, id.uid) };
        check("setresuid", rc.into())?;
    }
    // A uid change already emptied the permitted and effective sets (for a non-zero uid);
    // clear all three explicitly so uid 0 without capabilities holds none either.
    clear_capsets()?;
    // Not dumpable: /proc/PID/{mem,maps,environ...} of the VMM are root's, and no process of
    // the guest's user may ptrace it. (A uid change sets this too; be explicit.)
    prctl("prctl(PR_SET_DUMPABLE, 0)", libc::PR_SET_DUMPABLE, 0)?;
    set_no_new_privs()?;
    verify(id, root)
}

fn verify(id: &Identity, was_root: bool) -> Result<(), PrivError> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresuid writes three uids.
    unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    if was_root && [r, e, s] != [id.uid; 3] {
        return Err(PrivError::Verify {
            what: "uids",
            wanted: format!("{}", id.uid),
            found: format!("{r} {e} {s}"),
        });
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: getresgid writes three gids.
    unsafe { libc::getresgid(&mut r, &mut e, &mut s) };
    if was_root && [r, e, s] != [id.gid; 3] {
        return Err(PrivError::Verify {
            what: "gids",
            wanted: format!("{}", id.gid),
            found: format!("{r} {e} {s}"),
        });
    }
    let (eff, prm, inh) = current_caps().map_err(|source| PrivError::Call {
        what: "capget",
        source,
    })?;
    if eff | prm | inh != 0 {
        return Err(PrivError::Verify {
            what: "capabilities",
            wanted: "none".into(),
            found: format!("effective {eff:#x} permitted {prm:#x} inheritable {inh:#x}"),
        });
    }
    Ok(())
}
