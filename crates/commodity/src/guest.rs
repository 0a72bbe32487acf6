//! The built-in commodity guest: a Debian cloud kernel and a busybox initramfs, both built on the
//! machine that runs dualstack from Debian packages (nothing downloaded from elsewhere, nothing
//! committed).
//!
//! * Kernel: `apt-get download` the versioned `linux-image-*-cloud-amd64` package that the
//!   `linux-image-cloud-amd64` meta package depends on, `dpkg-deb -x` it and keep `boot/vmlinuz-*`.
//! * Initramfs: `busybox-static`'s `/bin/busybox` and the project's `/init` (guest/init.sh, with
//!   the `build` and `idle` workloads), packed as a gzip'd newc cpio by [`crate::cpio`].
//!
//! Both live in a cache directory guarded by an exclusive lock, so concurrent builders (tests,
//! two CLI invocations) never see half-written files. The initramfs is rebuilt whenever the init
//! script or busybox changes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::cpio::{CpioError, CpioWriter};
use crate::util::{self, FileLock};

/// The guest's `/init` (also documented there).
pub const INIT_SCRIPT: &str = include_str!("../guest/init.sh");
/// The line the guest prints once `/init` runs.
pub const READY_MARKER: &str = "dualstack-guest: ready";
/// Debian's meta package whose dependency names the current cloud kernel.
pub const KERNEL_META_PACKAGE: &str = "linux-image-cloud-amd64";
/// Where `busybox-static` installs its binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Errors while building or locating the built-in guest.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A helper program (apt-cache, apt-get, dpkg-deb) could not be run or failed.
    #[error("`{command}` failed: {detail}")]
    Tool { command: String, detail: String },
    /// The meta package does not name a kernel package.
    #[error("`apt-cache depends {meta}` names no linux-image-*-cloud-amd64 package (output: {output:?}); run `apt-get update` or pass --kernel/--initrd")]
    NoKernelPackage { meta: String, output: String },
    /// The extracted package holds no kernel image.
    #[error("package {package} holds no boot/vmlinuz-* file")]
    NoVmlinuz { package: String },
    /// busybox is missing or not static.
    #[error("{path}: {problem}; install busybox-static (scripts/install-deps)")]
    Busybox { path: PathBuf, problem: String },
    /// The guest has not been built yet and building was not allowed.
    #[error("the built-in guest is not built in {0}; run `dualstack vm image build`")]
    NotBuilt(PathBuf),
    /// Assembling the initramfs failed.
    #[error("assembling the initramfs failed")]
    Cpio(#[from] CpioError),
    /// A file system operation on the cache failed.
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> GuestError + 'a {
    move |source| GuestError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The files of a built guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestImage {
    /// The kernel (bzImage).
    pub kernel: PathBuf,
    /// The gzip'd cpio initramfs.
    pub initrd: PathBuf,
    /// The kernel's Debian package and version, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub kernel_package: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KernelStamp {
    package: String,
    file: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InitrdStamp {
    init_script: String,
    busybox: PathBuf,
    busybox_size: u64,
    busybox_mtime: i64,
}

/// Builds and finds the built-in guest in a cache directory.
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    dir: PathBuf,
    busybox: PathBuf,
}

/// The default cache directory: `$DUALSTACK_CACHE_DIR`, else `/var/cache/dualstack` for root,
/// else `$XDG_CACHE_HOME/dualstack` or `~/.cache/dualstack`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DUALSTACK_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/dualstack");
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("dualstack");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/dualstack")
}

