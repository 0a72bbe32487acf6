//! A real daemon (the `dualstack` binary) on a temporary socket and state dir, and a tiny
//! HTTP/1.1 client over the Unix socket.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `dualstack` binary next to this test (`cargo build --release -p dualstack` first).
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("dualstack");
    assert!(
        p.exists(),
        "{} missing: run `cargo build --release -p dualstack` first",
        p.display()
    );
    p
}

pub struct Daemon {
    pub tmp: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub env: Vec<(String, String)>,
    pub extra: Vec<String>,
    pub child: Option<Child>,
}

/// A fake cgroup v2 host tree with a synthetic 2-socket, 12-core node (no host state touched).
pub fn fake_env(root: &Path) -> Vec<(String, String)> {
    let put = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{text}\n")).unwrap();
    };
    put("fake/cgroup/cgroup.controllers", "cpuset cpu");
    put("fake/cgroup/cgroup.subtree_control", "cpu");
    put("fake/cgroup/cpuset.cpus.effective", "0-11");
    put("fake/cgroup/cpuset.mems.effective", "0-1");
    for n in 0..2 {
        put(
            &format!(
                "fake/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages"
            ),
            "0",
        );
        put(
            &format!(
                "fake/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/free_hugepages"
            ),
            "0",
        );
    }
    put("fake/proc/irq/3/smp_affinity_list", "0-11");
    put("fake/proc/sys/kernel/random/boot_id", "fake");
    put("fake/sys/devices/virtual/workqueue/cpumask", "00000fff");
    vec![
        (
            "DUALSTACK_FAKE_ROOT".into(),
            root.join("fake").display().to_string(),
        ),
        ("DUALSTACK_FAKE_CGROUP".into(), "v2".into()),
        (
            "DUALSTACK_TOPOLOGY".into(),
            "synthetic:package:2 numa:1(memory=8GiB) core:6 pu:1".into(),
        ),
    ]
}

impl Daemon {
    pub fn new(env: impl FnOnce(&Path) -> Vec<(String, String)>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        // Let unprivileged test clients reach the socket.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = env(tmp.path());
        Self {
            socket: tmp.path().join("api.sock"),
            state: tmp.path().join("state"),
            tmp,
            env,
            extra: vec![],
            child: None,
        }
    }

    pub fn start(&mut self) {
        let mut cmd = Command::new(bin());
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("daemon")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--grace")
            .arg("1")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.tmp.path().join("daemon.log")).unwrap());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        let t = Instant::now();
        while UnixStream::connect(&self.socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "daemon did not come up: {}",
                self.log()
            );
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited {st}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL the daemon (its jobs live on in their own sessions).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the daemon this test started.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        request(&self.socket, method, path, body)
    }
    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let r = self.req(method, path, body);
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a new connection (`Connection: close`); chunked bodies are decoded.
pub fn request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Resp {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let b = body.unwrap_or("");
    let ct = if body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

pub fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(std::str::from_utf8(&rest[..p]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + n]);
            rest = &rest[p + 4 + n..];
        }
        body = out;
    }
    Resp {
        status,
        headers: head,
        body,
    }
}

/// Poll `f` until it returns Some, up to `secs`.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host-wide lock for tests that touch cpusets and huge pages.
pub use dualstack_testutil::HostLock;
pub fn host_lock() -> HostLock {
    HostLock::take()
}
