//! What a job asked for, and what Slurm gave it: the `dualstack[:k=v,...]` request (from the
//! job's comment or the SPANK option's environment), and the job's allocation on each node
//! from `scontrol show job -d -o`.

use std::collections::BTreeMap;

use crate::config::{parse_page_size, parse_size};

/// Errors of a request or of Slurm's job description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "bad dualstack request {text:?}: {why} (form: dualstack[:memory=8G,hugepages=2M,cpus=N])"
    )]
    Bad { text: String, why: String },
    #[error("bad Slurm host list {0:?}")]
    HostList(String),
}

/// A job's zone request. Absent fields take the node's configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneAsk {
    pub memory: Option<u64>,
    pub hugepage_kib: Option<u64>,
    /// Whole cores (of the job's CPUs on the node); default: all of them.
    pub cores: Option<u32>,
}

/// Find `dualstack` or `dualstack:k=v,...` among the whitespace/`;`-separated words of `text`
/// (a job comment may hold other words too). `Ok(None)`: the job did not ask.
pub fn parse_ask(text: &str) -> Result<Option<ZoneAsk>, RequestError> {
    let Some(word) = text
        .split(|c: char| c.is_whitespace() || c == ';')
        .find(|w| *w == "dualstack" || w.starts_with("dualstack:") || w.starts_with("dualstack="))
    else {
        return Ok(None);
    };
    let bad = |why: String| RequestError::Bad {
        text: word.to_string(),
        why,
    };
    let mut ask = ZoneAsk::default();
    let args = word["dualstack".len()..].trim_start_matches([':', '=']);
    for kv in args.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| bad(format!("{kv:?} is not key=value")))?;
        match k {
            "memory" | "mem" => match parse_size(v) {
                Some(n) if n > 0 => ask.memory = Some(n),
                _ => return Err(bad(format!("memory={v}: not a size (examples: 64M, 8G)"))),
            },
            "hugepages" | "hugepage_size" => {
                ask.hugepage_kib = Some(
                    parse_page_size(v)
                        .ok_or_else(|| bad(format!("hugepages={v}: use 2M or 1G")))?,
                )
            }
            "cpus" | "cores" => match v.parse::<u32>() {
                Ok(n) if n > 0 => ask.cores = Some(n),
                _ => return Err(bad(format!("{k}={v}: give a number of cores >= 1"))),
            },
            other => {
                return Err(bad(format!(
                    "unknown key {other:?}; known: memory, hugepages, cpus"
                )))
            }
        }
    }
    Ok(Some(ask))
}

/// The SPANK option's value (`--dualstack=on`, or `--dualstack=memory=8G,hugepages=1G,cpus=2`)
/// as a request: `on`, `yes` or `default` take the node's defaults.
pub fn parse_option(value: &str) -> Result<ZoneAsk, RequestError> {
    let v = value.trim();
    let args = match v {
        "" | "on" | "yes" | "default" => "",
        _ => v,
    };
    Ok(parse_ask(&format!("dualstack:{args}"))?.unwrap_or_default())
}

/// Expand a Slurm host list such as `n[1-3,5],login1` into names.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, RequestError> {
    let err = || RequestError::HostList(list.to_string());
    let mut out = Vec::new();
    // Split at commas outside brackets.
    let mut depth = 0i32;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(err());
        }
    }
    parts.push(&list[start..]);
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        let Some(open) = part.find('[') else {
            out.push(part.to_string());
            continue;
        };
        let close = part.rfind(']').ok_or_else(err)?;
        let (prefix, suffix) = (&part[..open], &part[close + 1..]);
        for range in part[open + 1..close].split(',') {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let width = a.len();
            let (x, y): (u64, u64) = (a.parse().map_err(|_| err())?, b.parse().map_err(|_| err())?);
            if x > y || y - x > 100_000 {
                return Err(err());
            }
            for n in x..=y {
                out.push(format!("{prefix}{n:0width$}{suffix}"));
            }
        }
    }
    Ok(out)
}

/// What `scontrol show job -d -o JOBID` says about a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobInfo {
    pub comment: Option<String>,
    pub user: Option<String>,
    /// Per node: the job's CPU ids there (Slurm's abstract ids, 0-based within the node).
    pub cpu_ids: BTreeMap<String, Vec<u32>>,
}

