//! Operators for tests: a memory source, a source or sink held at a gate until released, a
//! collecting sink, and an operator that fails on purpose. Useful for testing custom operators
//! and the runtime itself; none of them is meant for real pipelines.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;

use crate::error::OperatorError;
use crate::operator::{Flow, Operator, Output};

/// A gate that blocks callers until it is opened.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// Opens the gate for good.
    pub fn open(&self) {
        let (lock, cv) = &*self.0;
        if let Ok(mut open) = lock.lock() {
            *open = true;
            cv.notify_all();
        }
    }

    /// Waits until the gate opens, at most `limit`; true if it opened.
    pub fn wait(&self, limit: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let Ok(guard) = lock.lock() else { return false };
        cv.wait_timeout_while(guard, limit, |open| !*open).map(|(g, _)| *g).unwrap_or(false)
    }
}

/// Emits the given batches, one per call, counting them in `emitted`.
pub struct MemorySource {
    batches: VecDeque<RecordBatch>,
    emitted: Arc<AtomicUsize>,
}

impl MemorySource {
    /// A source of `batches`; `emitted` counts what it has handed out.
    pub fn new(batches: Vec<RecordBatch>, emitted: Arc<AtomicUsize>) -> Self {
        MemorySource { batches: batches.into(), emitted }
    }
}

impl Operator for MemorySource {
    fn on_batch(&mut self, _: usize, _: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        Err(OperatorError::Invalid("a source has no inputs".into()))
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        match self.batches.pop_front() {
            Some(b) => {
                self.emitted.fetch_add(1, Ordering::SeqCst);
                out.emit(b);
                Ok(if self.batches.is_empty() { Flow::Idle } else { Flow::More })
            }
            None => Ok(Flow::Idle),
        }
    }
}

/// Keeps every batch it receives; the first `on_batch` waits at `gate` (if any) first, so the
/// sink holds its credit until the test opens the gate.
pub struct CollectingSink {
    got: Arc<Mutex<Vec<RecordBatch>>>,
    gate: Option<Gate>,
}

impl CollectingSink {
    /// A sink collecting into `got`.
    pub fn new(got: Arc<Mutex<Vec<RecordBatch>>>, gate: Option<Gate>) -> Self {
        CollectingSink { got, gate }
    }
}

impl Operator for CollectingSink {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, _: &mut Output) -> Result<(), OperatorError> {
        if let Some(gate) = self.gate.take()
            && !gate.wait(Duration::from_secs(30))
        {
            return Err(OperatorError::Invalid("gate never opened".into()));
        }
        self.got.lock().map_err(|_| OperatorError::Invalid("poisoned".into()))?.push(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}

/// What an injected fault does. `Error`, `Panic` and `Delay` happen inside the operator; the
/// others are carried out by the worker through [`FaultHook`] (they act on the process or its
/// links).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operator returns an error.
    Error,
    /// The operator panics.
    Panic,
    /// The operator call takes this much longer.
    Delay(Duration),
    /// The worker's link to the next rank (`rank + 1` mod world) is cut, both directions.
    DropLink,
    /// One bit of the next data frame to the next rank is flipped on the wire.
    CorruptFrame,
    /// The worker's link to the next rank stops sending (no frames, no heartbeats) but stays
    /// open, as a stalled network path does: the peer finds it silent at `peer_timeout`.
    StallLink,
    /// The worker process exits at once (status 17), as if it crashed.
    Exit,
    /// The worker process is stopped (SIGSTOP) for this long, then continues.
    Stop(Duration),
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// On the n-th batch the stage receives (1-based; for a source, the n-th it emits).
    Batch(u64),
    /// When the stage's input ends (for a source, when it is exhausted).
    End,
}

/// A fault at one rank, stage and moment: what `UPDRAFT_FAULT` holds, as
/// `rank=R,stage=NAME,at=N|end,fault=error|panic|delay:250ms|drop-link|corrupt-frame|stall-link|exit|stop:2s`
/// (an optional `attempt=A` limits it to that attempt of a retried job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// The rank it fires on.
    pub rank: u32,
    /// The stage (the pipeline's name, or a generated one such as `j.shuffle-left`).
    pub stage: String,
    /// When.
    pub at: At,
    /// What.
    pub fault: Fault,
    /// Only on this attempt of a retried job (1-based), or on every attempt.
    pub attempt: Option<u32>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    updraft_config::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))
}

