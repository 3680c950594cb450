//! The runtime driven for real (actors, transport, job driver) with test operators: credit
//! bounds how far a producer runs ahead, and an operator's failure ends the job with a typed
//! error naming the stage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use updraft_config::RuntimeSettings;
use updraft_runtime::job::{JobContext, JobOutcome, run_job};
use updraft_runtime::plan::{InputPlan, Phase, PhysicalPlan, StagePlan};
use updraft_runtime::testing::{At, CollectingSink, Failing, Fault, Gate, MemorySource};
use updraft_runtime::{FailureClass, JobError};
use updraft_transports::TransportActor;

fn batch(start: i64, n: i64) -> RecordBatch {
    RecordBatch::try_from_iter(vec![(
        "v",
        Arc::new(Int64Array::from((start..start + n).collect::<Vec<_>>())) as ArrayRef,
    )])
    .expect("batch")
}

fn stage(name: &str, phase: Phase, op: Box<dyn updraft_runtime::Operator>, inputs: &[usize]) -> StagePlan {
    StagePlan {
        name: name.into(),
        phase,
        operator: op,
        inputs: inputs.iter().map(|&from| InputPlan { from, exchange: false }).collect(),
        start_after: None,
    }
}

/// Runs `plan` as a one-worker job in its own actix system.
fn run_alone(plan: PhysicalPlan, settings: RuntimeSettings) -> Result<JobOutcome, JobError> {
    let (_tx, rx) = tokio::sync::watch::channel(None);
    run_with(plan, settings, Arc::new(updraft_runtime::commit::NothingToCommit), rx)
}

fn run_with(
    plan: PhysicalPlan,
    settings: RuntimeSettings,
    commit: Arc<dyn updraft_runtime::commit::Commit>,
    cancel: tokio::sync::watch::Receiver<Option<String>>,
) -> Result<JobOutcome, JobError> {
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    });
    system.block_on(async move {
        let (port, _addr) = TransportActor::new(0, 1, &settings, Vec::new()).start_port();
        let ctx = JobContext {
            me: 0,
            world: 1,
            settings: settings.clone(),
            transport: port,
            started_at: Instant::now(),
            setup: Duration::ZERO,
            mesh: Duration::ZERO,
            punch_attempts: 0,
            channels: Vec::new(),
            deadline: tokio::time::Instant::now() + Duration::from_secs(30),
            commit,
            cancel,
            memory: updraft_runtime::MemoryPool::unbounded(),
        };
        run_job(plan, ctx).await
    })
}

#[test]
fn credit_bounds_how_far_a_producer_runs_ahead_of_a_held_consumer() {
    let batches: Vec<RecordBatch> = (0..100).map(|i| batch(i * 1000, 1000)).collect();
    let cost = batches[0].get_array_memory_size() as u64;
    let settings = RuntimeSettings { channel_credit: 4 * cost, ..RuntimeSettings::default() };
    let emitted = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate::default();
    let mut plan = PhysicalPlan::default();
    plan.stages.push(stage(
        "source",
        Phase::Read,
        Box::new(MemorySource::new(batches.clone(), Arc::clone(&emitted))),
        &[],
    ));
    plan.stages.push(stage(
        "sink",
        Phase::Write,
        Box::new(CollectingSink::new(Arc::clone(&got), Some(gate.clone()))),
        &[0],
    ));

    let job = std::thread::spawn(move || run_alone(plan, settings));
    // Four batches fit the window; the fifth is made and then held back for credit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while emitted.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "producer stalled below its credit");
        std::thread::yield_now();
    }
    // Observe for a while: without credit the producer must not go further.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(emitted.load(Ordering::SeqCst), 5, "producer ran past its credit");
    gate.open();
    let outcome = job.join().expect("job thread").expect("job succeeds");
    let got = got.lock().expect("lock");
    assert_eq!(*got, batches, "every batch arrived, in order");
    let sink = outcome.mine.operators.iter().find(|o| o.name == "sink").expect("sink stats");
    assert_eq!(sink.rows_in, 100_000);
}