impl GuestBuilder {
    /// A builder keeping its files in `<cache_dir>/guest`.
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            dir: cache_dir.join("guest"),
            busybox: PathBuf::from(DEFAULT_BUSYBOX),
        }
    }

    /// Uses another busybox binary (it must be statically linked).
    pub fn with_busybox(mut self, busybox: &Path) -> Self {
        self.busybox = busybox.to_path_buf();
        self
    }

    /// The directory holding the guest files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The guest if it is built and current, without building anything.
    pub fn find(&self) -> Result<GuestImage, GuestError> {
        let _lock = self.lock()?;
        let kernel = self
            .cached_kernel()
            .ok_or_else(|| GuestError::NotBuilt(self.dir.clone()))?;
        if !self.initrd_is_current()? {
            return Err(GuestError::NotBuilt(self.dir.clone()));
        }
        Ok(GuestImage {
            kernel: self.dir.join(&kernel.file),
            initrd: self.initrd_path(),
            kernel_package: kernel.package,
        })
    }

    /// Returns the guest, building whatever is missing or out of date. `force` rebuilds both.
    pub fn ensure(&self, force: bool) -> Result<GuestImage, GuestError> {
        fs::create_dir_all(&self.dir).map_err(io_err("creating the guest cache", &self.dir))?;
        let _lock = self.lock()?;
        let kernel = match self.cached_kernel() {
            Some(k) if !force => k,
            _ => self.fetch_kernel()?,
        };
        if force || !self.initrd_is_current()? {
            self.build_initrd()?;
        }
        Ok(GuestImage {
            kernel: self.dir.join(&kernel.file),
            initrd: self.initrd_path(),
            kernel_package: kernel.package,
        })
    }

    fn lock(&self) -> Result<FileLock, GuestError> {
        let path = self.dir.join(".lock");
        if !self.dir.exists() {
            return Err(GuestError::NotBuilt(self.dir.clone()));
        }
        FileLock::exclusive(&path).map_err(io_err("locking", &path))
    }

    fn initrd_path(&self) -> PathBuf {
        self.dir.join("initrd-dualstack.cpio.gz")
    }

    fn cached_kernel(&self) -> Option<KernelStamp> {
        let stamp: KernelStamp =
            serde_json::from_slice(&fs::read(self.dir.join("kernel.json")).ok()?).ok()?;
        let meta = fs::metadata(self.dir.join(&stamp.file)).ok()?;
        (meta.is_file() && meta.len() > 0).then_some(stamp)
    }

    fn fetch_kernel(&self) -> Result<KernelStamp, GuestError> {
        match self.fetch_kernel_once() {
            // A fresh machine (CI) may have no or stale package lists: refresh them once.
            Err(first @ (GuestError::Tool { .. } | GuestError::NoKernelPackage { .. })) => {
                tracing::info!("fetching the guest kernel failed ({first}); running apt-get update and retrying");
                if run_tool(Command::new("apt-get").args(["-q", "update"])).is_err() {
                    return Err(first);
                }
                self.fetch_kernel_once()
            }
            other => other,
        }
    }

    fn fetch_kernel_once(&self) -> Result<KernelStamp, GuestError> {
        let package = resolve_kernel_package()?;
        tracing::info!(%package, "downloading the guest kernel package");
        let work = self.dir.join(format!(".fetch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).map_err(io_err("creating", &work))?;
        let result = (|| {
            run_tool(
                Command::new("apt-get")
                    .args(["-q", "-o", "APT::Sandbox::User=root", "download", &package])
                    .current_dir(&work),
            )?;
            let deb = fs::read_dir(&work)
                .map_err(io_err("listing", &work))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .ok_or_else(|| GuestError::Tool {
                    command: format!("apt-get download {package}"),
                    detail: "no .deb file appeared".into(),
                })?;
            let tree = work.join("tree");
            run_tool(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
            let boot = tree.join("boot");
            let vmlinuz = fs::read_dir(&boot)
                .map_err(|_| GuestError::NoVmlinuz {
                    package: package.clone(),
                })?
                .filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
                .ok_or_else(|| GuestError::NoVmlinuz {
                    package: package.clone(),
                })?;
            let file = vmlinuz.file_name().to_string_lossy().into_owned();
            let dest = self.dir.join(&file);
            let tmp = self.dir.join(format!(".{file}.tmp"));
            fs::copy(vmlinuz.path(), &tmp).map_err(io_err("copying the kernel to", &tmp))?;
            fs::rename(&tmp, &dest).map_err(io_err("renaming into place", &dest))?;
            let stamp = KernelStamp {
                package: package.clone(),
                file,
            };
            write_atomic(
                &self.dir.join("kernel.json"),
                &serde_json::to_vec_pretty(&stamp).unwrap_or_default(),
            )?;
            Ok(stamp)
        })();
        let _ = fs::remove_dir_all(&work);
        result
    }

    fn busybox_stamp(&self) -> Result<InitrdStamp, GuestError> {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(&self.busybox).map_err(|e| GuestError::Busybox {
            path: self.busybox.clone(),
            problem: format!("cannot be read ({e})"),
        })?;
        Ok(InitrdStamp {
            init_script: INIT_SCRIPT.to_string(),
            busybox: self.busybox.clone(),
            busybox_size: meta.len(),
            busybox_mtime: meta.mtime(),
        })
    }

    fn initrd_is_current(&self) -> Result<bool, GuestError> {
        let Ok(bytes) = fs::read(self.dir.join("initrd.json")) else {
            return Ok(false);
        };
        let Ok(stamp) = serde_json::from_slice::<InitrdStamp>(&bytes) else {
            return Ok(false);
        };
        Ok(self.initrd_path().is_file() && stamp == self.busybox_stamp()?)
    }

    fn build_initrd(&self) -> Result<(), GuestError> {
        let stamp = self.busybox_stamp()?;
        let busybox = fs::read(&self.busybox).map_err(io_err("reading", &self.busybox))?;
        if let Some(problem) = static_elf_problem(&busybox) {
            return Err(GuestError::Busybox {
                path: self.busybox.clone(),
                problem,
            });
        }
        let archive = initramfs(&busybox)?;
        write_atomic(&self.initrd_path(), &archive)?;
        write_atomic(
            &self.dir.join("initrd.json"),
            &serde_json::to_vec_pretty(&stamp).unwrap_or_default(),
        )?;
        tracing::info!(path = %self.initrd_path().display(), bytes = archive.len(), "built the guest initramfs");
        Ok(())
    }
}

/// Assembles the initramfs (gzip'd newc cpio) around a static busybox binary.
pub fn initramfs(busybox: &[u8]) -> Result<Vec<u8>, GuestError> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut cpio = CpioWriter::new(gz);
    for dir in [
        "bin", "dev", "proc", "sys", "tmp", "sbin", "usr", "usr/bin", "usr/sbin",
    ] {
        cpio.dir(dir, 0o755)?;
    }
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.char_dev("dev/null", 0o666, 1, 3)?;
    cpio.file("bin/busybox", 0o755, busybox)?;
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes())?;
    let gz = cpio.finish()?;
    gz.finish().map_err(|e| GuestError::Cpio(CpioError::Io(e)))
}

