//! The updraft engine inside a Python extension module, `updraft._native`.
//!
//! Two entry points: [`cli`] runs the `updraft` command line in this process (the Python
//! package starts its launcher and workers as `python -m updraft._cli ...`, so one
//! installation is both the package and the engine), and [`check`] parses and checks a pipeline
//! as `updraft validate` does, returning every problem with its key path and position. Data never
//! crosses this boundary: jobs read and write Arrow IPC files that pyarrow maps without copying.

use pyo3::prelude::*;

/// Runs the `updraft` command line with `argv` (`argv[0]` is the program name) and returns its
/// exit status (0 ok, 1 job failed, 2 bad input, 3 infrastructure; see README "Commands").
/// Releases the GIL while it runs.
#[pyfunction]
fn cli(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| updraft::run_cli(updraft::Registry::new(), argv.into_iter().map(Into::into).collect()))
}

/// Parses `text` as a pipeline and checks it for `workers` workers (inputs listed, schemas
/// agreed, every stage's columns and types), exactly as `updraft validate`; relative paths are
/// resolved from the current directory. Returns every problem as (key path, line, column,
/// message), line and column 1-based (0 when the problem has no place in the text); an empty
/// list when the pipeline is valid.
#[pyfunction]
fn check(py: Python<'_>, text: &str, workers: u32) -> Vec<(String, usize, usize, String)> {
    py.detach(|| {
        let registry = updraft::Registry::new();
        let errors = match updraft_config::parse_pipeline_with(text, "pipeline", &registry) {
            Err(e) => e,
            Ok(spec) => {
                let found = updraft_operators::check::check_columns(&spec, workers.max(1), &registry);
                let problems: Vec<(String, String)> =
                    found.problems.into_iter().map(|p| (p.path, p.message)).collect();
                if problems.is_empty() {
                    return Vec::new();
                }
                updraft_config::errors_at(text, "pipeline", &problems)
            }
        };
        errors.errors.into_iter().map(|e| (e.path, e.line, e.column, e.message)).collect()
    })
}

/// The column names stage `stage` of pipeline `text` emits (a sink: what it writes), found as
/// [`check`] finds them; empty when they cannot be known before a run.
#[pyfunction]
fn columns(py: Python<'_>, text: &str, stage: &str) -> Vec<String> {
    py.detach(|| {
        let registry = updraft::Registry::new();
        let Ok(spec) = updraft_config::parse_pipeline_with(text, "pipeline", &registry) else {
            return Vec::new();
        };
        let found = updraft_operators::check::check_columns(&spec, 1, &registry);
        found
            .schemas
            .into_iter()
            .find(|(name, _)| name == stage)
            .and_then(|(_, schema)| schema)
            .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default()
    })
}

/// This process's rank, world size and job id as `updraft worker` finds them in the
/// environment of the scheduler that started it (Slurm, Open MPI, PMI, a Kubernetes Indexed
/// Job or `UPDRAFT_RANK`/`UPDRAFT_WORLD`/`UPDRAFT_JOB`; see README "Clusters"): each is `None`
/// when the environment does not give it.
///
/// # Errors
/// `ValueError` naming the variable when one is set but malformed.
#[pyfunction]
fn placement() -> PyResult<(Option<u32>, Option<u32>, Option<String>)> {
    match updraft::placement::from_env(|name| std::env::var(name).ok()) {
        Ok(Some(p)) => Ok((p.rank, p.world, p.job)),
        Ok(None) => Ok((None, None, None)),
        Err(e) => Err(pyo3::exceptions::PyValueError::new_err(e)),
    }
}

/// The `updraft._native` module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cli, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(columns, m)?)?;
    m.add_function(wrap_pyfunction!(placement, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