#[test]
fn an_operator_failure_ends_the_job_with_its_stage_named() {
    let mut plan = PhysicalPlan::default();
    let batches: Vec<RecordBatch> = (0..10).map(|i| batch(i * 10, 10)).collect();
    plan.stages.push(stage("source", Phase::Read, Box::new(MemorySource::new(batches, Arc::default())), &[]));
    plan.stages.push(stage("breaks", Phase::Other, Box::new(Failing::new(At::Batch(3), Fault::Error)), &[0]));
    plan.stages.push(stage("sink", Phase::Write, Box::new(CollectingSink::new(Arc::default(), None)), &[1]));
    match run_alone(plan, RuntimeSettings::default()) {
        Err(JobError::Operator { stage, rank, error, class }) => {
            assert_eq!((stage.as_str(), rank, class), ("breaks", 0, FailureClass::Data));
            assert!(error.contains("injected fault at Batch(3)"), "{error}");
        }
        other => panic!("expected an operator error, got {other:?}"),
    }

    let mut plan = PhysicalPlan::default();
    plan.stages.push(stage(
        "source",
        Phase::Read,
        Box::new(MemorySource::new(vec![batch(0, 5)], Arc::default())),
        &[],
    ));
    plan.stages.push(stage("breaks", Phase::Other, Box::new(Failing::new(At::End, Fault::Error)), &[0]));
    let e = run_alone(plan, RuntimeSettings::default()).expect_err("fails at end");
    assert!(e.to_string().contains("operator `breaks` failed on rank 0: injected fault at End"), "{e}");
}

#[test]
fn a_panicking_operator_fails_the_job_naming_its_stage_and_the_panic() {
    for at in [At::Batch(2), At::End] {
        let mut plan = PhysicalPlan::default();
        let batches: Vec<RecordBatch> = (0..5).map(|i| batch(i * 10, 10)).collect();
        plan.stages.push(stage(
            "source",
            Phase::Read,
            Box::new(MemorySource::new(batches, Arc::default())),
            &[],
        ));
        plan.stages.push(stage("breaks", Phase::Other, Box::new(Failing::new(at, Fault::Panic)), &[0]));
        plan.stages.push(stage(
            "sink",
            Phase::Write,
            Box::new(CollectingSink::new(Arc::default(), None)),
            &[1],
        ));
        let t = Instant::now();
        match run_alone(plan, RuntimeSettings::default()) {
            Err(JobError::Operator { stage, rank, error, class }) => {
                assert_eq!((stage.as_str(), rank, class), ("breaks", 0, FailureClass::Operator));
                assert!(error.contains("panicked: injected panic"), "{error}");
            }
            other => panic!("expected an operator error, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5), "a panic must not wait for a deadline");
    }
}

#[test]
fn a_batch_with_other_columns_is_refused_before_the_operator_sees_it() {
    let mut plan = PhysicalPlan::default();
    let other = RecordBatch::try_from_iter(vec![("x", Arc::new(Int64Array::from(vec![1])) as ArrayRef)])
        .expect("batch");
    let batches = vec![batch(0, 5), other];
    plan.stages.push(stage("source", Phase::Read, Box::new(MemorySource::new(batches, Arc::default())), &[]));
    plan.stages.push(stage("sink", Phase::Write, Box::new(CollectingSink::new(Arc::default(), None)), &[0]));
    let e = run_alone(plan, RuntimeSettings::default()).expect_err("refused");
    let text = e.to_string();
    assert!(
        text.contains(
            "operator `sink` failed on rank 0: input 0: a batch from rank 0 has columns (x: Int64)"
        ),
        "{text}"
    );
}

/// Records whether the job committed or aborted.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<&'static str>>);

impl updraft_runtime::commit::Commit for Recorder {
    fn commit(&self) -> Result<(), String> {
        self.0.lock().expect("lock").push("commit");
        Ok(())
    }

    fn abort(&self) {
        self.0.lock().expect("lock").push("abort");
    }
}

#[test]
fn a_cancelled_job_fails_at_once_and_removes_its_outputs() {
    let gate = Gate::default();
    let mut plan = PhysicalPlan::default();
    let batches: Vec<RecordBatch> = (0..5).map(|i| batch(i * 10, 10)).collect();
    plan.stages.push(stage("source", Phase::Read, Box::new(MemorySource::new(batches, Arc::default())), &[]));
    plan.stages.push(stage(
        "sink",
        Phase::Write,
        Box::new(CollectingSink::new(Arc::default(), Some(gate.clone()))),
        &[0],
    ));
    let recorder = Arc::new(Recorder::default());
    let (tx, rx) = tokio::sync::watch::channel(None);
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let _ = tx.send(Some("the launcher went away".to_string()));
        std::thread::sleep(Duration::from_secs(2));
        drop(tx);
    });
    let t = Instant::now();
    let result = run_with(plan, RuntimeSettings::default(), recorder.clone(), rx);
    let took = t.elapsed();
    gate.open();
    canceller.join().expect("canceller");
    match result {
        Err(JobError::Cancelled(reason)) => assert_eq!(reason, "the launcher went away"),
        other => panic!("expected a cancelled job, got {other:?}"),
    }
    // At once, but for at most a second given to the stage still in its call.
    assert!(took < Duration::from_millis(1600), "{took:?}");
    assert_eq!(recorder.0.lock().expect("lock").first(), Some(&"abort"));
    assert!(!recorder.0.lock().expect("lock").contains(&"commit"));
}

