//! CPU (and NUMA node) sets in the kernel's two text formats: lists (`0-3,8,10-11`, used by
//! `cpuset.cpus` and `smp_affinity_list`) and hex masks (`ff` or `00000000,000000ff`, used by
//! `/sys/devices/virtual/workqueue/cpumask` and `smp_affinity`).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Errors parsing a CPU list or mask.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuListError {
    /// A list element is not a number or a range.
    #[error("bad CPU list {text:?}: element {element:?} is not N or N-M (example: 0-3,8)")]
    BadElement { text: String, element: String },
    /// A range runs backwards.
    #[error("bad CPU list {text:?}: range {element:?} runs backwards")]
    Backwards { text: String, element: String },
    /// A CPU number at or above [`MAX_CPUS`] (Linux's largest `NR_CPUS`).
    #[error("bad CPU list {text:?}: {element:?} goes beyond CPU {max} (Linux supports at most {limit} CPUs)", max = MAX_CPUS - 1, limit = MAX_CPUS)]
    TooLarge { text: String, element: String },
    /// A hex mask contains a non-hex digit.
    #[error("bad CPU mask {text:?}: expected hex digits in comma-separated groups (example: 00000000,000000ff)")]
    BadMask { text: String },
}

/// CPU numbers in a list are below this (Linux's largest `CONFIG_NR_CPUS`), so a typo such as
/// `0-4000000000` is an error instead of a four-billion-element set.
pub const MAX_CPUS: u32 = 8192;

/// An ordered set of CPU (or NUMA node) numbers.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuList(BTreeSet<u32>);

impl CpuList {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse the list format (`0-3,8`). Whitespace, a trailing newline and empty elements
    /// (`0-3,`) are ignored; an empty string is the empty set. Numbers must be below
    /// [`MAX_CPUS`].
    pub fn parse_list(text: &str) -> Result<Self, CpuListError> {
        let mut set = BTreeSet::new();
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(Self(set));
        }
        for element in trimmed.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = || CpuListError::BadElement {
                text: text.to_string(),
                element: element.to_string(),
            };
            let too_large = || CpuListError::TooLarge {
                text: text.to_string(),
                element: element.to_string(),
            };
            match element.split_once('-') {
                Some((a, b)) => {
                    let a: u32 = a.trim().parse().map_err(|_| bad())?;
                    let b: u32 = b.trim().parse().map_err(|_| bad())?;
                    if b < a {
                        return Err(CpuListError::Backwards {
                            text: text.to_string(),
                            element: element.to_string(),
                        });
                    }
                    if b >= MAX_CPUS {
                        return Err(too_large());
                    }
                    set.extend(a..=b);
                }
                None => {
                    let cpu: u32 = element.parse().map_err(|_| bad())?;
                    if cpu >= MAX_CPUS {
                        return Err(too_large());
                    }
                    set.insert(cpu);
                }
            }
        }
        Ok(Self(set))
    }

    /// Parse the hex mask format (`3`, `00000000,00000003`).
    pub fn parse_mask(text: &str) -> Result<Self, CpuListError> {
        let digits: String = text.trim().chars().filter(|c| *c != ',').collect();
        let bad = || CpuListError::BadMask {
            text: text.to_string(),
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let mut set = BTreeSet::new();
        for (i, c) in digits.chars().rev().enumerate() {
            let nibble = c.to_digit(16).ok_or_else(bad)?;
            for bit in 0..4 {
                if nibble & (1 << bit) != 0 {
                    set.insert(u32::try_from(i * 4 + bit).map_err(|_| bad())?);
                }
            }
        }
        Ok(Self(set))
    }

    /// Format as a list (`0-3,8`); the empty set is the empty string.
    pub fn to_list(&self) -> String {
        let mut out = String::new();
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !out.is_empty() {
                out.push(',');
            }
            if end == start {
                out.push_str(&start.to_string());
            } else {
                out.push_str(&format!("{start}-{end}"));
            }
        }
        out
    }

    /// Format as a hex mask with `groups` comma-separated 32-bit groups (at least as many as the
    /// highest CPU needs), as the kernel prints it.
    pub fn to_mask(&self, groups: usize) -> String {
        let needed = self.0.last().map_or(1, |&m| (m as usize) / 32 + 1);
        let groups = groups.max(needed).max(1);
        let mut words = vec![0u32; groups];
        for &cpu in &self.0 {
            words[(cpu / 32) as usize] |= 1 << (cpu % 32);
        }
        words
            .iter()
            .rev()
            .map(|w| format!("{w:08x}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Number of 32-bit groups in a mask text (`00000000,00000003` has 2).
    pub fn mask_groups(text: &str) -> usize {
        text.trim().split(',').count()
    }

    pub fn insert(&mut self, cpu: u32) -> bool {
        self.0.insert(cpu)
    }
    pub fn remove(&mut self, cpu: u32) -> bool {
        self.0.remove(&cpu)
    }
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
    pub fn first(&self) -> Option<u32> {
        self.0.first().copied()
    }
    pub fn union(&self, other: &CpuList) -> CpuList {
        Self(self.0.union(&other.0).copied().collect())
    }
    pub fn intersection(&self, other: &CpuList) -> CpuList {
        Self(self.0.intersection(&other.0).copied().collect())
    }
    pub fn difference(&self, other: &CpuList) -> CpuList {
        Self(self.0.difference(&other.0).copied().collect())
    }
    pub fn is_subset(&self, other: &CpuList) -> bool {
        self.0.is_subset(&other.0)
    }
    pub fn is_disjoint(&self, other: &CpuList) -> bool {
        self.0.is_disjoint(&other.0)
    }
}

impl FromIterator<u32> for CpuList {
    fn from_iter<T: IntoIterator<Item = u32>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl FromStr for CpuList {
    type Err = CpuListError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_list(s)
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_list())
    }
}

impl fmt::Debug for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuList({:?})", self.to_list())
    }
}

