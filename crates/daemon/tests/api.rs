//! Every endpoint against a real daemon on a fake cgroup v2 host tree (synthetic 12-core node):
//! zones (idempotent PUT, 409), bad input naming the field, concurrency, the body limit, the
//! OpenAPI document (committed == generated, every path exercised) and the README examples.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;

fn fake() -> Daemon {
    let mut d = Daemon::new(fake_env);
    d.start();
    d
}

const ZONE: &str = r#"{"cpus": 2, "memory": "256M", "no_irqs": true, "no_workqueue": true}"#;

#[test]
fn every_endpoint_and_the_openapi_document() {
    let d = fake();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut hit = |m: &str, tmpl: &str| {
        seen.insert((m.to_lowercase(), tmpl.to_string()));
    };
    let r = d.req("GET", "/", None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("dualstack node"));
    hit("get", "/");
    let (s, node) = d.json("GET", "/v1/node", None);
    assert_eq!(s, 200);
    assert_eq!(node["topology"]["cores"].as_array().unwrap().len(), 12);
    hit("get", "/v1/node");
    let (s, e) = d.json("GET", "/v1/isolation/latest", None);
    assert_eq!(
        (s, &e["field"]),
        (404, &serde_json::json!("results")),
        "{e}"
    );
    let res = d.state.join("results").join("20260101-000000");
    std::fs::create_dir_all(&res).unwrap();
    std::fs::write(
        res.join("figure4.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
    )
    .unwrap();
    let r = d.req("GET", "/v1/isolation/latest", None);
    assert_eq!(r.status, 200);
    assert!(
        r.headers.to_ascii_lowercase().contains("image/svg+xml"),
        "{}",
        r.headers
    );
    assert!(r.headers.contains("20260101-000000"), "{}", r.headers);
    hit("get", "/v1/isolation/latest");
    let (s, z) = d.json("PUT", "/v1/zones/hpc0", Some(ZONE));
    assert_eq!(s, 201, "{z}");
    assert_eq!(z["state"], "active");
    hit("put", "/v1/zones/{name}");
    let (s, z2) = d.json("PUT", "/v1/zones/hpc0", Some(ZONE));
    assert_eq!(
        (s, &z2["cpus"]),
        (200, &z["cpus"]),
        "same spec: the existing zone"
    );
    let (s, e) = d.json(
        "PUT",
        "/v1/zones/hpc0",
        Some(r#"{"cpus": 3, "memory": "256M", "no_irqs": true, "no_workqueue": true}"#),
    );
    assert_eq!(s, 409, "{e}");
    assert_eq!(e["field"], "name");
    let (s, l) = d.json("GET", "/v1/zones", None);
    assert_eq!((s, l.as_array().unwrap().len()), (200, 1));
    hit("get", "/v1/zones");
    let (s, z3) = d.json("GET", "/v1/zones/hpc0", None);
    assert_eq!((s, &z3["name"]), (200, &serde_json::json!("hpc0")));
    hit("get", "/v1/zones/{name}");
    // Jobs: no huge pages on the fake tree, so a job fails up front with dualstack run's message.
    let (s, j) = d.json(
        "POST",
        "/v1/jobs",
        Some(r#"{"program": "/bin/true", "memory": "64M"}"#),
    );
    assert_eq!(s, 202, "{j}");
    hit("post", "/v1/jobs");
    let id = j["id"].as_i64().unwrap();
    let job = wait_for(30, || {
        let (_, j) = d.json("GET", &format!("/v1/jobs/{id}"), None);
        (j["state"] != "queued" && j["state"] != "running" && j["state"] != "starting").then_some(j)
    });
    hit("get", "/v1/jobs/{id}");
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["exit_status"], 1);
    let err = d.req("GET", &format!("/v1/jobs/{id}/output?stream=stderr"), None);
    assert!(err.text().contains("dualstack: error"), "{}", err.text());
    hit("get", "/v1/jobs/{id}/output");
    let (s, l) = d.json("GET", "/v1/jobs", None);
    assert_eq!((s, l.as_array().unwrap().len()), (200, 1));
    hit("get", "/v1/jobs");
    let (s, c) = d.json("DELETE", &format!("/v1/jobs/{id}"), None);
    assert_eq!(
        (s, &c["state"]),
        (202, &serde_json::json!("failed")),
        "cancelling an ended job changes nothing"
    );
    hit("delete", "/v1/jobs/{id}");
    // VMs: bad requests are refused before QEMU is involved; unknown names are 404.
    let (s, e) = d.json("POST", "/v1/vms", Some(r#"{"name": "v/1"}"#));
    assert_eq!((s, &e["field"]), (400, &serde_json::json!("name")), "{e}");
    let (s, e) = d.json("POST", "/v1/vms", Some(r#"{"name": "v1", "vcpus": 0}"#));
    assert_eq!((s, &e["field"]), (422, &serde_json::json!("vcpus")), "{e}");
    hit("post", "/v1/vms");
    let (s, l) = d.json("GET", "/v1/vms", None);
    assert_eq!((s, l), (200, serde_json::json!([])));
    hit("get", "/v1/vms");
    assert_eq!(d.json("GET", "/v1/vms/nope", None).0, 404);
    hit("get", "/v1/vms/{name}");
    assert_eq!(d.json("POST", "/v1/vms/nope/stop", None).0, 404);
    hit("post", "/v1/vms/{name}/stop");
    assert_eq!(d.json("DELETE", "/v1/vms/nope", None).0, 404);
    hit("delete", "/v1/vms/{name}");
    // Events: a zone change arrives on the stream.
    let ev = {
        let sock = d.socket.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            write!(s, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&got).contains("\"deleted\"") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            String::from_utf8_lossy(&got).into_owned()
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (s, rel) = d.json("DELETE", "/v1/zones/hpc0", None);
        assert_eq!(s, 200, "{rel}");
        hit("delete", "/v1/zones/{name}");
        reader.join().unwrap()
    };
    assert!(
        ev.contains("event: zone") && ev.contains("\"name\":\"hpc0\""),
        "{ev}"
    );
    hit("get", "/v1/events");
    let m = d.req("GET", "/metrics", None).text();
    for needle in [
        "dualstack_zones{state=\"active\"} 0",
        "dualstack_jobs{state=\"failed\"} 1",
        "dualstack_cpus{owner=\"free\"} 12",
        "dualstack_api_requests_total{method=\"PUT\",route=\"/v1/zones/{name}\",status=\"201\"} 1",
        "dualstack_api_request_duration_seconds_bucket",
        "dualstack_vms{state=\"running\"} 0",
    ] {
        assert!(m.contains(needle), "{needle} not in\n{m}");
    }
    hit("get", "/metrics");
    let served = d.req("GET", "/v1/openapi.json", None).text();
    hit("get", "/v1/openapi.json");
    // The committed document is the generated one.
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/openapi.json"
    ))
    .unwrap();
    assert_eq!(served, dualstack_daemon::api::openapi_json());
    assert_eq!(
        committed, served,
        "contrib/openapi.json is stale: `dualstack daemon openapi > contrib/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            documented.insert((m.clone(), path.clone()));
        }
    }
    let missing: Vec<_> = documented.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "documented but not exercised: {missing:?}"
    );
    let undocumented: Vec<_> = seen.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "exercised but not documented: {undocumented:?}"
    );
}

#[test]
fn bad_input_names_the_field_and_changes_nothing() {
    let d = fake();
    let cases: &[(&str, &str, &str, u16, Option<&str>)] = &[
        ("PUT", "/v1/zones/a", r#"{"cpus": 1, "memory": "#, 400, None),
        (
            "PUT",
            "/v1/zones/a",
            r#"{"cpus": 1, "memory": "64M", "colour": "red"}"#,
            400,
            Some("colour"),
        ),
        (
            "PUT",
            "/v1/zones/a",
            r#"{"cpus": "two", "memory": "64M"}"#,
            400,
            Some("cpus"),
        ),
        ("PUT", "/v1/zones/a", r#"{"cpus": 1}"#, 400, Some("memory")),
        (
            "PUT",
            "/v1/zones/a",
            r#"{"cpus": 1, "memory": "lots"}"#,
            400,
            Some("memory"),
        ),
        (
            "PUT",
            "/v1/zones/a",
            r#"{"cpus": 99, "memory": "64M"}"#,
            422,
            Some("cpus"),
        ),
        (
            "PUT",
            "/v1/zones/a",
            r#"{"cpus": 1, "memory": "900G"}"#,
            422,
            Some("memory"),
        ),
        (
            "PUT",
            "/v1/zones/a",
            r#"{"cpus": 1, "memory": "64M", "numa_node": 7}"#,
            422,
            Some("numa_node"),
        ),
        (
            "PUT",
            "/v1/zones/a",
            r#"{"cpus": 1, "memory": "64M", "hugepage_size": "3M"}"#,
            400,
            Some("hugepage_size"),
        ),
        (
            "PUT",
            "/v1/zones/a%2Fb",
            r#"{"cpus": 1, "memory": "64M"}"#,
            400,
            Some("name"),
        ),
        ("POST", "/v1/jobs", r#"{"args": []}"#, 400, Some("program")),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "/bin/true", "cpus": -1}"#,
            400,
            Some("cpus"),
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "/bin/true", "cpus": 500}"#,
            422,
            Some("cpus"),
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "/bin/true", "env": ["NOEQUALS"]}"#,
            400,
            Some("env[0]"),
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "/bin/true", "root": "/usr/lib"}"#,
            422,
            Some("program"),
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "relative/prog"}"#,
            400,
            Some("program"),
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "/bin/true", "zone": "nope"}"#,
            422,
            Some("zone"),
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "/bin/true", "memory": "100T"}"#,
            422,
            Some("memory"),
        ),
        (
            "POST",
            "/v1/jobs",
            r#"{"program": "/bin/true", "user": "no-such-user-x"}"#,
            422,
            Some("user"),
        ),
        ("GET", "/v1/jobs/abc", "", 400, None),
        ("GET", "/v1/jobs/999", "", 404, Some("id")),
        ("GET", "/v1/zones/none", "", 404, Some("name")),
    ];
    let before = std::fs::read_dir(d.tmp.path().join("fake/cgroup"))
        .unwrap()
        .count();
    for (m, p, b, status, field) in cases {
        let r = d.req(m, p, (!b.is_empty()).then_some(*b));
        assert_eq!(r.status, *status, "{m} {p} {b}: {}", r.text());
        if r.status != 400 || field.is_some() {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if let Some(f) = field {
                assert_eq!(v["field"], *f, "{m} {p} {b}: {v}");
            }
        }
    }
    // No zone, no job, no cgroup directory.
    assert_eq!(d.json("GET", "/v1/zones", None).1, serde_json::json!([]));
    assert_eq!(d.json("GET", "/v1/jobs", None).1, serde_json::json!([]));
    assert_eq!(
        std::fs::read_dir(d.tmp.path().join("fake/cgroup"))
            .unwrap()
            .count(),
        before
    );
    // Without a JSON content type.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap();
    assert_eq!(parse(&raw).status, 415);
}

