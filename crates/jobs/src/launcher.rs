//! Running as one rank of an MPI job (issue 12): the stock launcher (MPICH's Hydra, Open MPI's
//! mpirun/prted, Slurm's srun) starts `dualstack run` once per rank. What it tells each rank
//! through the environment decides the rank's share of the node: ranks on one node get
//! disjoint cores (and, in a zone, disjoint shares of its huge pages).

/// This process's place among the ranks of one node, from the launcher's environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalRank {
    /// 0-based rank among the ranks on this node.
    pub rank: usize,
    /// Ranks on this node.
    pub size: usize,
}

/// Variables naming the local rank, in the order they are trusted.
const RANK_VARS: [&str; 4] = [
    "MPI_LOCALRANKID",            // MPICH Hydra
    "OMPI_COMM_WORLD_LOCAL_RANK", // Open MPI
    "SLURM_LOCALID",              // srun
    "PMI_RANK",                   // PMI-1 (global: right when all ranks are on one node)
];
const SIZE_VARS: [&str; 4] = [
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "SLURM_NTASKS_PER_NODE",
    "PMI_SIZE",
];

impl LocalRank {
    /// From `get` (the environment); None unless a launcher's variables are there and make
    /// sense (rank < size).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let num = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).and_then(|v| v.trim().parse::<usize>().ok()))
        };
        let rank = num(&RANK_VARS)?;
        let size = num(&SIZE_VARS).unwrap_or(rank + 1).max(1);
        (rank < size).then_some(LocalRank { rank, size })
    }

    /// From this process's environment.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|n| std::env::var(n).ok())
    }

    /// This rank's share of `cpus`: an equal contiguous slice (at least one core; with more
    /// ranks than cores, ranks share cores round-robin).
    pub fn share<T: Clone>(&self, cpus: &[T]) -> Vec<T> {
        if cpus.is_empty() {
            return Vec::new();
        }
        let per = (cpus.len() / self.size).max(1);
        let start = (self.rank * per) % cpus.len();
        cpus[start..(start + per).min(cpus.len())].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn local_rank_from_each_launcher() {
        let hydra = env(&[
            ("MPI_LOCALRANKID", "1"),
            ("MPI_LOCALNRANKS", "2"),
            ("PMI_RANK", "7"),
        ]);
        assert_eq!(
            LocalRank::from_vars(hydra),
            Some(LocalRank { rank: 1, size: 2 })
        );
        let ompi = env(&[
            ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
        ]);
        assert_eq!(
            LocalRank::from_vars(ompi),
            Some(LocalRank { rank: 0, size: 4 })
        );
        let pmi = env(&[("PMI_RANK", "3"), ("PMI_SIZE", "4")]);
        assert_eq!(
            LocalRank::from_vars(pmi),
            Some(LocalRank { rank: 3, size: 4 })
        );
        assert_eq!(LocalRank::from_vars(env(&[])), None);
        let bad = env(&[("MPI_LOCALRANKID", "5"), ("MPI_LOCALNRANKS", "2")]);
        assert_eq!(LocalRank::from_vars(bad), None);
    }

    #[test]
    fn ranks_get_disjoint_cores() {
        let cpus = [2, 3, 4, 5];
        let of = |rank, size| LocalRank { rank, size }.share(&cpus);
        assert_eq!(of(0, 2), vec![2, 3]);
        assert_eq!(of(1, 2), vec![4, 5]);
        assert_eq!(of(3, 4), vec![5]);
        assert_eq!(of(5, 8), vec![3], "more ranks than cores: round-robin");
        assert_eq!(LocalRank { rank: 0, size: 1 }.share(&cpus), cpus.to_vec());
    }
}
