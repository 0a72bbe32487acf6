//! The site's dualstack-under-Slurm configuration: defaults, and one `[node.NAME]` table per
//! Slurm node name (selected by `SLURMD_NODENAME`), so several slurmd on one host each get their
//! own state dir, cpuset instance, CPUs and memory.
//!
//! ```toml
//! default_memory = "1G"          # zone memory when the job does not say
//! hugepage_size = "2M"           # default huge page size (2M or 1G)
//!
//! [node.n1]
//! cpus = "0-15"                  # the CPUs this node owns (default: the cpuset root's)
//! state_dir = "/var/lib/dualstack/n1"
//! instance = "dualstack-n1"      # cpuset instance directory name
//! memory = "48G"                 # most memory this node's zones may hold together
//! housekeeping = "outside"       # "keep_one" (default) or "outside": zones may take every core
//! steer_irqs = true              # host-wide: only when one node owns the host
//! narrow_workqueue = true
//! ```
//!
//! The file is `$DUALSTACK_SLURM_CONFIG`, else `/etc/dualstack/slurm.toml`; a missing file
//! means defaults everywhere (one node per host, the default state dir and instance).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dualstack_topology::{CpuList, Housekeeping, HUGEPAGE_1G_KIB, HUGEPAGE_2M_KIB};
use serde::Deserialize;

/// Where the configuration is read from when `DUALSTACK_SLURM_CONFIG` is not set.
pub const DEFAULT_CONFIG: &str = "/etc/dualstack/slurm.toml";
/// Zone memory when neither the job nor the configuration says.
pub const FALLBACK_MEMORY: u64 = 256 << 20;
/// State directory when the node's table does not name one (the CLI's default).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dualstack";

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the dualstack Slurm configuration {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dualstack Slurm configuration {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("dualstack Slurm configuration, {what}: {why}")]
    Value { what: String, why: String },
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Zone memory when the job does not say (e.g. "1G").
    pub default_memory: Option<String>,
    /// Default huge page size, "2M" or "1G".
    pub hugepage_size: Option<String>,
    /// Per node name.
    #[serde(default)]
    pub node: BTreeMap<String, NodeConfig>,
}

/// One Slurm node's table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub cpus: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub instance: Option<String>,
    pub memory: Option<String>,
    pub default_memory: Option<String>,
    pub housekeeping: Option<Housekeeping>,
    pub steer_irqs: Option<bool>,
    pub narrow_workqueue: Option<bool>,
}

/// What a node's prolog, epilog and job steps use, with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub node: String,
    /// CPUs the node owns; `None`: every CPU of the cpuset root.
    pub cpus: Option<CpuList>,
    pub state_dir: PathBuf,
    /// Cpuset instance; `None`: `DUALSTACK_INSTANCE` or the zones crate's default.
    pub instance: Option<String>,
    /// Most memory the node's zones may hold together; `None`: no cap beyond the host's.
    pub memory_cap: Option<u64>,
    pub default_memory: u64,
    pub hugepage_kib: u64,
    pub housekeeping: Housekeeping,
    pub steer_irqs: bool,
    pub narrow_workqueue: bool,
}

/// Parse a size: bytes, or with K/M/G/T (binary), e.g. "64M", "8G", "8GiB".
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let shift = match unit.trim_end_matches('B').trim_end_matches('I') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// "2M" / "1G" to KiB.
pub fn parse_page_size(text: &str) -> Option<u64> {
    match text.trim().to_ascii_uppercase().as_str() {
        "2M" | "2MB" | "2MIB" => Some(HUGEPAGE_2M_KIB),
        "1G" | "1GB" | "1GIB" => Some(HUGEPAGE_1G_KIB),
        _ => None,
    }
}

fn size(what: String, text: &str) -> Result<u64, ConfigError> {
    match parse_size(text) {
        Some(0) | None => Err(ConfigError::Value {
            what,
            why: format!("{text:?} is not a size (examples: 256M, 8G)"),
        }),
        Some(n) => Ok(n),
    }
}