#[test]
fn hundred_concurrent_puts_make_one_zone_and_hundred_jobs_are_all_accounted_for() {
    let d = Arc::new(fake());
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let (d, st) = (d.clone(), statuses.clone());
            std::thread::spawn(move || {
                let (s, z) = d.json("PUT", "/v1/zones/race", Some(ZONE));
                st.lock()
                    .unwrap()
                    .push((s, z["cpus"].as_str().unwrap_or("").to_string()));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = statuses.lock().unwrap();
    assert_eq!(st.iter().filter(|(s, _)| *s == 201).count(), 1, "{st:?}");
    assert_eq!(st.iter().filter(|(s, _)| *s == 200).count(), 99, "{st:?}");
    assert!(st.iter().all(|(_, c)| *c == st[0].1));
    assert_eq!(
        d.json("GET", "/v1/zones", None).1.as_array().unwrap().len(),
        1
    );
    assert_eq!(d.json("DELETE", "/v1/zones/race", None).0, 200);
    // Only the instance's own directory layout remains gone with the zone.
    assert!(!d
        .tmp
        .path()
        .join("fake/cgroup/dualstack/zone-race")
        .exists());

    let ids = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let (d, ids) = (d.clone(), ids.clone());
            std::thread::spawn(move || {
                let (s, j) = d.json(
                    "POST",
                    "/v1/jobs",
                    Some(&format!(
                        r#"{{"program": "/bin/true", "args": ["{i}"], "memory": "64M"}}"#
                    )),
                );
                assert_eq!(s, 202, "{j}");
                ids.lock().unwrap().push(j["id"].as_i64().unwrap());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut ids = ids.lock().unwrap().clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    let jobs = wait_for(300, || {
        let (_, l) = d.json("GET", "/v1/jobs", None);
        let l = l.as_array().unwrap().clone();
        l.iter()
            .all(|j| j["state"] == "failed" || j["state"] == "lost")
            .then_some(l)
    });
    assert_eq!(jobs.len(), 100);
    let lost: Vec<_> = jobs.iter().filter(|j| j["state"] == "lost").collect();
    assert!(lost.is_empty(), "{lost:?}");
    assert!(jobs
        .iter()
        .all(|j| j["exit_status"] == 1 && j["reason"].is_null()));
}

#[test]
fn a_100_mb_body_is_refused_while_others_are_served() {
    let d = fake();
    let sock = d.socket.clone();
    let big = std::thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        write!(s, "PUT /v1/zones/big HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", 100 << 20).unwrap();
        let chunk = vec![b' '; 1 << 20];
        let mut sent = 0;
        for _ in 0..100 {
            if s.write_all(&chunk).is_err() {
                break;
            }
            sent += 1;
        }
        let mut raw = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut raw);
        (sent, raw)
    });
    for _ in 0..20 {
        assert_eq!(d.req("GET", "/v1/node", None).status, 200);
    }
    let (sent, raw) = big.join().unwrap();
    assert!(
        sent < 100 || raw.starts_with(b"HTTP/1.1 413"),
        "sent {sent} MiB, got {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(200)])
    );
    if !raw.is_empty() {
        assert_eq!(parse(&raw).status, 413);
    }
    assert_eq!(d.json("GET", "/v1/zones", None).1, serde_json::json!([]));
}

#[test]
fn readme_curl_examples_run() {
    let d = fake();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let block = readme
        .split("<!-- api-examples -->")
        .nth(1)
        .expect("README has an api-examples block");
    let mut ran = 0;
    for line in block
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
    {
        let line = line.replace("/run/dualstack/api.sock", &d.socket.display().to_string());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{line} -sS --fail-with-body"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{line}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 4, "{ran} examples");
}
