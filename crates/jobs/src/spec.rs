//! [`JobSpec`]: what a caller asks for, field for field the options of `dualstack run`.

use std::path::PathBuf;

use dualstack_hpcvmm::{GuestPageSize, HugePageSize};
use dualstack_topology::CpuList;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One job: a program to run in the HPC VMM, where, and with what.
///
/// Every field but `program` has a default, so the smallest JSON job is
/// `{"program": "hpccg"}`. Field names are the long options of `dualstack run` with `_` for
/// `-` (`--cpuset-cpus` is `cpuset_cpus`, `--no-vdso` is `vdso: false`); unknown fields are
/// refused. Sizes are bytes or strings such as `"256M"` (see [`dualstack_topology::parse_size`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The program (static or dynamic): a host path, or the name of a bundled mini-app looked up in
    /// [`crate::Host::apps_dir`] when no such file exists. Also the guest's `argv[0]`.
    pub program: String,
    /// The program's arguments (after `argv[0]`).
    #[serde(default)]
    pub args: Vec<String>,
    /// The guest's whole environment as `KEY=VALUE` strings, in order; when a key appears more
    /// than once the last one wins. Nothing is inherited from the caller.
    #[serde(default)]
    pub env: Vec<String>,
    /// Host directory the guest sees as `/` (relative: to the caller's working directory).
    /// Default `/`: the guest sees the host's files exactly as its user would.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// The guest's working directory at start, a path inside `root`.
    #[serde(default = "default_cwd")]
    pub cwd: String,
    /// Where to run: no zone (default), a named zone, or `auto` (reserved).
    #[serde(default, skip_serializing_if = "ZoneSel::is_none")]
    pub zone: ZoneSel,
    /// Number of host cores: the first N of the caller's CPUs, or of the zone's. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<usize>,
    /// Exactly these host CPUs (a subset of the caller's, or of the zone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<CpuList>,
    /// Guest memory in bytes. Default: 512 MiB, or all of the zone's memory in a zone.
    #[serde(
        default,
        deserialize_with = "size_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory: Option<u64>,
    /// Huge page size of the hugetlb backing. Default: 2M, or the zone's page size in a zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<HugePageSize>,
    /// How guest memory is backed (a zone's memory is always its huge pages).
    #[serde(default)]
    pub memory_backing: MemoryBacking,
    /// Page size of the guest's own page tables. Default: follows the backing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_pages: Option<GuestPageSize>,
    /// NUMA node of the huge pages (in a zone: must be the zone's node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// Pin each vCPU to its own core (the HPC VMM's way); `false` lets the host scheduler
    /// float them over the job's CPUs (a commodity VMM's way).
    #[serde(default = "yes")]
    pub pin: bool,
    /// End the guest after this many seconds (exit status 124).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    /// Serve clock reads from a vDSO in the guest (no VM exit).
    #[serde(default = "yes")]
    pub vdso: bool,
    /// Guest stdin from this host file instead of the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<PathBuf>,
    /// Guest stdout to this host file instead of the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<PathBuf>,
    /// Guest stderr to this host file instead of the caller's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<PathBuf>,
    /// Write the run's statistics ([`dualstack_hpcvmm::RunStats`]) as JSON to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<PathBuf>,
    /// Run as `USER[:GROUP]` (names or numeric ids): the jailed VMM, and so the guest, gets
    /// exactly that user's rights. Default: the invoking user (`SUDO_UID`/`SUDO_GID` under
    /// sudo). Only root may name another identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Host descriptors of the calling process the guest inherits at the same numbers (what an
    /// MPI launcher passed to `dualstack run`). Never read from JSON: a daemon's descriptors
    /// are not a client's to hand out.
    #[serde(skip)]
    pub inherit_fds: Vec<i32>,
    /// This job is one rank of an MPI job started by a launcher: it takes its share of the
    /// cores (and of a zone's huge pages) and the guest sees the VMM's host pid. Never read
    /// from JSON (the CLI reads the launcher's environment).
    #[serde(skip)]
    pub local_rank: Option<crate::launcher::LocalRank>,
    /// An open `/dev/kvm` of the calling process that a privileged helper handed it (the
    /// Slurm SPANK plugin, for a job step that runs as its user): the VMM uses it instead of
    /// opening /dev/kvm. Never the guest's; never read from JSON.
    #[serde(skip)]
    pub kvm_fd: Option<i32>,
    /// Serve the guest from a jailed VMM (the default): a privileged supervisor does the
    /// set-up, the process that serves the guest becomes the job's user with no capability,
    /// `no_new_privs`, Landlock and a seccomp allow-list. `false` (`--no-jail`) is a
    /// developer switch, for root only.
    #[serde(default = "yes")]
    pub jail: bool,
    /// What the guest may do on the network: `host` (what its user may), `loopback` or
    /// `none` (see [`dualstack_hpcvmm::NetPolicy`]).
    #[serde(default)]
    pub net: dualstack_hpcvmm::NetPolicy,
    /// Publish live counters (exits, system calls, page faults) of the running guest to this
    /// file ([`dualstack_hpcvmm::live`]); the daemon's job supervisor sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_stats: Option<PathBuf>,
}

fn default_root() -> PathBuf {
    PathBuf::from("/")
}
fn default_cwd() -> String {
    "/".into()
}
fn yes() -> bool {
    true
}

