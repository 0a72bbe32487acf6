//! Memory shared between HPC VMs (issue 12): two VMs map the same /dev/shm file with
//! MAP_SHARED and ping-pong through it by spinning (no exit per message), then hand over with
//! a futex across the mapping. Output must equal two native processes'. The MPI programs under
//! the stock launcher are tested in crates/cli/tests/mpi.rs (they need the `dualstack` binary).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn two_vms_share_a_dev_shm_file_and_a_futex() {
    let dir = tempfile::Builder::new()
        .prefix("hpcvmm-shm")
        .tempdir_in("/dev/shm")
        .expect("a directory in /dev/shm (tmpfs)");
    let bin = guest("shm_pingpong");
    let iters = "20000";
    let spec = |role: &str| {
        Spec::default()
            .dir(dir.path())
            .args(&[role, "pp", iters])
            .timeout(Duration::from_secs(60))
    };
    // Natively: two processes.
    let (s0, s1) = (spec("0"), spec("1"));
    let (b0, b1) = (bin.clone(), bin.clone());
    let n1 = std::thread::spawn(move || native(&b1, &s1));
    let n0 = native(&b0, &s0);
    let n1 = n1.join().unwrap();
    // In two VMs, one per host core.
    let mut s0 = spec("0");
    let mut s1 = spec("1");
    s0.cpus = Some(vec![0]);
    s1.cpus = Some(vec![1 % num_cpus()]);
    let (b0, b1) = (bin.clone(), bin.clone());
    let v1 = std::thread::spawn(move || in_vm(&b1, &s1));
    let (v0, st0) = in_vm(&b0, &s0);
    let (v1, st1) = v1.join().unwrap();
    assert_eq!(
        (n0.status, n1.status),
        (0, 0),
        "{} {}",
        n0.stderr,
        n1.stderr
    );
    assert_same("VM 0", &n0, &v0, &st0);
    assert_same("VM 1", &n1, &v1, &st1);
    assert_exited(&st0, 0);
    assert_exited(&st1, 0);
    // 20000 round trips through shared memory with far fewer exits than messages: the
    // stores and loads never leave the guest.
    for st in [&st0, &st1] {
        assert!(
            st.exits_total < 2000,
            "{} exits for 20000 round trips: {:?}",
            st.exits_total,
            st.exits
        );
    }
    assert!(!dir.path().join("pp").exists(), "role 0 unlinked the file");
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
