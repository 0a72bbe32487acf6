//! Who the guest runs as: `--user USER[:GROUP]`, or by default the user who invoked dualstack
//! (`SUDO_UID`/`SUDO_GID` when it runs through sudo), with that user's supplementary groups.

use std::ffi::{CStr, CString};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identity cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("--user {0:?}: expected USER or USER:GROUP (names or numeric ids)")]
    Syntax(String),
    #[error("--user: no such user {0:?} on this host (see getent passwd)")]
    NoSuchUser(String),
    #[error("--user: no such group {0:?} on this host (see getent group)")]
    NoSuchGroup(String),
    #[error(
        "only root may run a guest as another identity: you are uid {caller_uid} gid {caller_gid} \
         and asked for uid {uid} gid {gid}; drop --user or run through sudo"
    )]
    NotPermitted {
        caller_uid: u32,
        caller_gid: u32,
        uid: u32,
        gid: u32,
    },
    #[error("cannot read the user database ({what})")]
    Lookup {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{var}={value:?} is not a numeric id")]
    SudoVar { var: &'static str, value: String },
}

/// `USER[:GROUP]` as given on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub user: String,
    pub group: Option<String>,
}

impl FromStr for UserSpec {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdentityError::Syntax(s.to_string());
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let ok = |x: &str| !x.is_empty() && !x.contains(':') && !x.contains('\0');
        if !ok(user) || group.is_some_and(|g| !ok(g)) {
            return Err(bad());
        }
        Ok(UserSpec {
            user: user.to_string(),
            group: group.map(str::to_string),
        })
    }
}

impl fmt::Display for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            Some(g) => write!(f, "{}:{g}", self.user),
            None => f.write_str(&self.user),
        }
    }
}

/// The credentials the jailed VMM (and so the guest) holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// User name, or the number when the uid has no passwd entry (sudo from a deleted user).
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group included, as `id -G` lists them).
    pub groups: Vec<u32>,
}

/// Who called dualstack. Taken as a value so the rules can be tested without sudo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// `(SUDO_UID, SUDO_GID)`, honoured only when the real uid is 0.
    pub sudo: Option<(u32, u32)>,
}

impl Caller {
    /// This process: its real ids, and sudo's variables when it runs as root.
    pub fn current() -> Result<Caller, IdentityError> {
        // SAFETY: these id getters have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let var = |name: &'static str| -> Result<Option<u32>, IdentityError> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| IdentityError::SudoVar {
                        var: name,
                        value: v,
                    }),
                Err(_) => Ok(None),
            }
        };
        let sudo = if uid == 0 {
            match (var("SUDO_UID")?, var("SUDO_GID")?) {
                (Some(u), Some(g)) => Some((u, g)),
                _ => None,
            }
        } else {
            None
        };
        Ok(Caller { uid, gid, sudo })
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// One passwd entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Lookup buffer size for the `_r` functions (grown on ERANGE).
const LOOKUP_BUF: usize = 4096;

fn lookup_err(what: String, rc: i32) -> IdentityError {
    IdentityError::Lookup {
        what,
        source: std::io::Error::from_raw_os_error(rc),
    }
}

/// The passwd entry named `name`, if any.
pub fn user_by_name(name: &str) -> Result<Option<PasswdEntry>, IdentityError> {
    let c = CString::new(name).map_err(|_| IdentityError::NoSuchUser(name.into()))?;
    passwd_lookup(&format!("getpwnam_r({name})"), |pw, buf, len, out| {
        // SAFETY: every pointer is valid for the call; `buf` has `len` writable bytes.
        unsafe { libc::getpwnam_r(c.as_ptr(), pw, buf, len, out) }
    })
}

/// The passwd entry of `uid`, if any.
pub fn user_by_uid(uid: u32) -> Result<Option<PasswdEntry>, IdentityError> {
    passwd_lookup(&format!("getpwuid_r({uid})"), |pw, buf, len, out| {
        // SAFETY: every pointer is valid for the call; `buf` has `len` writable bytes.
        unsafe { libc::getpwuid_r(uid, pw, buf, len, out) }
    })
}

fn passwd_lookup(
    what: &str,
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
) -> Result<Option<PasswdEntry>, IdentityError> {
    nss_lookup(what, 1 << 20, call, |pw: &libc::passwd| {
        // SAFETY: on success pw_name points to a NUL-terminated string inside the buffer,
        // which lives until this closure returns.
        let name = unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned();
        PasswdEntry {
            name,
            uid: pw.pw_uid,
            gid: pw.pw_gid,
        }
    })
}

/// The C entry types the `get*_r` calls fill.
trait NssEntry {
    /// An empty entry for the call to fill.
    fn empty() -> Self;
}

impl NssEntry for libc::passwd {
    fn empty() -> Self {
        // SAFETY: passwd is plain data; all zeroes is a valid (empty) value.
        unsafe { std::mem::zeroed() }
    }
}

