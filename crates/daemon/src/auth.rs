//! Who is calling: peer credentials on the Unix socket (`SO_PEERCRED`), a bearer token on TCP.
//! Root and members of the admin group manage zones and VMs; others submit, watch and cancel
//! their own jobs.

use std::ffi::{CStr, CString};
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, UnixListener};

/// The other end of a connection.
#[derive(Clone, Debug)]
pub enum Peer {
    /// A local process: its credentials from `SO_PEERCRED` (`None` if the kernel gave none).
    Unix { uid: Option<u32>, gid: Option<u32> },
    /// A TCP client.
    Tcp(SocketAddr),
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Peer::Unix {
            uid: cred.as_ref().map(|c| c.uid()),
            gid: cred.as_ref().map(|c| c.gid()),
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer::Tcp(*stream.remote_addr())
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// User name (`uid N` when the user database has none).
    pub name: String,
    /// May manage zones, VMs and every job.
    pub admin: bool,
}

/// The user name of `uid`, if the user database knows it.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside buf.
    Some(
        unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// `(uid, primary gid)` of user `name`.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid out-parameter for getpwnam_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

/// The gid of group `name`.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: an all-zero group is a valid out-parameter for getgrnam_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut gr,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    (rc == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// Whether user `uid` (primary group `gid`) is in group `admin_gid`, supplementary groups
/// included.
fn in_group(uid: u32, gid: u32, admin_gid: u32) -> bool {
    if gid == admin_gid {
        return true;
    }
    let Some(name) = user_name(uid).and_then(|n| CString::new(n).ok()) else {
        return false;
    };
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    // SAFETY: groups has room for n entries; name is NUL-terminated.
    let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
    rc >= 0 && groups[..n.max(0) as usize].contains(&admin_gid)
}

/// Who a Unix-socket peer is.
pub fn unix_caller(uid: Option<u32>, gid: Option<u32>, admin_gid: Option<u32>) -> Caller {
    // No credentials: the least-privileged identity there is.
    let uid = uid.unwrap_or(u32::MAX);
    let admin = uid == 0 || admin_gid.is_some_and(|a| gid.is_some_and(|g| in_group(uid, g, a)));
    Caller {
        uid,
        name: user_name(uid).unwrap_or_else(|| format!("uid {uid}")),
        admin,
    }
}

/// Compare two secrets in time independent of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_admin_nobody_is_not() {
        assert!(unix_caller(Some(0), Some(0), None).admin);
        let nobody = unix_caller(Some(65534), Some(65534), None);
        assert!(!nobody.admin);
        assert_eq!(nobody.name, "nobody");
        assert!(unix_caller(Some(65534), Some(65534), Some(65534)).admin);
        assert!(!unix_caller(None, None, Some(0)).admin);
        assert_eq!(user_ids("root"), Some((0, 0)));
        assert_eq!(group_id("root"), Some(0));
    }

    #[test]
    fn secrets() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