/// Serialized as the list string (`"0-3,8"`), which is what humans and the kernel read.
impl Serialize for CpuList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_list())
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse_list(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_round_trip() {
        for text in ["", "0", "0-3", "0-3,8", "1,3,5-7,64"] {
            assert_eq!(CpuList::parse_list(text).unwrap().to_list(), text);
        }
        assert_eq!(CpuList::parse_list("0-1\n").unwrap().len(), 2);
        assert!(matches!(
            CpuList::parse_list("3-1"),
            Err(CpuListError::Backwards { .. })
        ));
        assert!(matches!(
            CpuList::parse_list("a"),
            Err(CpuListError::BadElement { .. })
        ));
    }

    /// What the former CPU-list parsers of the CLI (`--cpuset-cpus`) and of the commodity
    /// crate (`Cpus_allowed_list`) accepted and refused; callers that need a non-empty list
    /// check [`CpuList::is_empty`] themselves.
    #[test]
    fn list_accepts_and_refuses_what_the_former_parsers_did() {
        let list = |t: &str| CpuList::parse_list(t).map(|l| l.iter().collect::<Vec<_>>());
        assert_eq!(list("0-3,8,10-11").unwrap(), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(list("0-3,6\n").unwrap(), [0, 1, 2, 3, 6]);
        assert_eq!(list(" 3 , 1 - 2 ").unwrap(), [1, 2, 3]);
        assert_eq!(list("5,5,4-5").unwrap(), [4, 5]);
        assert_eq!(list("0-3,").unwrap(), [0, 1, 2, 3]);
        assert_eq!(list("8191").unwrap(), [8191]);
        assert!(list("").unwrap().is_empty());
        for bad in ["a", "3-1", "1-", "-1", "1.5", "0-3;5", "1--2"] {
            assert!(CpuList::parse_list(bad).is_err(), "{bad} was accepted");
        }
        for huge in ["8192", "0-4000000000", "4096-99999"] {
            assert!(
                matches!(
                    CpuList::parse_list(huge),
                    Err(CpuListError::TooLarge { .. })
                ),
                "{huge}"
            );
        }
        let e = CpuList::parse_list("0-x").unwrap_err().to_string();
        assert!(e.contains("example: 0-3,8"), "{e}");
    }

    #[test]
    fn mask_round_trip() {
        let set = CpuList::parse_mask("00000000,00000003\n").unwrap();
        assert_eq!(set.to_list(), "0-1");
        assert_eq!(set.to_mask(2), "00000000,00000003");
        assert_eq!(CpuList::parse_mask("f").unwrap().to_list(), "0-3");
        let high = CpuList::parse_list("0,33").unwrap();
        assert_eq!(high.to_mask(1), "00000002,00000001");
        assert_eq!(CpuList::parse_mask("00000002,00000001").unwrap(), high);
        assert!(CpuList::parse_mask("xyz").is_err());
        assert_eq!(CpuList::mask_groups("00000000,00000003"), 2);
    }

    #[test]
    fn serde_as_string() {
        let set = CpuList::parse_list("0-2,5").unwrap();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "\"0-2,5\"");
        assert_eq!(serde_json::from_str::<CpuList>(&json).unwrap(), set);
    }
}