impl FaultPlan {
    /// Parses the `UPDRAFT_FAULT` form (see [`FaultPlan`]).
    ///
    /// # Errors
    /// A missing or unknown field, naming it.
    pub fn parse(text: &str) -> Result<FaultPlan, String> {
        let (mut rank, mut stage, mut at, mut fault, mut attempt) = (None, None, None, None, None);
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("`{part}` is not key=value"))?;
            match k.trim() {
                "rank" => rank = Some(v.parse::<u32>().map_err(|e| format!("rank `{v}`: {e}"))?),
                "stage" => stage = Some(v.to_string()),
                "at" => {
                    at = Some(if v == "end" {
                        At::End
                    } else {
                        At::Batch(v.parse::<u64>().map_err(|e| format!("at `{v}`: {e}"))?)
                    })
                }
                "attempt" => attempt = Some(v.parse::<u32>().map_err(|e| format!("attempt `{v}`: {e}"))?),
                "fault" => {
                    let (name, arg) = v.split_once(':').map_or((v, None), |(n, a)| (n, Some(a)));
                    fault = Some(match (name, arg) {
                        ("error", None) => Fault::Error,
                        ("panic", None) => Fault::Panic,
                        ("delay", Some(d)) => Fault::Delay(parse_duration(d)?),
                        ("drop-link", None) => Fault::DropLink,
                        ("corrupt-frame", None) => Fault::CorruptFrame,
                        ("stall-link", None) => Fault::StallLink,
                        ("exit", None) => Fault::Exit,
                        ("stop", Some(d)) => Fault::Stop(parse_duration(d)?),
                        _ => {
                            return Err(format!(
                                "unknown fault `{v}`; expected error, panic, delay:DURATION, drop-link, corrupt-frame, stall-link, exit or stop:DURATION"
                            ));
                        }
                    })
                }
                other => return Err(format!("unknown key `{other}`")),
            }
        }
        Ok(FaultPlan {
            rank: rank.ok_or("rank= is missing")?,
            stage: stage.ok_or("stage= is missing")?,
            at: at.unwrap_or(At::Batch(1)),
            fault: fault.ok_or("fault= is missing")?,
            attempt,
        })
    }
}

/// Carries out the faults an operator cannot: exiting, stopping the process, acting on links.
pub type FaultHook = std::sync::Arc<dyn Fn(Fault) + Send + Sync>;

/// Wraps a stage's operator and fires one fault at its moment; otherwise it is the operator.
pub struct Faulty {
    inner: Box<dyn Operator>,
    at: At,
    fault: Fault,
    hook: FaultHook,
    seen: u64,
    fired: bool,
}

impl Faulty {
    /// `inner` with `fault` at `at`; process and link faults go to `hook`.
    pub fn new(inner: Box<dyn Operator>, at: At, fault: Fault, hook: FaultHook) -> Faulty {
        Faulty { inner, at, fault, hook, seen: 0, fired: false }
    }

    fn fire(&mut self) -> Result<(), OperatorError> {
        if self.fired {
            return Ok(());
        }
        self.fired = true;
        tracing::warn!(fault = ?self.fault, at = ?self.at, "injecting a fault");
        match self.fault {
            Fault::Error => Err(OperatorError::Invalid(format!("injected fault at {:?}", self.at))),
            #[allow(clippy::panic, reason = "the fault being injected is a panic")]
            Fault::Panic => panic!("injected panic at {:?}", self.at),
            Fault::Delay(d) => {
                std::thread::sleep(d);
                Ok(())
            }
            other => {
                (self.hook)(other);
                Ok(())
            }
        }
    }

    fn count(&mut self, rows: bool) -> Result<(), OperatorError> {
        if rows {
            self.seen += 1;
            if self.at == At::Batch(self.seen) {
                return self.fire();
            }
        }
        Ok(())
    }
}

impl Operator for Faulty {
    fn on_batch(&mut self, port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        self.count(true)?;
        self.inner.on_batch(port, batch, out)
    }

    fn on_end(&mut self, port: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        if self.at == At::End {
            self.fire()?;
        }
        self.inner.on_end(port, out)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        let flow = self.inner.resume(out)?;
        // A source counts the batches it emits, and ends when it says Idle.
        let emitted = !out.is_empty();
        self.count(emitted)?;
        if flow == Flow::Idle && self.at == At::End {
            self.fire()?;
        }
        Ok(flow)
    }

    fn summary(&self) -> Option<crate::report::TableSummary> {
        self.inner.summary()
    }
}

/// Passes batches through until its fault (an error, a panic or a delay) at `at`.
pub struct Failing {
    inner: Faulty,
}

/// Passes every batch on.
struct PassThrough;

impl Operator for PassThrough {
    fn on_batch(&mut self, _: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        out.emit(batch);
        Ok(())
    }

    fn on_end(&mut self, _: usize, _: &mut Output) -> Result<Flow, OperatorError> {
        Ok(Flow::Idle)
    }
}

impl Failing {
    /// Fails with `fault` (only `Error`, `Panic` and `Delay` act in-process) at `at`.
    pub fn new(at: At, fault: Fault) -> Self {
        let hook: FaultHook = std::sync::Arc::new(|_| {});
        Failing { inner: Faulty::new(Box::new(PassThrough), at, fault, hook) }
    }
}

impl Operator for Failing {
    fn on_batch(&mut self, port: usize, batch: RecordBatch, out: &mut Output) -> Result<(), OperatorError> {
        self.inner.on_batch(port, batch, out)
    }

    fn on_end(&mut self, port: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        self.inner.on_end(port, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_plans_parse_and_bad_ones_are_named() {
        let p =
            FaultPlan::parse("rank=2,stage=j.shuffle-left,at=3,fault=delay:250ms,attempt=1").expect("plan");
        assert_eq!(p.rank, 2);
        assert_eq!(p.stage, "j.shuffle-left");
        assert_eq!(p.at, At::Batch(3));
        assert_eq!(p.fault, Fault::Delay(Duration::from_millis(250)));
        assert_eq!(p.attempt, Some(1));
        assert_eq!(FaultPlan::parse("rank=0,stage=s,at=end,fault=stop:2s").expect("plan").at, At::End);
        assert!(
            FaultPlan::parse("rank=0,stage=s,fault=melt").expect_err("unknown").contains("unknown fault")
        );
        assert!(FaultPlan::parse("stage=s,fault=exit").expect_err("rank").contains("rank="));
    }
}