/// `None` if `elf` is a 64-bit x86 ELF executable without an interpreter, else what is wrong.
pub fn static_elf_problem(elf: &[u8]) -> Option<String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Some("is not an ELF file".into());
    }
    if elf[4] != 2 || elf[5] != 1 || u16::from_le_bytes([elf[18], elf[19]]) != 62 {
        return Some("is not a little-endian x86-64 ELF file".into());
    }
    let phoff = u64::from_le_bytes(elf[32..40].try_into().ok()?) as usize;
    let phentsize = u16::from_le_bytes([elf[54], elf[55]]) as usize;
    let phnum = u16::from_le_bytes([elf[56], elf[57]]) as usize;
    for i in 0..phnum {
        let at = phoff.checked_add(i.checked_mul(phentsize)?)?;
        let p_type = elf.get(at..at + 4)?;
        if u32::from_le_bytes(p_type.try_into().ok()?) == 3 {
            return Some("is dynamically linked (has a PT_INTERP program header)".into());
        }
    }
    None
}

/// `None` if `header` (the first KiB or more of a file of `file_len` bytes) looks like a complete
/// x86 Linux bzImage (boot protocol >= 2.00), else what is wrong. QEMU would run a file without
/// the `HdrS` header as a pre-2.00 kernel and execute garbage silently, so we check first.
pub fn bzimage_problem(header: &[u8], file_len: u64) -> Option<String> {
    if header.len() < 0x260 {
        return Some(format!(
            "is only {file_len} bytes, too small for a Linux kernel image"
        ));
    }
    if &header[0x202..0x206] != b"HdrS" {
        return Some("is not a Linux bzImage (no \"HdrS\" boot header at offset 0x202)".into());
    }
    let version = u16::from_le_bytes([header[0x206], header[0x207]]);
    if version < 0x0200 {
        return Some(format!(
            "uses boot protocol {}.{:02}, older than the 2.00 QEMU needs",
            version >> 8,
            version & 0xff
        ));
    }
    let setup_sects = match header[0x1f1] {
        0 => 4,
        n => u64::from(n),
    };
    let syssize = u64::from(u32::from_le_bytes([
        header[0x1f4],
        header[0x1f5],
        header[0x1f6],
        header[0x1f7],
    ]));
    let expected = (setup_sects + 1) * 512 + syssize * 16;
    if file_len < expected {
        return Some(format!(
            "is truncated: its header says {expected} bytes, the file has {file_len}"
        ));
    }
    None
}