impl JobSpec {
    /// `program` with `args` and every default: no zone, all the caller's CPUs, 512 MiB of
    /// 2 MiB huge pages, pinned vCPUs, the vDSO, the host's `/` as the guest's root, an
    /// empty environment, the jail as the invoking user.
    pub fn new(program: impl Into<String>, args: Vec<String>) -> Self {
        JobSpec {
            program: program.into(),
            args,
            env: Vec::new(),
            root: default_root(),
            cwd: default_cwd(),
            zone: ZoneSel::None,
            cpus: None,
            cpuset_cpus: None,
            memory: None,
            hugepages: None,
            memory_backing: MemoryBacking::Hugetlb,
            guest_pages: None,
            numa_node: None,
            pin: true,
            timeout_s: None,
            vdso: true,
            stdin: None,
            stdout: None,
            stderr: None,
            stats: None,
            user: None,
            inherit_fds: Vec::new(),
            local_rank: None,
            kvm_fd: None,
            jail: true,
            net: Default::default(),
            live_stats: None,
        }
    }
}

/// Where a job runs.
///
/// In JSON: absent or `null` is [`ZoneSel::None`], `"auto"` is [`ZoneSel::Auto`], any other
/// string names a zone (zones cannot be called `auto`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ZoneSel {
    /// On the caller's CPUs, memory from the host's pools.
    #[default]
    None,
    /// Inside this existing, active zone: its cores, its huge pages, its cgroup.
    Named(String),
    /// A zone made for the job and released after it. Reserved: refused today.
    Auto,
    /// A zone handed to the caller by its owner (the Slurm Prolog, for a job step that runs
    /// as the job's user): its description comes from the hand-off, not from the zone
    /// database (which only root may open), its cgroup was delegated to the caller, and the
    /// caller joins it for the run and stays there (it may not write to its previous cgroup).
    /// Serialized as its name; never read from JSON.
    Delegated(Box<dualstack_zones::Zone>),
}

impl ZoneSel {
    /// `None`, `Some("auto")` and `Some(name)`, as the CLI's `--zone` gives them.
    pub fn from_option(name: Option<&str>) -> Self {
        match name {
            None => ZoneSel::None,
            Some("auto") => ZoneSel::Auto,
            Some(n) => ZoneSel::Named(n.to_string()),
        }
    }
    pub fn is_none(&self) -> bool {
        *self == ZoneSel::None
    }
}

impl Serialize for ZoneSel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ZoneSel::None => s.serialize_none(),
            ZoneSel::Named(n) => s.serialize_str(n),
            ZoneSel::Auto => s.serialize_str("auto"),
            ZoneSel::Delegated(z) => s.serialize_str(&z.name),
        }
    }
}

impl<'de> Deserialize<'de> for ZoneSel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = Option::<String>::deserialize(d)?;
        Ok(ZoneSel::from_option(name.as_deref()))
    }
}

/// How guest memory is backed on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBacking {
    /// Preallocated, locked hugetlbfs pages (the HPC VMM's way).
    #[default]
    Hugetlb,
    /// Anonymous 4 KiB pages faulted on demand (a commodity VMM's way).
    Lazy,
}

/// A size as a number of bytes or a string such as `"256M"`.
fn size_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => dualstack_topology::parse_size(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_json_job_takes_every_default() {
        let spec: JobSpec = serde_json::from_str(r#"{"program": "hpccg"}"#).unwrap();
        assert_eq!(spec, JobSpec::new("hpccg", vec![]));
    }

    #[test]
    fn every_field_from_json() {
        let spec: JobSpec = serde_json::from_str(
            r#"{"program": "/bin/x", "args": ["-n", "3"], "env": ["A=1"], "root": "/srv",
                "cwd": "/work", "zone": "hpc0", "cpuset_cpus": "2-3", "memory": "1G",
                "hugepages": "1G", "memory_backing": "hugetlb", "guest_pages": "2M",
                "numa_node": 0, "pin": false, "timeout_s": 2.5, "vdso": false,
                "stdin": "/in", "stdout": "/out", "stderr": "/err", "stats": "/s.json"}"#,
        )
        .unwrap();
        assert_eq!(spec.zone, ZoneSel::Named("hpc0".into()));
        assert_eq!(spec.cpuset_cpus.as_ref().unwrap().to_list(), "2-3");
        assert_eq!(spec.memory, Some(1 << 30));
        assert_eq!(spec.hugepages, Some(HugePageSize::Size1G));
        assert_eq!(spec.guest_pages, Some(GuestPageSize::Size2M));
        assert!(!spec.pin && !spec.vdso);
        assert_eq!(spec.timeout_s, Some(2.5));
        // And back: what serializes deserializes to the same spec.
        let again: JobSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn zone_selection_and_sizes() {
        let zone = |j: &str| {
            serde_json::from_str::<JobSpec>(&format!(r#"{{"program": "p", "zone": {j}}}"#))
                .unwrap()
                .zone
        };
        assert_eq!(zone("null"), ZoneSel::None);
        assert_eq!(zone(r#""auto""#), ZoneSel::Auto);
        assert_eq!(zone(r#""z1""#), ZoneSel::Named("z1".into()));
        let mem = |j: &str| {
            serde_json::from_str::<JobSpec>(&format!(r#"{{"program": "p", "memory": {j}}}"#))
                .map(|s| s.memory)
        };
        assert_eq!(mem("1048576").unwrap(), Some(1 << 20));
        assert_eq!(mem(r#""64MiB""#).unwrap(), Some(64 << 20));
        let e = mem(r#""64Q""#).unwrap_err().to_string();
        assert!(e.contains("unknown unit"), "{e}");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let e = serde_json::from_str::<JobSpec>(r#"{"program": "p", "memroy": "1G"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("memroy"), "{e}");
        assert!(serde_json::from_str::<JobSpec>(r#"{"args": []}"#).is_err());
        assert!(serde_json::from_str::<JobSpec>(r#"{"program": "p", "hugepages": "4K"}"#).is_err());
        assert!(
            serde_json::from_str::<JobSpec>(r#"{"program": "p", "cpuset_cpus": "3-1"}"#).is_err()
        );
    }
}
