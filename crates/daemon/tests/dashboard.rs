//! The node dashboard in headless Chromium (Debian's `chromium` and `chromium-driver`, from
//! scripts/install-deps): a real daemon on a fake 12-core host serves it over TCP (with a
//! bearer token, passed in the URL fragment); chromedriver drives the browser. The page loads,
//! draws every core with its owner, shows a zone created through the API within a second
//! (live, from /v1/events, without a reload), shows the latest isolation chart, and a
//! screenshot (WebDriver) is saved to target/dashboard.png.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use dualstack_testutil::{have_tool, missing};
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to chromedriver.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let b = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    // chromedriver keeps the connection open: read the head, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "chromedriver closed the connection");
        raw.extend_from_slice(&buf[..n]);
        let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if raw.len() >= at + 4 + len {
            return serde_json::from_slice(&raw[at + 4..at + 4 + len]).unwrap_or(Value::Null);
        }
    }
}

/// A process this test started, killed by its pid when dropped.
struct Kid(Child);
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Driver {
    port: u16,
    session: String,
    _kid: Kid,
}

impl Driver {
    fn start(log: &Path) -> Driver {
        let port = free_port();
        let kid = Kid(Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap());
        wait_for(30, || TcpStream::connect(("127.0.0.1", port)).ok());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1100"]
            }
        }}});
        let r = http(port, "POST", "/session", Some(&caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Driver {
            port,
            session,
            _kid: kid,
        }
    }

    fn go(&self, url: &str) {
        let r = http(
            self.port,
            "POST",
            &format!("/session/{}/url", self.session),
            Some(&json!({ "url": url })),
        );
        assert!(r["value"].is_null(), "{r}");
    }

    fn js(&self, script: &str) -> Value {
        let r = http(
            self.port,
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(&json!({"script": script, "args": []})),
        );
        r["value"].clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

fn target_dir() -> PathBuf {
    // target/release/deps/dashboard-* -> target
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_dashboard_shows_a_new_zone_live_in_headless_chromium() {
    if !have_tool("chromium", "--version") || !have_tool("chromedriver", "--version") {
        return missing("needs chromium and chromium-driver (scripts/install-deps)");
    }
    let port = free_port();
    let mut d = Daemon::new(fake_env);
    let token = d.tmp.path().join("token");
    std::fs::write(&token, "s3cret-dashboard-token\n").unwrap();
    let results = d.tmp.path().join("results/20261202-120000");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(
        results.join("figure4.svg"),
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="400" height="120"><rect width="400" height="120" fill="#eef"/><text x="20" y="60" font-size="20">Figure 4: slowdown vs load</text></svg>"##,
    )
    .unwrap();
    d.extra = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--token-file".into(),
        token.display().to_string(),
        "--results".into(),
        d.tmp.path().join("results").display().to_string(),
    ];
    d.start();
    let url = format!("http://127.0.0.1:{port}/#token=s3cret-dashboard-token");

    let drv = Driver::start(&d.tmp.path().join("chromedriver.log"));
    drv.go(&url);
    // Loaded and connected to the event stream.
    wait_for(30, || {
        (drv.js("return document.getElementById('conn').textContent") == "live").then_some(())
    });
    wait_for(10, || {
        (drv.js("return document.querySelectorAll('.core').length") == 12).then_some(())
    });
    assert_eq!(
        drv.js("return document.querySelectorAll('.core.zone').length"),
        0
    );
    assert_eq!(
        drv.js("return document.querySelectorAll('.numa').length"),
        2
    );
    // The latest isolation chart.
    wait_for(10, || {
        (drv.js("const i = document.getElementById('isolation'); return !i.hidden && i.naturalWidth > 0 ? i.dataset.results : null") == "20261202-120000").then_some(())
    });

    // A zone created through the API appears within a second, without a reload.
    let t = Instant::now();
    let (s, z) = d.json(
        "PUT",
        "/v1/zones/dash0",
        Some(r#"{"cpus": 2, "memory": "256M", "no_irqs": true, "no_workqueue": true}"#),
    );
    assert_eq!(s, 201, "{z}");
    let shown = wait_for(5, || {
        let n = drv
            .js("return document.querySelectorAll('.core.zone[data-owner=\"zone dash0\"]').length");
        let row = drv.js("return !!document.querySelector('tr[data-zone=\"dash0\"]')");
        (n == 2 && row == true).then(|| t.elapsed())
    });
    eprintln!("zone shown {} ms after the PUT was sent", shown.as_millis());
    assert!(shown < Duration::from_secs(1), "took {shown:?}");
    assert_eq!(
        drv.js(
            "return document.querySelector('tr[data-zone=\"dash0\"] td:nth-child(2)').textContent"
        ),
        "active"
    );
    assert_eq!(
        drv.js("return Number(document.getElementById('events').textContent) > 0"),
        true
    );

    // A screenshot of the live page (WebDriver returns it as base64 PNG).
    let shot = target_dir().join("dashboard.png");
    let r = http(
        drv.port,
        "GET",
        &format!("/session/{}/screenshot", drv.session),
        None,
    );
    let png = base64_decode(r["value"].as_str().expect("a screenshot"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(d.json("DELETE", "/v1/zones/dash0", None).0, 200);
}

/// Standard base64 (what WebDriver screenshots are in).
fn base64_decode(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(val(c))).collect();
        let n = v
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    out
}
