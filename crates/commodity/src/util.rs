//! Small helpers: an flock guard, temp-file naming, memory sizes and CPU lists.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// An exclusive `flock` on a file, released on drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Blocks until the exclusive lock on `path` (created if missing) is held.
    pub fn exclusive(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Self { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// `dir/.name.tmp.<pid>` next to `path`, for write-then-rename.
pub fn sibling_tmp(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

/// Errors parsing user-given quantities.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// A memory size that is not `<number>[K|M|G|T][i][B]`.
    #[error("memory size {0:?} is not understood; write e.g. 256M, 512MiB or 2G (binary units)")]
    Size(String),
    /// A CPU list that is not `0-3,5`.
    #[error("CPU list {0:?} is not understood (expected e.g. 0-3,6)")]
    CpuList(String),
}

/// Parses a memory size with binary units (`256M`, `512MiB`, `2G`, `1048576`) into MiB.
/// Plain numbers are bytes; the result must be a whole, non-zero number of MiB.
pub fn parse_size_mib(text: &str) -> Result<u64, ParseError> {
    let err = || ParseError::Size(text.to_string());
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let num: u64 = num.parse().map_err(|_| err())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let bytes = match unit {
        "" => num,
        "k" => num.checked_mul(1 << 10).ok_or_else(err)?,
        "m" => num.checked_mul(1 << 20).ok_or_else(err)?,
        "g" => num.checked_mul(1 << 30).ok_or_else(err)?,
        "t" => num.checked_mul(1 << 40).ok_or_else(err)?,
        _ => return Err(err()),
    };
    if bytes == 0 || bytes % (1 << 20) != 0 {
        return Err(err());
    }
    Ok(bytes >> 20)
}

/// Parses a kernel CPU list (`0-3,6`, empty for none) into sorted CPU numbers.
pub fn parse_cpulist(text: &str) -> Result<Vec<u32>, ParseError> {
    let err = || ParseError::CpuList(text.to_string());
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) =
                    (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?);
                if a > b {
                    return Err(err());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| err())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPU numbers as a compact kernel CPU list.
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("256M"), Ok(256));
        assert_eq!(parse_size_mib("256MiB"), Ok(256));
        assert_eq!(parse_size_mib("2G"), Ok(2048));
        assert_eq!(parse_size_mib("2gb"), Ok(2048));
        assert_eq!(parse_size_mib("1048576"), Ok(1));
        assert_eq!(parse_size_mib("4096K"), Ok(4));
        assert!(parse_size_mib("0M").is_err());
        assert!(parse_size_mib("12").is_err());
        assert!(parse_size_mib("1.5G").is_err());
        assert!(parse_size_mib("lots").is_err());
        assert!(parse_size_mib("5X").is_err());
    }

    #[test]
    fn cpulists() {
        assert_eq!(parse_cpulist("0-3,6\n"), Ok(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpulist(""), Ok(vec![]));
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("a").is_err());
        assert_eq!(format_cpulist(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(format_cpulist(&[1]), "1");
        assert_eq!(format_cpulist(&[]), "");
    }
}
