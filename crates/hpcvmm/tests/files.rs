//! File I/O round trips in a temporary guest root, and path confinement: nothing outside the
//! root is reachable through `..`, absolute paths, symlinks or /proc tricks.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;

#[test]
fn file_io_round_trips_match_native() {
    let native_dir = tempdir();
    let vm_dir = tempdir();
    let bin = guest("fileio");
    let n = native(&bin, &Spec::default().dir(native_dir.path()));
    let (v, stats) = in_vm(&bin, &Spec::default().dir(vm_dir.path()));
    assert_eq!(
        n.stdout, v.stdout,
        "VM stderr: {}; exit {:?}",
        v.stderr, stats.exit
    );
    assert_eq!(n.status, v.status);
    assert_exited(&stats, 0);
    for want in [
        "content: hello world",
        "pread got: world",
        "b now: HELLO++!!",
        "ls work: b.txt c.dat d.dat e.dat sub",
        "big: 1048576 bytes, checksum match=1",
        "pipe: through a pipe",
        "rmdir non-empty              -1 errno=ENOTEMPTY",
        "access work                  -1 errno=ENOENT",
    ] {
        assert!(
            v.stdout.contains(want),
            "missing {want:?} in:\n{}",
            v.stdout
        );
    }
    // The guest cleaned up after itself, in the root it was given.
    assert_eq!(std::fs::read_dir(vm_dir.path()).unwrap().count(), 0);
}

#[test]
fn guest_files_land_in_the_root_and_host_files_are_visible() {
    let dir = tempdir();
    let (v, stats) = same_as_native("cxx_exc", &Spec::default().dir(dir.path()));
    assert_eq!(v.status, 3, "{:?}", stats.exit);
    // cxx_exc removed its file; Rust std creates and removes a tree.
    let (_, stats) = same_as_native("rust_std", &Spec::default().dir(dir.path()));
    assert_exited(&stats, 0);
    assert!(!dir.path().join("rs_dir").exists());
}

struct Tree {
    _top: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    secret: std::path::PathBuf,
}

fn escape_tree() -> Tree {
    let top = tempdir();
    let root = top.path().join("root");
    let outside = top.path().join("outside");
    std::fs::create_dir_all(root.join("deep/rel_up")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.txt");
    std::fs::write(&secret, "SECRET\n").unwrap();
    std::fs::write(root.join("inside.txt"), "INSIDE\n").unwrap();
    std::fs::write(root.join("victim.txt"), "victim\n").unwrap();
    symlink(&secret, root.join("abs_link")).unwrap();
    symlink("../outside/secret.txt", root.join("rel_link")).unwrap();
    symlink(&outside, root.join("dir_link")).unwrap();
    symlink("../../../outside", root.join("deep/rel_up/up")).unwrap();
    // deep/rel_up/secret.txt -> climbs three levels: outside the root on the host.
    symlink(
        "../../../outside/secret.txt",
        root.join("deep/rel_up/secret.txt"),
    )
    .unwrap();
    symlink("loop_link", root.join("loop_link")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    symlink("/etc/passwd", root.join("etc/passwd_link")).unwrap();
    Tree {
        _top: top,
        root,
        outside,
        secret,
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn paths_are_confined_to_the_guest_root() {
    let t = escape_tree();
    let bin = guest("confine");
    let secret = t.secret.to_str().unwrap();
    let outside = t.outside.to_str().unwrap();
    let spec = Spec::default().dir(&t.root).args(&[secret, outside]);
    let (v, stats) = in_vm(&bin, &spec);
    assert_exited(&stats, 0);
    let out = &v.stdout;
    assert!(
        !out.contains("SECRET"),
        "the guest read a file outside its root:\n{out}"
    );
    assert!(
        !out.contains("OPENED") && !out.contains("CREATED via"),
        "{out}"
    );
    for want in [
        "open inside.txt: read \"INSIDE\"",
        "open /inside.txt: read \"INSIDE\"",
        "open ../outside/secret.txt: ENOENT",
        "open abs_link: ENOENT",
        "open rel_link: ENOENT",
        "open dir_link/secret.txt: ENOENT",
        "open deep/rel_up/secret.txt: ENOENT",
        "open loop_link: ELOOP",
        "chdir ..: 0",
        "getcwd: /\n",
        "create via dir_link: ENOENT",
        "truncate via abs_link: ENOENT",
        "create /new_at_root.txt: CREATED",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // /proc is not the host's: the magic links must not resolve.
    for l in out.lines().filter(|l| l.contains("/proc/")) {
        assert!(!l.contains("read \""), "{l}");
    }
    // Nothing outside changed: the secret is intact, no file was created, moved or removed.
    assert_eq!(std::fs::read_to_string(&t.secret).unwrap(), "SECRET\n");
    assert_eq!(listing(&t.outside), vec!["secret.txt".to_string()]);
    assert!(
        t.root.join("victim.txt").exists(),
        "rename out of the root must fail"
    );
    assert!(t.root.join("new_at_root.txt").exists(), "/ is the root");
    let parent = t.root.parent().unwrap();
    assert_eq!(
        listing(parent),
        vec!["outside".to_string(), "root".to_string()]
    );
}

#[test]
fn program_is_found_relative_to_the_root() {
    // A program inside the root sees its own path as AT_EXECFN / argv[0] relative to /.
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    let prog = dir.path().join("bin/args");
    std::fs::copy(guest("args"), &prog).unwrap();
    let (v, stats) = in_vm(&prog, &Spec::default().dir(dir.path()));
    assert_exited(&stats, 0);
    assert!(v.stdout.contains("AT_EXECFN basename=args"), "{}", v.stdout);
}

#[test]
fn file_system_edge_cases_match_native() {
    let native_dir = tempdir();
    let vm_dir = tempdir();
    let bin = guest("fsedge");
    let n = native(&bin, &Spec::default().dir(native_dir.path()));
    let (v, stats) = in_vm(&bin, &Spec::default().dir(vm_dir.path()));
    assert_exited(&stats, 0);
    let diffs: Vec<String> = n
        .stdout
        .lines()
        .zip(v.stdout.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("native: {a}\n    VM: {b}"))
        .collect();
    assert!(diffs.is_empty(), "differences:\n{}", diffs.join("\n"));
    assert_eq!(n.stdout, v.stdout);
}
