//! Large allocations (malloc of hundreds of MiB, mmap/munmap/mremap, zeroed memory after reuse)
//! natively and in the VM, on lazy and on hugetlb backing; out-of-memory answers ENOMEM.

mod common;

use common::*;
use dualstack_hpcvmm::{Backing, HugePageSize};

#[test]
fn large_allocations_match_native_lazy() {
    // 160 MiB malloc'd and touched page by page (4 KiB guest pages: ~40k shadow faults).
    let spec = Spec::default().memory(448 << 20).args(&["160"]);
    let (v, stats) = same_as_native("alloc", &spec);
    assert!(v.stdout.contains("big checksum match=1"), "{}", v.stdout);
    assert!(
        v.stdout
            .contains("mremap ok=1 kept=1 new part zero=1 moved=1"),
        "{}",
        v.stdout
    );
    assert!(
        !v.stdout.contains("zero=0"),
        "reused memory must read back zero:\n{}",
        v.stdout
    );
    assert!(
        stats.memory.peak_mapped_bytes >= 160 << 20,
        "{}",
        stats.memory.peak_mapped_bytes
    );
}

#[test]
fn allocation_beyond_guest_memory_is_enomem_not_a_crash() {
    // 300 MiB does not fit a 128 MiB guest: malloc returns NULL (mmap ENOMEM); Linux with
    // more memory succeeds, so this is VM-only.
    let bin = guest("alloc");
    let (v, stats) = in_vm(&bin, &Spec::default().memory(128 << 20).args(&["300"]));
    assert_eq!(v.stdout, "malloc big ok=0\n");
    assert_exited(&stats, 1);
}

#[test]
fn large_allocations_match_native_on_hugetlb() {
    // 256 MiB guest = 128 huge pages, given back when the test ends, even on failure.
    let pages = HugePages::reserve(130);
    if !require("130 free 2 MiB huge pages", pages.is_some()) {
        return;
    }
    let mut spec = Spec::default().memory(256 << 20).args(&["160"]);
    spec.backing = Backing::Hugetlb {
        page_size: HugePageSize::Size2M,
        numa_node: None,
    };
    let (v, stats) = same_as_native("alloc", &spec);
    assert!(v.stdout.contains("big checksum match=1"));
    // Memory was prefaulted at launch with 2 MiB pages: touching 160 MiB takes (almost) no
    // shadow page faults during the run.
    let pf = stats.kvm_vcpu_delta.get("pf_taken").copied().unwrap_or(0);
    assert!(
        pf < 1000,
        "pf_taken during the run with hugetlb backing: {pf}"
    );
}
