//! The guest's filesystem view: a host directory as its root, and its working directory.
//!
//! Every path is resolved by the host kernel with `openat2(RESOLVE_IN_ROOT)` from that root,
//! so `..`, absolute paths and symlinks (absolute or relative) can never lead outside it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Errno, SysResult};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;
/// How often a path lookup is retried when openat2 reports a racing rename (EAGAIN).
const OPENAT2_RETRIES: u32 = 128;

pub fn cstring(b: &[u8]) -> Result<CString, Errno> {
    CString::new(b).map_err(|_| Errno(libc::EINVAL))
}

/// The host's errno of the call that just failed.
pub fn last_err<T>() -> Result<T, Errno> {
    Err(std::io::Error::last_os_error().into())
}

/// A host call's return value: negative is the host's errno.
pub fn check(r: libc::c_long) -> SysResult {
    if r < 0 {
        last_err()
    } else {
        Ok(r as u64)
    }
}

/// The guest's filesystem view: a root directory and the working directory inside it.
///
/// The working directory is held open (like a kernel's cwd reference): if it is renamed
/// later, relative paths keep resolving in it. Its guest path is read back from the kernel
/// (`/proc/self/fd`) when needed; the string is the fallback if that fails.
#[derive(Debug)]
pub struct FsRoot {
    root: OwnedFd,
    root_host: PathBuf,
    cwd: Mutex<String>,
    cwd_fd: Mutex<Option<OwnedFd>>,
}

impl FsRoot {
    /// Open `root` as the guest's `/`, with the guest working directory `cwd`.
    pub fn open(root: &Path, cwd: &str) -> std::io::Result<Self> {
        let root_host = std::fs::canonicalize(root)?;
        if !root_host.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            ));
        }
        let c = CString::new(root_host.as_os_str().as_encoded_bytes())
            .map_err(std::io::Error::other)?;
        // SAFETY: opens a path we own as a string; returns a new fd or -1.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd was just opened and is owned by nobody else.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        let fs = FsRoot {
            root,
            root_host,
            cwd: Mutex::new("/".into()),
            cwd_fd: Mutex::new(None),
        };
        let dir = fs
            .open_in_root(cwd.as_bytes(), libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| std::io::Error::from_raw_os_error(e.0))?;
        *fs.cwd.lock().unwrap() = fs.guest_path_of(&dir).unwrap_or_else(|| "/".into());
        *fs.cwd_fd.lock().unwrap() = Some(dir);
        Ok(fs)
    }

    /// Resolve `path` (absolute, or relative to the cwd) strictly inside the root.
    pub fn open_in_root(&self, path: &[u8], flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        let full = self.full_path(None, path);
        self.open_full(&full, flags, mode)
    }

    pub fn full_path(&self, base: Option<&str>, path: &[u8]) -> String {
        let p = String::from_utf8_lossy(path);
        if p.starts_with('/') {
            return p.into_owned();
        }
        let base = base.map(str::to_string).unwrap_or_else(|| self.cwd());
        format!("{}/{}", base.trim_end_matches('/'), p)
    }

    pub fn open_full(&self, full: &str, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        let c = cstring(full.as_bytes())?;
        // struct open_how { u64 flags; u64 mode; u64 resolve; }
        let how: [u64; 3] = [
            (flags | libc::O_CLOEXEC) as u64,
            if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
                u64::from(mode & 0o7777)
            } else {
                0
            },
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        ];
        // With RESOLVE_IN_ROOT the kernel answers EAGAIN when a rename anywhere on the host
        // raced with resolving a ".." component (it cannot prove the walk stayed inside): the
        // documented answer is to retry. Seen in practice while other processes rename files.
        let mut tries = 0;
        loop {
            // SAFETY: openat2 reads the path and the open_how struct of the size we pass; it
            // returns a new fd or -1.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    c.as_ptr(),
                    how.as_ptr(),
                    std::mem::size_of_val(&how),
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh fd from the kernel, owned by us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let e = std::io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() != Some(libc::EAGAIN) || tries >= OPENAT2_RETRIES {
                return Err(e.into());
            }
        }
    }

    /// Guest path of an fd opened inside the root (from the kernel's view of it).
    pub fn guest_path_of(&self, fd: &OwnedFd) -> Option<String> {
        self.guest_path_of_raw(fd.as_raw_fd())
    }

    /// Guest path of a host fd, as the kernel names it now (after any renames). None if it is
    /// not a live file below the root.
    pub fn guest_path_of_raw(&self, fd: i32) -> Option<String> {
        let host = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        if host.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") {
            return None;
        }
        let rel = host.strip_prefix(&self.root_host).ok()?;
        Some(format!("/{}", rel.display()).replace("//", "/"))
    }

    /// The working directory's guest path, following renames of the directory.
    pub fn cwd(&self) -> String {
        let now = self
            .cwd_fd
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|fd| self.guest_path_of(fd));
        let mut cwd = self.cwd.lock().unwrap();
        if let Some(p) = now {
            *cwd = p;
        }
        cwd.clone()
    }

    pub fn set_cwd(&self, path: String, fd: OwnedFd) {
        *self.cwd.lock().unwrap() = path;
        *self.cwd_fd.lock().unwrap() = Some(fd);
    }
}