/// Parse one line of `scontrol show job -d -o` output. Values are taken up to the next space,
/// so a comment must be one word (`--comment=dualstack:memory=8G`).
pub fn parse_job_info(line: &str) -> Result<JobInfo, RequestError> {
    let mut info = JobInfo::default();
    let mut nodes: Option<Vec<String>> = None;
    for tok in line.split_whitespace() {
        let Some((k, v)) = tok.split_once('=') else {
            continue;
        };
        match k {
            "Comment" if v != "(null)" => info.comment = Some(v.to_string()),
            "UserId" => info.user = v.split('(').next().map(str::to_string),
            "Nodes" => nodes = Some(expand_hostlist(v)?),
            "CPU_IDs" => {
                if let Some(ns) = nodes.take() {
                    let ids = dualstack_topology::CpuList::parse_list(v)
                        .map(|l| l.iter().collect::<Vec<u32>>())
                        .unwrap_or_default();
                    for n in ns {
                        info.cpu_ids.insert(n, ids.clone());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks() {
        assert_eq!(parse_ask("").unwrap(), None);
        assert_eq!(parse_ask("my run; no zone").unwrap(), None);
        assert_eq!(parse_ask("dualstackish").unwrap(), None);
        assert_eq!(parse_ask("dualstack").unwrap(), Some(ZoneAsk::default()));
        let a = parse_ask("run7 dualstack:memory=8G,hugepages=1G,cpus=2")
            .unwrap()
            .unwrap();
        assert_eq!(a.memory, Some(8 << 30));
        assert_eq!(a.hugepage_kib, Some(1 << 20));
        assert_eq!(a.cores, Some(2));
        // The SPANK option's form: --dualstack=memory=64M.
        let a = parse_ask("dualstack=memory=64M").unwrap().unwrap();
        assert_eq!(a.memory, Some(64 << 20));
        for bad in [
            "dualstack:memory=lots",
            "dualstack:color=red",
            "dualstack:hugepages=4K",
            "dualstack:cpus=0",
            "dualstack:memory",
        ] {
            let e = parse_ask(bad).unwrap_err().to_string();
            assert!(e.contains("bad dualstack request"), "{bad}: {e}");
        }
    }

    #[test]
    fn spank_option_values() {
        assert_eq!(parse_option("on").unwrap(), ZoneAsk::default());
        assert_eq!(parse_option(" default ").unwrap(), ZoneAsk::default());
        assert_eq!(parse_option("cpus=1").unwrap().cores, Some(1));
        assert!(parse_option("memory=lots").is_err());
    }

    #[test]
    fn hostlists() {
        assert_eq!(expand_hostlist("n1").unwrap(), ["n1"]);
        assert_eq!(
            expand_hostlist("n[1-3,5],login1").unwrap(),
            ["n1", "n2", "n3", "n5", "login1"]
        );
        assert_eq!(
            expand_hostlist("c[08-10]x").unwrap(),
            ["c08x", "c09x", "c10x"]
        );
        assert!(expand_hostlist("n[3-1]").is_err());
        assert!(expand_hostlist("n[1-").is_err());
    }

    #[test]
    fn scontrol_lines() {
        let line = "JobId=12 JobName=t UserId=alice(1000) GroupId=alice(1000) Comment=dualstack:memory=64M NodeList=n[1-2] JobState=RUNNING   Nodes=n1 CPU_IDs=0 Mem=0 GRES= Nodes=n2 CPU_IDs=0-1 Mem=0 GRES=";
        let j = parse_job_info(line).unwrap();
        assert_eq!(j.comment.as_deref(), Some("dualstack:memory=64M"));
        assert_eq!(j.user.as_deref(), Some("alice"));
        assert_eq!(j.cpu_ids["n1"], vec![0]);
        assert_eq!(j.cpu_ids["n2"], vec![0, 1]);
        let j = parse_job_info("JobId=3 Comment=(null) Nodes=n[1-2] CPU_IDs=0 Mem=0").unwrap();
        assert_eq!(j.comment, None);
        assert_eq!(j.cpu_ids.len(), 2);
    }
}