impl NssEntry for libc::group {
    fn empty() -> Self {
        // SAFETY: group is plain data; all zeroes is a valid (empty) value.
        unsafe { std::mem::zeroed() }
    }
}

/// One `get{pw,gr}{nam,uid,gid}_r` lookup: `call(entry, buf, len, result)` with a buffer grown
/// on ERANGE up to `max_len`, then `read` of the entry found (while its buffer lives).
fn nss_lookup<E: NssEntry, R>(
    what: &str,
    max_len: usize,
    call: impl Fn(*mut E, *mut libc::c_char, usize, *mut *mut E) -> libc::c_int,
    read: impl FnOnce(&E) -> R,
) -> Result<Option<R>, IdentityError> {
    let mut len = LOOKUP_BUF;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        let mut entry = E::empty();
        let mut out: *mut E = std::ptr::null_mut();
        let rc = call(&mut entry, buf.as_mut_ptr(), len, &mut out);
        if rc == libc::ERANGE && len < max_len {
            len *= 4;
            continue;
        }
        if out.is_null() {
            // Not found is rc 0 (or ENOENT/ESRCH with some NSS modules).
            return match rc {
                0 | libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => Ok(None),
                e => Err(lookup_err(what.into(), e)),
            };
        }
        return Ok(Some(read(&entry)));
    }
}

/// The gid of the group named `name`, if any.
pub fn group_by_name(name: &str) -> Result<Option<u32>, IdentityError> {
    let c = CString::new(name).map_err(|_| IdentityError::NoSuchGroup(name.into()))?;
    group_lookup(&format!("getgrnam_r({name})"), |gr, buf, len, out| {
        // SAFETY: every pointer is valid for the call; `buf` has `len` writable bytes.
        unsafe { libc::getgrnam_r(c.as_ptr(), gr, buf, len, out) }
    })
}

/// Whether a group with this gid exists.
pub fn group_exists(gid: u32) -> Result<bool, IdentityError> {
    group_lookup(&format!("getgrgid_r({gid})"), |gr, buf, len, out| {
        // SAFETY: every pointer is valid for the call; `buf` has `len` writable bytes.
        unsafe { libc::getgrgid_r(gid, gr, buf, len, out) }
    })
    .map(|g| g.is_some())
}

fn group_lookup(
    what: &str,
    call: impl Fn(*mut libc::group, *mut libc::c_char, usize, *mut *mut libc::group) -> libc::c_int,
) -> Result<Option<u32>, IdentityError> {
    nss_lookup(what, 1 << 22, call, |gr: &libc::group| gr.gr_gid)
}

/// The groups `user` belongs to, `gid` first (getgrouplist).
pub fn groups_of(user: &str, gid: u32) -> Result<Vec<u32>, IdentityError> {
    let c = CString::new(user).map_err(|_| IdentityError::NoSuchUser(user.into()))?;
    let mut n: libc::c_int = 32;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `groups` has room for `count` gids; getgrouplist writes at most that many
        // and stores the number it needs in `count`.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count as usize);
            let mut out = vec![gid];
            for g in groups {
                if !out.contains(&g) {
                    out.push(g);
                }
            }
            return Ok(out);
        }
        if count <= n {
            // glibc reports the size it needs; guard against one that does not.
            n *= 2;
        } else {
            n = count;
        }
        if n > 1 << 16 {
            return Err(lookup_err(format!("getgrouplist({user})"), libc::ERANGE));
        }
    }
}

/// The calling process's supplementary groups (getgroups).
pub fn current_groups() -> Vec<u32> {
    // SAFETY: with size 0 getgroups only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut v = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `v` has room for `n` gids.
    let m = unsafe { libc::getgroups(n, v.as_mut_ptr()) };
    v.truncate(m.max(0) as usize);
    v
}

fn find_user(name: &str) -> Result<PasswdEntry, IdentityError> {
    if let Some(pw) = user_by_name(name)? {
        return Ok(pw);
    }
    // A number names a uid (as chown does), but only one the passwd database knows.
    if let Ok(uid) = name.parse::<u32>() {
        if let Some(pw) = user_by_uid(uid)? {
            return Ok(pw);
        }
    }
    Err(IdentityError::NoSuchUser(name.to_string()))
}

fn find_group(name: &str) -> Result<u32, IdentityError> {
    if let Some(gid) = group_by_name(name)? {
        return Ok(gid);
    }
    if let Ok(gid) = name.parse::<u32>() {
        if group_exists(gid)? {
            return Ok(gid);
        }
    }
    Err(IdentityError::NoSuchGroup(name.to_string()))
}

