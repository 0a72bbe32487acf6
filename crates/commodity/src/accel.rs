//! Choosing between KVM and TCG for commodity VMs.
//!
//! `--accel auto` uses KVM when `/dev/kvm` can be opened read-write and the loaded KVM vendor
//! module is one that boots stock Linux guests (`kvm_intel` or `kvm_amd`). If the only vendor
//! module is `kvm_pvm` (pagetable-based nested virtualisation, as on the development machines),
//! KVM emulates guest kernel code instruction by instruction and a stock Linux kernel does not
//! boot, so TCG is chosen. No probe boot is done: it would cost seconds per `vm create` and,
//! under kvm_pvm, hang rather than fail. An explicit `--accel kvm` is always honoured; if the
//! guest then does not come up, `vm create` reports it with QEMU's log.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::{Accel, AccelChoice};

/// The accelerator picked and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccelDecision {
    /// Accelerator to use.
    pub accel: Accel,
    /// One line saying why.
    pub reason: String,
}

/// Resolves the user's choice. `sys_root` is normally `/sys`, `dev_kvm` `/dev/kvm`.
pub fn decide(choice: AccelChoice, sys_root: &Path, dev_kvm: &Path) -> AccelDecision {
    match choice {
        AccelChoice::Kvm => AccelDecision {
            accel: Accel::Kvm,
            reason: "requested (--accel kvm)".into(),
        },
        AccelChoice::Tcg => AccelDecision {
            accel: Accel::Tcg,
            reason: "requested (--accel tcg)".into(),
        },
        AccelChoice::Auto => detect(sys_root, dev_kvm),
    }
}

/// The `auto` rule described in the module documentation.
pub fn detect(sys_root: &Path, dev_kvm: &Path) -> AccelDecision {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
    {
        return AccelDecision {
            accel: Accel::Tcg,
            reason: format!("auto: {} is not usable ({e})", dev_kvm.display()),
        };
    }
    let module = |m: &str| sys_root.join("module").join(m).exists();
    if module("kvm_intel") || module("kvm_amd") {
        let which = if module("kvm_intel") {
            "kvm_intel"
        } else {
            "kvm_amd"
        };
        return AccelDecision {
            accel: Accel::Kvm,
            reason: format!("auto: {which} is loaded"),
        };
    }
    if module("kvm_pvm") {
        return AccelDecision {
            accel: Accel::Tcg,
            reason: "auto: host KVM is kvm_pvm (nested, shadow paging), which cannot boot a stock Linux guest".into(),
        };
    }
    AccelDecision {
        accel: Accel::Kvm,
        reason: "auto: /dev/kvm is usable".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sys(modules: &[&str]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for m in modules {
            std::fs::create_dir_all(tmp.path().join("module").join(m)).unwrap();
        }
        std::fs::write(tmp.path().join("kvm"), b"").unwrap();
        tmp
    }

    #[test]
    fn auto_rules() {
        let sys = fake_sys(&["kvm", "kvm_pvm"]);
        let kvm = sys.path().join("kvm");
        assert_eq!(detect(sys.path(), &kvm).accel, Accel::Tcg);
        let sys = fake_sys(&["kvm", "kvm_intel"]);
        assert_eq!(
            detect(sys.path(), &sys.path().join("kvm")).accel,
            Accel::Kvm
        );
        let sys = fake_sys(&["kvm", "kvm_amd", "kvm_pvm"]);
        assert_eq!(
            detect(sys.path(), &sys.path().join("kvm")).accel,
            Accel::Kvm
        );
        let d = detect(sys.path(), Path::new("/nonexistent/kvm"));
        assert_eq!(d.accel, Accel::Tcg);
        assert!(d.reason.contains("/nonexistent/kvm"));
    }

    #[test]
    fn explicit_choice_wins() {
        let sys = fake_sys(&["kvm_pvm"]);
        assert_eq!(
            decide(AccelChoice::Kvm, sys.path(), Path::new("/x")).accel,
            Accel::Kvm
        );
        assert_eq!(
            decide(AccelChoice::Tcg, sys.path(), &sys.path().join("kvm")).accel,
            Accel::Tcg
        );
    }
}
