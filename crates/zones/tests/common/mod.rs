//! A fake host: cgroup (v1 or v2), sysfs node/memory/workqueue and procfs irq trees under a
//! temporary directory, the paper's 12-core, 2-node topology, and a snapshot of every file.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dualstack_topology::{from_synthetic, CpuList, CpuRequest, Node, ZoneRequest, PAPER_NODE};
use dualstack_zones::HostPaths;

pub struct FakeHost {
    pub dir: tempfile::TempDir,
    pub paths: HostPaths,
    pub node: Node,
}

fn put(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{text}\n")).unwrap();
}

impl FakeHost {
    pub fn new(v2: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = HostPaths::fake(dir.path(), v2);
        let cg = paths.cgroup.root().to_path_buf();
        if v2 {
            put(&cg.join("cgroup.controllers"), "cpuset cpu io memory pids");
            put(&cg.join("cgroup.subtree_control"), "cpu memory");
            put(&cg.join("cpuset.cpus.effective"), "0-11");
            put(&cg.join("cpuset.mems.effective"), "0-1");
        } else {
            put(&cg.join("cpuset.cpus"), "0-11");
            put(&cg.join("cpuset.mems"), "0-1");
            put(&cg.join("cpuset.cpu_exclusive"), "1");
            put(&cg.join("cpuset.sched_load_balance"), "1");
        }
        put(&cg.join("cgroup.procs"), "1\n2");
        for n in 0..2 {
            for kib in [2048u64, 1048576] {
                let d = paths
                    .node_dir
                    .join(format!("node{n}/hugepages/hugepages-{kib}kB"));
                put(&d.join("nr_hugepages"), "3");
                put(&d.join("free_hugepages"), "3");
            }
        }
        put(&paths.memory_dir.join("block_size_bytes"), "8000000");
        for b in 100..104 {
            let blk = paths.memory_dir.join(format!("memory{b}"));
            put(&blk.join("state"), "online");
            put(&blk.join("removable"), "1");
            std::os::unix::fs::symlink(&blk, paths.node_dir.join(format!("node1/memory{b}")))
                .unwrap();
        }
        for (irq, aff) in [
            ("0", "0-11"),
            ("24", "6-11"),
            ("25", "11"),
            ("26", "0-3"),
            ("27", "10"),
        ] {
            put(&paths.irq_dir.join(irq).join("smp_affinity_list"), aff);
        }
        put(&paths.workqueue_cpumask, "00000fff");
        put(
            &paths.procfs.join("sys/kernel/random/boot_id"),
            "fake-boot-1",
        );
        Self {
            dir,
            paths,
            node: from_synthetic(PAPER_NODE).unwrap(),
        }
    }

    /// Every file and directory of the fake host except the state directory and lock.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        walk(self.dir.path(), self.dir.path(), &mut out);
        out
    }

    pub fn read(&self, path: impl AsRef<Path>) -> String {
        std::fs::read_to_string(path.as_ref())
            .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
            .trim()
            .to_string()
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        if rel.starts_with("state") || rel.starts_with("hugepages.lock") {
            continue;
        }
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            out.insert(
                rel,
                format!("-> {}", std::fs::read_link(&p).unwrap().display()),
            );
        } else if ft.is_dir() {
            out.insert(rel, "<dir>".into());
            walk(root, &p, out);
        } else {
            out.insert(rel, std::fs::read_to_string(&p).unwrap());
        }
    }
}

pub fn req(cpus: u32, mib: u64) -> ZoneRequest {
    ZoneRequest {
        cpus: CpuRequest::Cores(cpus),
        memory_bytes: mib << 20,
        numa_node: None,
        hugepage_kib: 2048,
    }
}

pub fn req_list(list: &str, mib: u64) -> ZoneRequest {
    ZoneRequest {
        cpus: CpuRequest::List(CpuList::parse_list(list).unwrap()),
        memory_bytes: mib << 20,
        numa_node: None,
        hugepage_kib: 2048,
    }
}

/// Show which files differ between two snapshots (for assertion messages).
pub fn diff(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> String {
    let mut out = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push_str(&format!("- {} = {v:?}\n", k.display())),
            Some(w) if w != v => out.push_str(&format!("~ {}: {v:?} -> {w:?}\n", k.display())),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push_str(&format!("+ {} = {v:?}\n", k.display()));
        }
    }
    out
}