#[test]
fn a_plan_reading_a_later_stage_is_refused() {
    let mut plan = PhysicalPlan::default();
    plan.stages.push(stage("sink", Phase::Write, Box::new(CollectingSink::new(Arc::default(), None)), &[1]));
    plan.stages.push(stage("source", Phase::Read, Box::new(MemorySource::new(vec![], Arc::default())), &[]));
    assert!(matches!(run_alone(plan, RuntimeSettings::default()), Err(JobError::Plan(_))));
}

/// Counts the rows of each of its two inputs, and notes the most batches the second input's
/// source had made while a batch of the first input was taken (all come before its end).
struct TwoInputs {
    rows: Arc<Mutex<[usize; 2]>>,
    second_made: Arc<AtomicUsize>,
    at_first_end: Arc<Mutex<Option<usize>>>,
}

impl updraft_runtime::Operator for TwoInputs {
    fn on_batch(
        &mut self,
        port: usize,
        batch: RecordBatch,
        _: &mut updraft_runtime::Output,
    ) -> Result<(), updraft_runtime::OperatorError> {
        self.rows.lock().expect("lock")[port] += batch.num_rows();
        if port == 0 {
            let made = self.second_made.load(Ordering::SeqCst);
            let mut seen = self.at_first_end.lock().expect("lock");
            *seen = Some(seen.unwrap_or(0).max(made));
        }
        Ok(())
    }

    fn on_end(
        &mut self,
        _: usize,
        _: &mut updraft_runtime::Output,
    ) -> Result<updraft_runtime::Flow, updraft_runtime::OperatorError> {
        Ok(updraft_runtime::Flow::Idle)
    }
}

#[test]
fn a_stage_planned_to_start_after_an_input_ends_starts_then_and_not_before() {
    let second_made = Arc::new(AtomicUsize::new(0));
    let rows = Arc::new(Mutex::new([0, 0]));
    let at_first_end = Arc::new(Mutex::new(None));
    let mut plan = PhysicalPlan::default();
    let first: Vec<RecordBatch> = (0..50).map(|i| batch(i * 100, 100)).collect();
    let second: Vec<RecordBatch> = (0..50).map(|i| batch(i * 10, 10)).collect();
    plan.stages.push(stage("first", Phase::Read, Box::new(MemorySource::new(first, Arc::default())), &[]));
    let mut late =
        stage("second", Phase::Read, Box::new(MemorySource::new(second, Arc::clone(&second_made))), &[]);
    late.start_after = Some((2, 0));
    plan.stages.push(late);
    let recorder = TwoInputs {
        rows: Arc::clone(&rows),
        second_made: Arc::clone(&second_made),
        at_first_end: Arc::clone(&at_first_end),
    };
    plan.stages.push(stage("both", Phase::Other, Box::new(recorder), &[0, 1]));
    run_alone(plan, RuntimeSettings::default()).expect("job succeeds");
    assert_eq!(*at_first_end.lock().expect("lock"), Some(0), "the second source made nothing before");
    assert_eq!(*rows.lock().expect("lock"), [5000, 500], "then every batch of both arrived");

    // A wait on a port the stage lacks is refused before anything runs.
    let mut plan = PhysicalPlan::default();
    plan.stages.push(stage("first", Phase::Read, Box::new(MemorySource::new(vec![], Arc::default())), &[]));
    let mut late = stage("second", Phase::Read, Box::new(MemorySource::new(vec![], Arc::default())), &[]);
    late.start_after = Some((0, 0));
    plan.stages.push(late);
    let e = run_alone(plan, RuntimeSettings::default()).expect_err("refused");
    assert!(e.to_string().contains("starts after input 0 of stage 0, which does not exist"), "{e}");
}