/// Asks apt which versioned cloud kernel package the meta package currently depends on.
pub fn resolve_kernel_package() -> Result<String, GuestError> {
    let out = run_tool(Command::new("apt-cache").args(["depends", KERNEL_META_PACKAGE]))?;
    parse_kernel_dependency(&out).ok_or_else(|| GuestError::NoKernelPackage {
        meta: KERNEL_META_PACKAGE.into(),
        output: out.trim().to_string(),
    })
}

/// Picks `linux-image-<version>-cloud-amd64` out of `apt-cache depends` output.
pub fn parse_kernel_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let dep = line.trim().strip_prefix("Depends:")?.trim();
        let name = dep.trim_start_matches('<').trim_end_matches('>');
        (name.starts_with("linux-image-")
            && name.ends_with("-cloud-amd64")
            && name != KERNEL_META_PACKAGE)
            .then(|| name.to_string())
    })
}

fn run_tool(cmd: &mut Command) -> Result<String, GuestError> {
    let command = format!("{:?}", cmd).replace('"', "");
    let out = cmd.output().map_err(|e| GuestError::Tool {
        command: command.clone(),
        detail: format!("cannot run it: {e}"),
    })?;
    if !out.status.success() {
        return Err(GuestError::Tool {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), GuestError> {
    let tmp = util::sibling_tmp(path);
    let mut f = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(data).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_versioned_kernel_dependency() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_kernel_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(parse_kernel_dependency("linux-image-cloud-amd64\n"), None);
        assert_eq!(
            parse_kernel_dependency("x\n  Depends: <linux-image-6.2-cloud-amd64>\n").as_deref(),
            Some("linux-image-6.2-cloud-amd64")
        );
    }

    #[test]
    fn static_elf_check() {
        assert!(static_elf_problem(b"#!/bin/sh\n").is_some());
        if let Ok(busybox) = fs::read(DEFAULT_BUSYBOX) {
            assert_eq!(
                static_elf_problem(&busybox),
                None,
                "busybox-static should be static"
            );
        }
        // /bin/sh from Debian is dynamically linked.
        if let Ok(sh) = fs::read("/bin/dash") {
            assert!(static_elf_problem(&sh).unwrap().contains("dynamically"));
        }
    }

    #[test]
    fn initramfs_is_gzip_with_init_and_busybox() {
        let archive = initramfs(b"\x7fELF-fake-busybox").unwrap();
        assert_eq!(&archive[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&archive[..]), &mut raw)
            .unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("init\0"));
        assert!(text.contains("bin/busybox\0"));
        assert!(text.contains("dev/console\0"));
        assert!(text.contains(READY_MARKER));
    }

    #[test]
    fn bzimage_checks() {
        let mut h = vec![0u8; 0x400];
        assert!(bzimage_problem(&h[..16], 16).unwrap().contains("too small"));
        assert!(bzimage_problem(&h, 1 << 20).unwrap().contains("HdrS"));
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h[0x206] = 0x0f;
        h[0x207] = 0x02;
        h[0x1f1] = 27;
        h[0x1f4..0x1f8].copy_from_slice(&1000u32.to_le_bytes());
        let full = 28 * 512 + 16_000;
        assert_eq!(bzimage_problem(&h, full), None);
        assert!(bzimage_problem(&h, full - 1).unwrap().contains("truncated"));
        h[0x207] = 0x01;
        assert!(bzimage_problem(&h, full).unwrap().contains("protocol"));
    }

    #[test]
    fn find_reports_not_built_for_an_empty_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let b = GuestBuilder::new(tmp.path());
        assert!(matches!(b.find(), Err(GuestError::NotBuilt(_))));
    }
}
