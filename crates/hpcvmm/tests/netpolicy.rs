//! The network policy (`dualstack run --net`, issue 12): a guest tries each kind of network
//! call once. Under `host` it prints what it prints natively; under `loopback` only
//! loopback addresses are reachable; under `none` no Internet socket can be made; under both,
//! netlink changes are refused while dumps pass, and AF_UNIX stays. Every refusal answers
//! EACCES and is counted in the run's statistics under the policy and the call.

mod common;

use common::*;
use dualstack_hpcvmm::{NetPolicy, RunStats};

fn run_with(policy: NetPolicy) -> (Outcome, RunStats) {
    let bin = guest("netpolicy");
    let io = tempfile::tempdir().unwrap();
    let mut cfg = config(&bin, &Spec::default(), io.path());
    cfg.net = policy;
    let stats = run_jailed(&cfg).unwrap_or_else(|e| panic!("the VMM refused netpolicy: {e}"));
    let read = |n: &str| std::fs::read_to_string(io.path().join(n)).unwrap_or_default();
    let out = Outcome {
        stdout: read("stdout"),
        stderr: read("stderr"),
        status: stats.exit_status,
    };
    assert_exited(&stats, 0);
    (out, stats)
}

fn line<'a>(out: &'a Outcome, name: &str) -> &'a str {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name:?} line in:\n{}", out.stdout))
}

fn net_refusals(stats: &RunStats) -> Vec<(String, u64)> {
    stats
        .refusals
        .iter()
        .filter(|(k, _)| k.starts_with("--net "))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[test]
fn host_policy_is_what_the_user_may_do_natively() {
    if !require("/dev/kvm", dualstack_testutil::have_kvm()) {
        return;
    }
    let (out, stats) = same_as_native("netpolicy", &Spec::default());
    assert_eq!(line(&out, "bind any"), "ok");
    assert!(net_refusals(&stats).is_empty(), "{:?}", stats.refusals);
}

#[test]
fn loopback_policy_reaches_loopback_addresses_only() {
    if !require("/dev/kvm", dualstack_testutil::have_kvm()) {
        return;
    }
    let native = native(&guest("netpolicy"), &Spec::default());
    let (out, stats) = run_with(NetPolicy::Loopback);
    for ok in [
        "socket inet",
        "bind loopback",
        "sendto loopback",
        "recv loopback",
        "socket inet6",
        "socketpair unix",
        "socket netlink",
        "netlink dump",
    ] {
        assert_eq!(line(&out, ok), "ok", "{ok}\n{}", out.stdout);
    }
    for refused in ["bind any", "sendmsg far", "connect far", "netlink change"] {
        assert_eq!(line(&out, refused), "EACCES", "{refused}\n{}", out.stdout);
    }
    // ::1 is loopback: what the host answers, as natively (no policy refusal).
    assert_eq!(
        line(&out, "connect loopback6"),
        native
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("connect loopback6: "))
            .unwrap()
    );
    assert_eq!(
        net_refusals(&stats),
        [
            ("--net loopback: bind".to_string(), 1),
            ("--net loopback: connect".to_string(), 1),
            ("--net loopback: netlink change".to_string(), 1),
            ("--net loopback: sendmsg".to_string(), 1),
        ]
    );
    assert!(
        stats.summary().contains("--net loopback: connect 1"),
        "{}",
        stats.summary()
    );
}

#[test]
fn none_policy_refuses_internet_sockets_and_keeps_unix_ones() {
    if !require("/dev/kvm", dualstack_testutil::have_kvm()) {
        return;
    }
    let (out, stats) = run_with(NetPolicy::None);
    assert_eq!(line(&out, "socket inet"), "EACCES");
    assert_eq!(line(&out, "socket inet6"), "EACCES");
    assert!(
        !out.stdout.contains("bind loopback"),
        "no Internet socket to bind: {}",
        out.stdout
    );
    assert_eq!(line(&out, "socketpair unix"), "ok");
    assert_eq!(line(&out, "socket netlink"), "ok");
    assert_eq!(line(&out, "netlink dump"), "ok");
    assert_eq!(line(&out, "netlink change"), "EACCES");
    // One socket() each: inet, the loopback try, bind any, sendmsg far, the TCP connect, inet6.
    assert_eq!(
        net_refusals(&stats),
        [
            ("--net none: netlink change".to_string(), 1),
            ("--net none: socket".to_string(), 6),
        ]
    );
}