/// The identity a run takes: `spec` when given, else the invoking user. A non-root caller may
/// only name itself (its own uid and primary gid): anything else is refused, before any VM
/// exists.
pub fn resolve(spec: Option<&UserSpec>, caller: &Caller) -> Result<Identity, IdentityError> {
    let id = match spec {
        Some(spec) => {
            let pw = find_user(&spec.user)?;
            let gid = match &spec.group {
                Some(g) => find_group(g)?,
                None => pw.gid,
            };
            let groups = if !caller.is_root() && pw.uid == caller.uid && gid == caller.gid {
                // Without CAP_SETGID the groups cannot change: report the ones held.
                current_groups()
            } else {
                groups_of(&pw.name, gid)?
            };
            Identity {
                user: pw.name,
                uid: pw.uid,
                gid,
                groups,
            }
        }
        None => {
            let (uid, gid) = match caller.sudo {
                Some(ids) if caller.is_root() => ids,
                _ => (caller.uid, caller.gid),
            };
            let pw = user_by_uid(uid)?;
            let groups = match (&pw, caller.is_root()) {
                (Some(pw), true) => groups_of(&pw.name, gid)?,
                (None, true) => vec![gid],
                (_, false) => current_groups(),
            };
            Identity {
                user: pw.map(|p| p.name).unwrap_or_else(|| uid.to_string()),
                uid,
                gid,
                groups,
            }
        }
    };
    if !caller.is_root() && (id.uid != caller.uid || id.gid != caller.gid) {
        return Err(IdentityError::NotPermitted {
            caller_uid: caller.uid,
            caller_gid: caller.gid,
            uid: id.uid,
            gid: id.gid,
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            sudo: None,
        }
    }

    #[test]
    fn parses_user_and_group() {
        let s: UserSpec = "alice".parse().unwrap();
        assert_eq!((s.user.as_str(), s.group), ("alice", None));
        let s: UserSpec = "alice:hpc".parse().unwrap();
        assert_eq!(s.group.as_deref(), Some("hpc"));
        assert_eq!(s.to_string(), "alice:hpc");
        for bad in ["", ":hpc", "alice:", "a:b:c", "a\0b"] {
            assert!(bad.parse::<UserSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolves_nobody_by_name_and_number() {
        let id = resolve(Some(&"nobody".parse().unwrap()), &root()).unwrap();
        assert_eq!((id.user.as_str(), id.uid), ("nobody", 65534));
        assert_eq!(id.groups[0], id.gid);
        let by_nr = resolve(Some(&"65534".parse().unwrap()), &root()).unwrap();
        assert_eq!(by_nr.uid, 65534);
        let with_group = resolve(Some(&"nobody:root".parse().unwrap()), &root()).unwrap();
        assert_eq!((with_group.uid, with_group.gid), (65534, 0));
        assert_eq!(with_group.groups[0], 0);
    }

    #[test]
    fn unknown_user_or_group_is_refused() {
        let e = resolve(Some(&"no-such-user-dualstack".parse().unwrap()), &root()).unwrap_err();
        assert!(matches!(e, IdentityError::NoSuchUser(_)), "{e}");
        assert!(e.to_string().contains("no-such-user-dualstack"));
        let e = resolve(Some(&"4000000000".parse().unwrap()), &root()).unwrap_err();
        assert!(matches!(e, IdentityError::NoSuchUser(_)), "{e}");
        let e = resolve(Some(&"nobody:no-such-group-x".parse().unwrap()), &root()).unwrap_err();
        assert!(matches!(e, IdentityError::NoSuchGroup(_)), "{e}");
    }

    #[test]
    fn non_root_may_only_be_itself() {
        let me = Caller {
            uid: 65534,
            gid: 65534,
            sudo: Some((0, 0)), // ignored: only root's sudo variables count
        };
        let id = resolve(None, &me).unwrap();
        assert_eq!((id.uid, id.gid), (65534, 65534));
        let same = resolve(Some(&"nobody".parse().unwrap()), &me).unwrap();
        assert_eq!(same.uid, 65534);
        let e = resolve(Some(&"root".parse().unwrap()), &me).unwrap_err();
        assert!(matches!(e, IdentityError::NotPermitted { .. }), "{e}");
        assert!(e.to_string().contains("only root"), "{e}");
        let e = resolve(Some(&"nobody:root".parse().unwrap()), &me).unwrap_err();
        assert!(matches!(e, IdentityError::NotPermitted { .. }), "{e}");
    }

    #[test]
    fn sudo_default_is_the_invoking_user() {
        let via_sudo = Caller {
            uid: 0,
            gid: 0,
            sudo: Some((65534, 65534)),
        };
        let id = resolve(None, &via_sudo).unwrap();
        assert_eq!((id.user.as_str(), id.uid, id.gid), ("nobody", 65534, 65534));
        let plain_root = resolve(None, &root()).unwrap();
        assert_eq!((plain_root.user.as_str(), plain_root.uid), ("root", 0));
        assert!(plain_root.groups.contains(&0));
        // A sudo uid without a passwd entry still works (its number is its name).
        let ghost = Caller {
            uid: 0,
            gid: 0,
            sudo: Some((4_000_000_001, 4_000_000_001)),
        };
        let g = resolve(None, &ghost).unwrap();
        assert_eq!(
            (g.user.as_str(), g.groups.clone()),
            ("4000000001", vec![4_000_000_001])
        );
    }
}
