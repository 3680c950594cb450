//! A worker's rank, world size and job id from the environment of the scheduler that started
//! it, so that `updraft worker` needs no `--rank`/`--world` under a scheduler:
//!
//! | started by | rank | world size | job id |
//! |---|---|---|---|
//! | anything (explicit) | `UPDRAFT_RANK` | `UPDRAFT_WORLD` | `UPDRAFT_JOB` |
//! | Open MPI (`mpirun`) | `OMPI_COMM_WORLD_RANK` | `OMPI_COMM_WORLD_SIZE` | `mpi-$PMIX_NAMESPACE` when set |
//! | MPICH, Intel MPI (Hydra, PMI) | `PMI_RANK` | `PMI_SIZE` | (give `--job`) |
//! | Slurm (`srun`) | `SLURM_PROCID` | `SLURM_NTASKS` | `slurm-$SLURM_JOB_ID.$SLURM_STEP_ID` |
//! | Kubernetes Indexed Job | `JOB_COMPLETION_INDEX` | `UPDRAFT_WORLD` (the Job's completions) | `UPDRAFT_JOB` |
//!
//! Variable names are those documented by Slurm (`srun(1)`, "OUTPUT ENVIRONMENT VARIABLES"),
//! Open MPI (`mpirun(1)`, "Exported Environment Variables"), the Hydra process manager of MPICH
//! and Kubernetes ("Indexed Job" completion mode), checked in the order of the table (an MPI
//! launcher inside a Slurm allocation is the MPI launcher). Command-line flags win over all of
//! them: when `--rank`, `--world` and `--job` are all given, the environment is not read.

/// Where a worker sits in its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Rank, 0-based.
    pub rank: Option<u32>,
    /// Number of workers.
    pub world: Option<u32>,
    /// Job id shared by every worker of the job.
    pub job: Option<String>,
    /// Which scheduler's variables gave them (for logs and errors).
    pub from: &'static str,
}

/// The placement the environment `get` describes, if any.
///
/// # Errors
/// A variable that is set but is not a number, naming it; a rank outside the world size; a
/// Kubernetes index without `UPDRAFT_WORLD`.
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Placement>, String> {
    let number = |name: &str| -> Result<Option<u32>, String> {
        match get(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("{name}={v:?} is not a non-negative integer")),
        }
    };
    let explicit_world = number("UPDRAFT_WORLD")?;
    let explicit_job = get("UPDRAFT_JOB").filter(|j| !j.is_empty());
    // MPI launchers before Slurm: `mpirun` inside an sbatch script starts processes that
    // inherit the batch script's SLURM_PROCID (0 for all of them).
    let found = if let Some(rank) = number("UPDRAFT_RANK")? {
        Some(Placement { rank: Some(rank), world: explicit_world, job: None, from: "UPDRAFT_RANK" })
    } else if let Some(rank) = number("OMPI_COMM_WORLD_RANK")? {
        let job = get("PMIX_NAMESPACE").map(|ns| format!("mpi-{ns}"));
        let world = number("OMPI_COMM_WORLD_SIZE")?;
        Some(Placement { rank: Some(rank), world, job, from: "Open MPI (OMPI_COMM_WORLD_RANK)" })
    } else if let Some(rank) = number("PMI_RANK")? {
        Some(Placement { rank: Some(rank), world: number("PMI_SIZE")?, job: None, from: "PMI (PMI_RANK)" })
    } else if let Some(rank) = number("SLURM_PROCID")? {
        let world = match number("SLURM_NTASKS")? {
            Some(n) => Some(n),
            None => number("SLURM_NPROCS")?,
        };
        let job = get("SLURM_JOB_ID").map(|id| match get("SLURM_STEP_ID") {
            Some(step) => format!("slurm-{id}.{step}"),
            None => format!("slurm-{id}"),
        });
        Some(Placement { rank: Some(rank), world, job, from: "Slurm (SLURM_PROCID)" })
    } else if let Some(rank) = number("JOB_COMPLETION_INDEX")? {
        if explicit_world.is_none() {
            return Err(
                "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but UPDRAFT_WORLD is not: set \
                        it to the Job's completions"
                    .into(),
            );
        }
        Some(Placement {
            rank: Some(rank),
            world: None,
            job: None,
            from: "Kubernetes (JOB_COMPLETION_INDEX)",
        })
    } else {
        None
    };
    let Some(mut p) = found else {
        return Ok((explicit_world.is_some() || explicit_job.is_some()).then_some(Placement {
            rank: None,
            world: explicit_world,
            job: explicit_job,
            from: "UPDRAFT_WORLD",
        }));
    };
    // Explicit values win over a scheduler's.
    p.world = explicit_world.or(p.world);
    p.job = explicit_job.or(p.job);
    if let (Some(rank), Some(world)) = (p.rank, p.world)
        && rank >= world
    {
        return Err(format!("{}: rank {rank} is outside a world of {world}", p.from));
    }
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn placed(vars: &[(&str, &str)]) -> (Option<u32>, Option<u32>, Option<String>) {
        let p = from_env(env(vars)).expect("valid").expect("placed");
        (p.rank, p.world, p.job)
    }

    #[test]
    fn each_scheduler_gives_rank_world_and_job() {
        let slurm =
            [("SLURM_PROCID", "3"), ("SLURM_NTASKS", "4"), ("SLURM_JOB_ID", "812"), ("SLURM_STEP_ID", "0")];
        assert_eq!(placed(&slurm), (Some(3), Some(4), Some("slurm-812.0".into())));
        let ompi = [
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("PMIX_NAMESPACE", "prterun-h-7@1"),
        ];
        assert_eq!(placed(&ompi), (Some(1), Some(2), Some("mpi-prterun-h-7@1".into())));
        assert_eq!(placed(&[("PMI_RANK", "0"), ("PMI_SIZE", "8")]), (Some(0), Some(8), None));
        let k8s = [("JOB_COMPLETION_INDEX", "5"), ("UPDRAFT_WORLD", "16"), ("UPDRAFT_JOB", "nightly")];
        assert_eq!(placed(&k8s), (Some(5), Some(16), Some("nightly".into())));
        let explicit = [("UPDRAFT_RANK", "2"), ("UPDRAFT_WORLD", "3"), ("SLURM_PROCID", "9")];
        assert_eq!(placed(&explicit).0, Some(2), "UPDRAFT_RANK wins over a scheduler");
        // mpirun inside an sbatch script: the batch script's SLURM_PROCID is inherited.
        let nested = [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1"), ("PMI_RANK", "5"), ("PMI_SIZE", "8")];
        assert_eq!(placed(&nested).0, Some(5), "the MPI launcher's rank wins over Slurm's");
        assert_eq!(from_env(env(&[("HOME", "/root")])).expect("valid"), None);
    }

    #[test]
    fn bad_values_are_named() {
        let e = from_env(env(&[("SLURM_PROCID", "x")])).expect_err("not a number");
        assert!(e.contains("SLURM_PROCID=\"x\""), "{e}");
        let e = from_env(env(&[("JOB_COMPLETION_INDEX", "1")])).expect_err("no world");
        assert!(e.contains("UPDRAFT_WORLD"), "{e}");
        let e = from_env(env(&[("PMI_RANK", "4"), ("PMI_SIZE", "4")])).expect_err("outside");
        assert!(e.contains("rank 4 is outside a world of 4"), "{e}");
    }
}
