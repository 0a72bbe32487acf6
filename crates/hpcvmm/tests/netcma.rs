//! What UCX and Open MPI need of the guest's view of the network and of other ranks' memory
//! (issue 12), against the native run of the same program (tests/guests/netcma.c): the
//! network namespace's /proc/net files, the SIOCGIFCONF interface list and process_vm_readv/
//! writev on the guest itself, each with hostile pointers and lengths (EFAULT/EINVAL/ESRCH as
//! Linux). Between two VMs these calls are served by the VMMs' broker (kernel::fdshare's unit
//! tests; end to end in crates/cli/tests/mpi_stacks.rs).

mod common;

use common::*;

#[test]
fn net_files_interface_list_and_cma_match_native() {
    let (v, stats) = same_as_native("netcma", &Spec::default());
    assert!(v.stdout.contains("route header: Iface"), "{}", v.stdout);
    assert!(
        v.stdout.contains("read: cross-memory attach"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains("ifconf into a bad buffer: -1 EFAULT"),
        "{}",
        v.stdout
    );
    assert!(v.stdout.contains("flags 1: -1 EINVAL"), "{}", v.stdout);
    assert_exited(&stats, 0);
}
