//! The output-commit protocol's hook: what a job does with its outputs once every rank has
//! finished, or when it fails.
//!
//! ```text
//!  every stage done (sinks wrote temporary files) ─▶ Done{report} to every peer
//!    ─▶ all peers' Done: every rank staged everything ─▶ Commit::commit (publish) ─▶ Committed{error}
//!    ─▶ all peers' Committed ─▶ ok
//!  any failure before the commit ─▶ Commit::abort (remove the run's temporaries) ─▶ failed
//! ```
//!
//! `operators::outputs::JobOutputs` implements it for file sinks.

/// Makes a job's outputs visible when the whole job succeeded, or removes what it wrote.
pub trait Commit: Send + Sync {
    /// Publishes this rank's staged outputs; called once, after every rank of the job finished
    /// every stage.
    ///
    /// # Errors
    /// What could not be published, in words.
    fn commit(&self) -> Result<(), String>;

    /// Removes this run's temporaries (this rank's, and those of other ranks it can reach);
    /// called when the job fails before the commit. Best effort: it never fails.
    fn abort(&self);
}

/// A job without outputs to commit.
#[derive(Debug, Default, Clone, Copy)]
pub struct NothingToCommit;

impl Commit for NothingToCommit {
    fn commit(&self) -> Result<(), String> {
        Ok(())
    }

    fn abort(&self) {}
}
