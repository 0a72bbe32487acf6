//! --timeout ends guests that never stop (a spinning loop, a deadlock) cleanly: the run
//! reports TimedOut with status 124 and every vCPU thread is joined. One test function, so
//! no other VM runs in this process while vCPU threads are counted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dualstack_hpcvmm::ExitReport;

fn vcpu_threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("vcpu"))
        .count()
}

fn times_out(name: &str, args: &[&str], limit: Duration) {
    let bin = guest(name);
    let t = Instant::now();
    let (v, stats) = in_vm(&bin, &Spec::default().args(args).timeout(limit));
    let took = t.elapsed();
    assert!(
        matches!(stats.exit, ExitReport::TimedOut { .. }),
        "{name}: {:?}",
        stats.exit
    );
    assert_eq!(stats.exit_status, 124);
    assert!(took >= limit, "{name} ended after {took:?}");
    assert!(
        took < limit + Duration::from_secs(5),
        "{name}: teardown took {took:?}"
    );
    assert_eq!(vcpu_threads(), 0, "{name}: vCPU threads left behind");
    assert!(!v.stdout.is_empty(), "{name} ran before the timeout");
}

#[test]
fn timeouts_end_spinning_and_deadlocked_guests_and_join_every_thread() {
    assert_eq!(vcpu_threads(), 0);
    times_out("spin", &[], Duration::from_millis(500));
    // Three spinning threads on two cores (oversubscribed).
    times_out("spin", &["3"], Duration::from_millis(700));
    // Two threads blocked in futex waits forever, main blocked in pthread_join.
    times_out("deadlock", &[], Duration::from_millis(500));
}
