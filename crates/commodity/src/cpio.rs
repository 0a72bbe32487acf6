//! A minimal writer for the `newc` cpio format the Linux kernel unpacks as an initramfs.
//!
//! Only what the built-in guest needs: directories, regular files and device nodes. Writing the
//! archive ourselves (instead of running `cpio`) keeps the image reproducible (fixed inode
//! numbers, owners and times) and lets device nodes such as `/dev/console` be added without
//! privileges.

use std::io::{self, Write};

/// Errors while writing a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// An entry name that the kernel would reject.
    #[error(
        "cpio entry name {0:?} is invalid: it must be relative, non-empty and without NUL bytes"
    )]
    BadName(String),
    /// The entry is larger than newc's 32-bit size field.
    #[error("cpio entry {name:?} is {size} bytes; the newc format holds at most 4 GiB per file")]
    TooLarge { name: String, size: usize },
    /// The underlying writer failed.
    #[error("writing the cpio archive failed")]
    Io(#[from] io::Error),
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// Streams a `newc` archive into `W`. Call [`CpioWriter::finish`] to write the trailer.
pub struct CpioWriter<W: Write> {
    out: W,
    written: usize,
    next_ino: u32,
}

struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// Adds a directory (`mode` holds the permission bits, e.g. `0o755`).
    pub fn dir(&mut self, name: &str, mode: u32) -> Result<(), CpioError> {
        self.entry(
            Header {
                name,
                mode: S_IFDIR | (mode & 0o7777),
                nlink: 2,
                size: 0,
                rdev: (0, 0),
            },
            &[],
        )
    }

    /// Adds a regular file with the given contents.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        self.entry(
            Header {
                name,
                mode: S_IFREG | (mode & 0o7777),
                nlink: 1,
                size: data.len(),
                rdev: (0, 0),
            },
            data,
        )
    }

    /// Adds a character device node.
    pub fn char_dev(
        &mut self,
        name: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.entry(
            Header {
                name,
                mode: S_IFCHR | (mode & 0o7777),
                nlink: 1,
                size: 0,
                rdev: (major, minor),
            },
            &[],
        )
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.raw_entry(
            Header {
                name: "TRAILER!!!",
                mode: 0,
                nlink: 1,
                size: 0,
                rdev: (0, 0),
            },
            0,
            &[],
        )?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, header: Header<'_>, data: &[u8]) -> Result<(), CpioError> {
        let name = header.name;
        if name.is_empty() || name.starts_with('/') || name.contains('\0') || name == "TRAILER!!!" {
            return Err(CpioError::BadName(name.to_string()));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(header, ino, data)
    }

    fn raw_entry(&mut self, h: Header<'_>, ino: u32, data: &[u8]) -> Result<(), CpioError> {
        let size = u32::try_from(h.size).map_err(|_| CpioError::TooLarge {
            name: h.name.to_string(),
            size: h.size,
        })?;
        let namesize = h.name.len() + 1;
        // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check: all fixed-width hex.
        let header = format!(
            "070701{ino:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            h.mode, 0, 0, h.nlink, 0, 0, 0, h.rdev.0, h.rdev.1, 0
        );
        self.put(header.as_bytes())?;
        self.put(h.name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.out.write_all(bytes)?;
        self.written += bytes.len();
        Ok(())
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let pad = (4 - self.written % 4) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_has_aligned_entries_and_trailer() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/hello", 0o755, b"hi\n").unwrap();
        w.char_dev("dev/console", 0o600, 5, 1).unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("070701"));
        assert!(text.contains("bin/hello\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // The file header: mode 0100755, size 3, name size 10.
        let at = text.find("bin/hello").unwrap() - 110;
        let hdr = &text[at..at + 110];
        assert_eq!(&hdr[14..22], "000081ed");
        assert_eq!(&hdr[54..62], "00000003");
        assert_eq!(&hdr[94..102], "0000000a");
        // The device node carries major 5, minor 1.
        let at = text.find("dev/console").unwrap() - 110;
        let hdr = &text[at..at + 110];
        assert_eq!(&hdr[78..86], "00000005");
        assert_eq!(&hdr[86..94], "00000001");
    }

    #[test]
    fn rejects_absolute_and_empty_names() {
        let mut w = CpioWriter::new(Vec::new());
        assert!(matches!(w.dir("/abs", 0o755), Err(CpioError::BadName(_))));
        assert!(matches!(w.file("", 0o644, b""), Err(CpioError::BadName(_))));
    }

    #[test]
    fn system_cpio_can_list_our_archive() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            return dualstack_testutil::missing("cpio is not installed (run scripts/install-deps)");
        };
        assert!(status.status.success());
        let mut w = CpioWriter::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("etc/motd", 0o644, b"hello world\n").unwrap();
        let out = w.finish().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &out).unwrap();
        drop(child.stdin.take());
        let listed = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&listed.stdout), "etc\netc/motd\n");
    }
}