impl SiteConfig {
    /// Parse the file's text (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The configuration file: `$DUALSTACK_SLURM_CONFIG`, else [`DEFAULT_CONFIG`]; a missing
    /// default file is an empty configuration, a missing named one an error.
    pub fn load() -> Result<Self, ConfigError> {
        match std::env::var_os("DUALSTACK_SLURM_CONFIG").filter(|v| !v.is_empty()) {
            Some(p) => Self::load_from(Path::new(&p)),
            None => match std::fs::read_to_string(DEFAULT_CONFIG) {
                Ok(text) => Self::parse(&text, Path::new(DEFAULT_CONFIG)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
                Err(source) => Err(ConfigError::Read {
                    path: DEFAULT_CONFIG.into(),
                    source,
                }),
            },
        }
    }

    pub fn load_from(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Settings of node `name` (a node without a table gets the defaults).
    pub fn node(&self, name: &str) -> Result<NodeSettings, ConfigError> {
        let empty = NodeConfig::default();
        let n = self.node.get(name).unwrap_or(&empty);
        let key = |k: &str| format!("[node.{name}] {k}");
        let cpus = match &n.cpus {
            Some(text) => Some(CpuList::parse_list(text).map_err(|e| ConfigError::Value {
                what: key("cpus"),
                why: e.to_string(),
            })?),
            None => None,
        };
        if let Some(i) = &n.instance {
            if i.is_empty()
                || !i
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::Value {
                    what: key("instance"),
                    why: format!("{i:?}: use letters, digits, '-' and '_'"),
                });
            }
        }
        let memory_cap = match &n.memory {
            Some(m) => Some(size(key("memory"), m)?),
            None => None,
        };
        let default_memory = match (&n.default_memory, &self.default_memory) {
            (Some(m), _) => size(key("default_memory"), m)?,
            (None, Some(m)) => size("default_memory".into(), m)?,
            (None, None) => FALLBACK_MEMORY,
        };
        let hugepage_kib = match &self.hugepage_size {
            Some(p) => parse_page_size(p).ok_or_else(|| ConfigError::Value {
                what: "hugepage_size".into(),
                why: format!("{p:?}: use 2M or 1G"),
            })?,
            None => HUGEPAGE_2M_KIB,
        };
        Ok(NodeSettings {
            node: name.to_string(),
            cpus,
            state_dir: n
                .state_dir
                .clone()
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            instance: n.instance.clone(),
            memory_cap,
            default_memory,
            hugepage_kib,
            housekeeping: n.housekeeping.unwrap_or_default(),
            steer_irqs: n.steer_irqs.unwrap_or(true),
            narrow_workqueue: n.narrow_workqueue.unwrap_or(true),
        })
    }
}

impl NodeSettings {
    /// The zones crate's paths for this node: the host (with the usual `DUALSTACK_*`
    /// overrides), this node's state dir and instance.
    pub fn host_paths(&self) -> Result<dualstack_zones::HostPaths, dualstack_zones::PathsError> {
        let paths = dualstack_zones::HostPaths::from_env(&self.state_dir)?;
        match &self.instance {
            Some(i) => paths.with_instance(i),
            None => Ok(paths),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
default_memory = "64M"
[node.n1]
cpus = "0"
state_dir = "/tmp/x/n1"
instance = "ds-n1"
memory = "512M"
housekeeping = "outside"
steer_irqs = false
narrow_workqueue = false
[node.n2]
cpus = "1"
default_memory = "128M"
"#;

    #[test]
    fn nodes_get_their_table_or_defaults() {
        let c = SiteConfig::parse(TEXT, Path::new("t.toml")).unwrap();
        let n1 = c.node("n1").unwrap();
        assert_eq!(n1.cpus.as_ref().unwrap().to_list(), "0");
        assert_eq!(n1.state_dir, PathBuf::from("/tmp/x/n1"));
        assert_eq!(n1.instance.as_deref(), Some("ds-n1"));
        assert_eq!(n1.memory_cap, Some(512 << 20));
        assert_eq!(n1.default_memory, 64 << 20);
        assert_eq!(n1.housekeeping, Housekeeping::Outside);
        assert!(!n1.steer_irqs && !n1.narrow_workqueue);
        let n2 = c.node("n2").unwrap();
        assert_eq!(n2.default_memory, 128 << 20);
        assert_eq!(n2.housekeeping, Housekeeping::KeepOne);
        assert_eq!(n2.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        let other = c.node("n9").unwrap();
        assert_eq!(other.cpus, None);
        assert_eq!(other.default_memory, 64 << 20);
        assert_eq!(
            SiteConfig::default().node("x").unwrap().default_memory,
            FALLBACK_MEMORY
        );
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = SiteConfig::parse("[node.n1]\ncpu = \"0\"\n", Path::new("t.toml")).unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
        let c = SiteConfig::parse("[node.n1]\nmemory = \"lots\"\n", Path::new("t")).unwrap();
        let e = c.node("n1").unwrap_err().to_string();
        assert!(e.contains("[node.n1] memory") && e.contains("lots"), "{e}");
        let c = SiteConfig::parse("[node.n1]\ninstance = \"../x\"\n", Path::new("t")).unwrap();
        assert!(c.node("n1").is_err());
        let c = SiteConfig::parse("[node.n1]\nhousekeeping = \"nowhere\"\n", Path::new("t"));
        assert!(c.is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("8GiB"), Some(8 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4Q"), None);
        assert_eq!(parse_page_size("1g"), Some(HUGEPAGE_1G_KIB));
        assert_eq!(parse_page_size("4K"), None);
    }
}
