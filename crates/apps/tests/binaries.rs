//! Runs every app binary with `--size small` and checks its RESULT line and exit status.
//!
//! Two builds are exercised: the ones cargo builds for this test (`CARGO_BIN_EXE_*`), and, when
//! present, the static ones `scripts/build-apps` puts in
//! `target/x86_64-unknown-linux-gnu/release/` (which `scripts/test` builds first): those must
//! also be statically linked (no ELF interpreter), the form the HPC VMM loads.

use dualstack_apps::{parse_result_line, AppResult};
use std::path::{Path, PathBuf};
use std::process::Command;

const APPS: [(&str, &str); 7] = [
    ("hpccg", env!("CARGO_BIN_EXE_hpccg")),
    ("minife", env!("CARGO_BIN_EXE_minife")),
    ("minimd", env!("CARGO_BIN_EXE_minimd")),
    ("amg", env!("CARGO_BIN_EXE_amg")),
    ("phdmesh", env!("CARGO_BIN_EXE_phdmesh")),
    ("stream", env!("CARGO_BIN_EXE_stream")),
    ("fwq", env!("CARGO_BIN_EXE_fwq")),
];

/// Runs `exe args`, returns (exit code, stdout).
fn run(exe: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn check_small_run(app: &str, exe: &Path) -> AppResult {
    let (code, stdout) = run(exe, &["--size", "small", "--threads", "2"]);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("RESULT {"),
        "{app}: last line is not a RESULT line:\n{stdout}"
    );
    let r = parse_result_line(last).unwrap_or_else(|| panic!("{app}: unparsable {last}"));
    assert_eq!(r.app, app);
    assert_eq!(r.threads, 2);
    assert!(r.verified, "{app} failed its own verification:\n{stdout}");
    assert_eq!(code, 0, "{app}: verified run exits 0");
    assert!(
        r.time_s > 0.0 && r.time_s < 5.0,
        "{app}: time_s {} for the small size",
        r.time_s
    );
    assert_eq!(r.get("size").and_then(|s| s.as_str()), Some("small"));
    r
}

#[test]
fn every_app_verifies_at_small_size() {
    for (app, exe) in APPS {
        check_small_run(app, Path::new(exe));
    }
}

#[test]
fn json_flag_prints_one_bare_object() {
    for (app, exe) in APPS {
        let (code, stdout) = run(
            Path::new(exe),
            &["--size", "small", "--threads", "1", "--json"],
        );
        assert_eq!(code, 0, "{app}");
        assert_eq!(stdout.lines().count(), 1, "{app}: {stdout}");
        assert!(stdout.starts_with('{'), "{app}: {stdout}");
        let r = parse_result_line(&stdout).expect("parses");
        assert_eq!((r.app.as_str(), r.threads, r.verified), (app, 1, true));
    }
}

#[test]
fn failed_verification_exits_1_and_bad_options_exit_2() {
    // Three CG iterations cannot converge.
    let (code, stdout) = run(
        Path::new(APPS[0].1),
        &["--size", "small", "--iterations", "3"],
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(
        !parse_result_line(stdout.lines().last().unwrap())
            .unwrap()
            .verified
    );
    for (app, exe) in APPS {
        assert_eq!(
            run(Path::new(exe), &["--no-such-option", "1"]).0,
            2,
            "{app}"
        );
        let (code, help) = run(Path::new(exe), &["--help"]);
        assert_eq!(code, 0);
        assert!(
            help.contains("--threads") && help.contains("--size"),
            "{app}: {help}"
        );
    }
}

fn static_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("x86_64-unknown-linux-gnu/release")
}

/// True when the ELF file has no PT_INTERP program header (needs no dynamic loader).
fn is_static_elf(bytes: &[u8]) -> bool {
    assert!(
        bytes.len() > 64 && &bytes[..4] == b"\x7fELF" && bytes[4] == 2,
        "not a 64-bit ELF"
    );
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) != 3
    })
}

#[test]
fn static_builds_are_static_and_verify() {
    let dir = static_dir();
    let present: Vec<_> = APPS
        .iter()
        .filter(|(app, _)| dir.join(app).exists())
        .collect();
    if present.is_empty() {
        return dualstack_testutil::missing(&format!(
            "no static builds in {} (run scripts/build-apps)",
            dir.display()
        ));
    }
    for (app, _) in present {
        let exe = dir.join(app);
        let bytes = std::fs::read(&exe).unwrap();
        assert!(
            is_static_elf(&bytes),
            "{} needs a dynamic loader",
            exe.display()
        );
        check_small_run(app, &exe);
    }
}

#[test]
fn dynamic_test_builds_are_recognised_as_dynamic() {
    // Guards the ELF check above: the cargo-built test binaries are dynamically linked unless
    // RUSTFLAGS asked for crt-static.
    let bytes = std::fs::read(APPS[0].1).unwrap();
    let rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !rustflags.contains("crt-static") {
        assert!(!is_static_elf(&bytes));
    }
}
