//! The actor that hosts one [`Operator`] on one worker: it decodes inputs, calls the operator,
//! routes its output through [`OutEdge`]s, and stops calling it while a destination has no
//! credit. Inputs wait in `inbox`, which upstream credit bounds.
//!
//! Every call into the operator runs under `catch_unwind`: a panic is a typed failure of the
//! stage (class `Operator`, with the panic's message), told to every rank like any error, never
//! a thread that dies in silence. A data batch whose columns (names and types) differ from the
//! first batch of its port is refused before the operator sees it, naming the port and sender.
//!
//! ```text
//!   ToOperator::{Local, RemoteData} ─▶ inbox ─▶ on_batch ─▶ Output ─▶ OutEdge(s)
//!   ToOperator::{LocalEnd, RemoteEnd} ─▶ inbox ─▶ on_end (when every sender ended the port)
//!   ToOperator::Credit ─▶ OutEdge::on_credit ─▶ pump again
//! ```

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix::prelude::*;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_schema::{Schema, SchemaRef};

use crate::credit::CreditGuard;
use crate::error::{FailureClass, OperatorError};
use crate::exchange::OutEdge;
use crate::ids::{EdgeId, Rank};
use crate::messages::{EventSink, JobEvent, SendFrame, ToOperator};
use crate::metrics as names;
use crate::operator::{Flow, Operator, Output};
use crate::plan::Phase;
use crate::report::OperatorStats;

/// Calls made in one go before the actor yields to its mailbox (credit, new input).
const CALLS_PER_TURN: usize = 16;

/// One input port: how many senders it waits for and their state.
pub struct InputPort {
    senders: HashMap<Rank, SenderState>,
    expected: usize,
    ended: usize,
    /// The columns of the port's first data batch; every later one must have them.
    schema: Option<SchemaRef>,
}

impl InputPort {
    /// A port fed by every rank (`exchange`) or only by `me`.
    pub fn new(exchange: bool, me: Rank, world: u32) -> InputPort {
        let ranks: Vec<Rank> = if exchange { (0..world).collect() } else { vec![me] };
        let expected = ranks.len();
        InputPort {
            senders: ranks.into_iter().map(|r| (r, SenderState::default())).collect(),
            expected,
            ended: 0,
            schema: None,
        }
    }
}

#[derive(Default)]
struct SenderState {
    next_seq: u64,
    batches: u64,
    rows: u64,
    end_seen: bool,
}

enum Item {
    Batch { port: usize, from: Rank, batch: RecordBatch, _guard: Option<CreditGuard> },
    End { port: usize },
}

/// Schema metadata keys with this prefix mark control batches (a sort's key sample, say):
/// operators exchange them on a port next to data batches of another schema, so the port's
/// schema check leaves them to the operator.
pub const CONTROL_BATCH_PREFIX: &str = "updraft.";

pub(crate) fn is_control(schema: &Schema) -> bool {
    schema.metadata().keys().any(|k| k.starts_with(CONTROL_BATCH_PREFIX))
}

fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

fn describe(schema: &Schema) -> String {
    schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `f`, a decoder of bytes from the network built on a library that may panic on
/// malformed input (arrow-ipc 60 does, on a buffer length beyond its message), turning a panic
/// into an error naming `what` like any other malformed input.
///
/// # Errors
/// `f`'s error, or the panic's message.
pub fn contain_panics<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(p) => Err(format!("{what} that panicked its decoder: {}", panic_message(p.as_ref()))),
    }
}

/// Runs one call into operator code, turning its error or its panic into a failure to report.
fn guarded<T>(f: impl FnOnce() -> Result<T, OperatorError>) -> Result<T, (String, FailureClass)> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((e.to_string(), e.class())),
        Err(p) => Err((format!("panicked: {}", panic_message(p.as_ref())), FailureClass::Operator)),
    }
}

/// Where the actor belongs and what it may reach.
pub struct ActorSetup {
    /// Stage index.
    pub stage: usize,
    /// Stage name.
    pub name: String,
    /// Phase for the report.
    pub phase: Phase,
    /// This worker.
    pub me: Rank,
    /// Input ports in order.
    pub inputs: Vec<InputPort>,
    /// Which port each inbound edge feeds.
    pub edge_ports: HashMap<EdgeId, usize>,
    /// Output edges.
    pub outputs: Vec<OutEdge>,
    /// The transport (for remote credit).
    pub transport: Recipient<SendFrame>,
    /// Job events.
    pub events: EventSink,
    /// Worker start, for end times.
    pub started_at: Instant,
}

/// Hosts an operator.
pub struct OperatorActor {
    setup: ActorSetup,
    op: Box<dyn Operator>,
    inbox: VecDeque<Item>,
    more: bool,
    started: bool,
    op_finished: bool,
    reported: bool,
    failed: bool,
    me_addr: Option<Recipient<ToOperator>>,
    /// Stages to start when an input port ends (port, stage).
    dependents: Vec<(usize, Recipient<ToOperator>)>,
    out: Output,
    stats: OperatorStats,
    rows_in: metrics::Counter,
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
    rows_out: metrics::Counter,
    call_seconds: metrics::Histogram,
    credit_waits: metrics::Counter,
    in_flight: metrics::Gauge,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

impl OperatorActor {
    /// An actor for `op`.
    pub fn new(setup: ActorSetup, op: Box<dyn Operator>) -> OperatorActor {
        let label = setup.name.clone();
        let stats = OperatorStats {
            name: setup.name.clone(),
            phase: setup.phase,
            rows_in: 0,
            rows_out: 0,
            batches_in: 0,
            busy_us: 0,
            end_us: 0,
        };
        OperatorActor {
            op,
            inbox: VecDeque::new(),
            more: false,
            started: false,
            op_finished: false,
            reported: false,
            failed: false,
            me_addr: None,
            dependents: Vec::new(),
            out: Output::default(),
            stats,
            rows_in: metrics::counter!(names::OPERATOR_ROWS_IN, "operator" => label.clone()),
            bytes_in: metrics::counter!(names::OPERATOR_BYTES_IN, "operator" => label.clone()),
            bytes_out: metrics::counter!(names::OPERATOR_BYTES_OUT, "operator" => label.clone()),
            rows_out: metrics::counter!(names::OPERATOR_ROWS_OUT, "operator" => label.clone()),
            call_seconds: metrics::histogram!(names::OPERATOR_CALL_SECONDS, "operator" => label.clone()),
            credit_waits: metrics::counter!(names::CREDIT_WAITS, "operator" => label.clone()),
            in_flight: metrics::gauge!(names::BYTES_IN_FLIGHT, "operator" => label),
            setup,
        }
    }

    fn fail(&mut self, error: String, class: FailureClass) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.inbox.clear();
        self.setup.events.send(JobEvent::OperatorFailed { stage: self.setup.stage, error, class });
    }

    /// Checks a data batch against its port's first one.
    fn check_schema(
        &mut self,
        port: usize,
        from: Rank,
        batch: &RecordBatch,
    ) -> Result<(), (String, FailureClass)> {
        let schema = batch.schema();
        if is_control(&schema) {
            return Ok(());
        }
        let Some(p) = self.setup.inputs.get_mut(port) else { return Ok(()) };
        match &p.schema {
            None => {
                p.schema = Some(schema);
                Ok(())
            }
            Some(first) if same_columns(first, &schema) => Ok(()),
            Some(first) => Err((
                format!(
                    "input {port}: a batch from rank {from} has columns ({}) but earlier batches had ({})",
                    describe(&schema),
                    describe(first)
                ),
                FailureClass::Operator,
            )),
        }
    }

    fn protocol(&mut self, edge: EdgeId, peer: Rank, detail: String) {
        if self.failed {
            return;
        }
        self.failed = true;
        self.inbox.clear();
        self.setup.events.send(JobEvent::Protocol { edge, peer, detail });
    }

    fn blocked(&self) -> bool {
        self.setup.outputs.iter().any(OutEdge::blocked)
    }

    fn all_inputs_ended(&self) -> bool {
        self.setup.inputs.iter().all(|p| p.ended == p.expected)
    }

    /// Runs the operator while there is work and room downstream.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let Some(me) = self.me_addr.clone() else { return };
        for _ in 0..CALLS_PER_TURN {
            if self.failed || self.reported {
                return;
            }
            if self.blocked() {
                self.credit_waits.increment(1);
                return;
            }
            let t0 = Instant::now();
            let (op, out) = (&mut self.op, &mut self.out);
            let result = if self.more {
                guarded(|| op.resume(out)).map(|f| self.more = f == Flow::More)
            } else if let Some(item) = self.inbox.pop_front() {
                match item {
                    Item::Batch { port, from, batch, _guard } => {
                        self.stats.rows_in += batch.num_rows() as u64;
                        self.stats.batches_in += 1;
                        self.rows_in.increment(batch.num_rows() as u64);
                        self.bytes_in.increment(crate::exchange::batch_bytes(&batch));
                        match self.check_schema(port, from, &batch) {
                            Ok(()) => guarded(|| self.op.on_batch(port, batch, &mut self.out)),
                            Err(e) => Err(e),
                        }
                        // `_guard` drops here: the batch is processed, its credit goes back.
                    }
                    Item::End { port } => {
                        let p = &mut self.setup.inputs[port];
                        p.ended += 1;
                        if p.ended == p.expected {
                            for (_, dependent) in self.dependents.extract_if(.., |(at, _)| *at == port) {
                                dependent.do_send(ToOperator::Start);
                            }
                            let (op, out) = (&mut self.op, &mut self.out);
                            guarded(|| op.on_end(port, out)).map(|f| self.more = f == Flow::More)
                        } else {
                            Ok(())
                        }
                    }
                }
            } else if self.started && !self.op_finished && self.all_inputs_ended() {
                self.op_finished = true;
                let mut result = Ok(());
                for edge in &mut self.setup.outputs {
                    if let Err(e) = edge.finish(&me) {
                        result = Err(e);
                    }
                }
                if let Err(e) = result {
                    self.fail(e, FailureClass::Operator);
                    return;
                }
                self.maybe_report();
                return;
            } else {
                return;
            };
            if self.out.take_more() {
                self.more = true;
            }
            let elapsed = t0.elapsed();
            self.stats.busy_us += elapsed.as_micros() as u64;
            self.call_seconds.record(elapsed.as_secs_f64());
            if let Err((e, class)) = result {
                self.fail(e, class);
                return;
            }
            let routed = std::panic::catch_unwind(AssertUnwindSafe(|| self.route(&me)))
                .unwrap_or_else(|p| Err(format!("panicked routing output: {}", panic_message(p.as_ref()))));
            if let Err(e) = routed {
                self.fail(e, FailureClass::Operator);
                return;
            }
            self.in_flight.set(self.setup.outputs.iter().map(OutEdge::in_flight).sum::<u64>() as f64);
        }
        ctx.notify(Pump);
    }

    fn route(&mut self, me: &Recipient<ToOperator>) -> Result<(), String> {
        for (target, batch) in self.out.drain() {
            self.stats.rows_out += batch.num_rows() as u64;
            self.rows_out.increment(batch.num_rows() as u64);
            self.bytes_out.increment(crate::exchange::batch_bytes(&batch));
            for edge in &mut self.setup.outputs {
                edge.push(target, &batch, me)?;
            }
        }
        Ok(())
    }

    fn maybe_report(&mut self) {
        if self.op_finished && !self.reported && !self.failed && self.setup.outputs.iter().all(OutEdge::ended)
        {
            let summary = match std::panic::catch_unwind(AssertUnwindSafe(|| self.op.summary())) {
                Ok(s) => s,
                Err(p) => {
                    return self.fail(
                        format!("panicked in summary: {}", panic_message(p.as_ref())),
                        FailureClass::Operator,
                    );
                }
            };
            self.reported = true;
            self.stats.end_us = self.setup.started_at.elapsed().as_micros() as u64;
            metrics::counter!(names::STAGES_DONE, "phase" => self.stats.phase.label()).increment(1);
            self.setup.events.send(JobEvent::OperatorDone {
                stage: self.setup.stage,
                stats: self.stats.clone(),
                summary,
            });
        }
    }

    fn sender(&mut self, port: usize, from: Rank) -> Option<&mut SenderState> {
        self.setup.inputs.get_mut(port)?.senders.get_mut(&from)
    }

    fn on_remote_data(&mut self, edge: EdgeId, from: Rank, seq: u64, body: Buffer) {
        let Some(&port) = self.setup.edge_ports.get(&edge) else {
            return self.protocol(edge, from, "data for an edge this stage does not consume".into());
        };
        let me = self.setup.me;
        let transport = self.setup.transport.clone();
        let bytes = body.len() as u64;
        let Some(s) = self.sender(port, from) else {
            return self.protocol(edge, from, "data from a rank that does not feed this edge".into());
        };
        if s.end_seen || seq != s.next_seq {
            let detail = format!(
                "frame {seq} arrived, expected {}",
                if s.end_seen { "nothing after the end".to_string() } else { s.next_seq.to_string() }
            );
            return self.protocol(edge, from, detail);
        }
        s.next_seq += 1;
        let batches = match crate::exchange::decode_body(body) {
            Ok(b) => b,
            Err(e) => return self.protocol(edge, from, format!("frame {seq}: {e}")),
        };
        let Some(s) = self.sender(port, from) else { return };
        s.batches += batches.len() as u64;
        s.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let mut guard = Some(CreditGuard::remote(transport, from, edge, me, bytes));
        let n = batches.len();
        for (i, batch) in batches.into_iter().enumerate() {
            let g = if i + 1 == n { guard.take() } else { None };
            self.inbox.push_back(Item::Batch { port, from, batch, _guard: g });
        }
        drop(guard); // a frame without a batch returns its credit at once
    }

    fn on_end(&mut self, edge: EdgeId, port: usize, from: Rank, seq: Option<u64>, batches: u64, rows: u64) {
        let Some(s) = self.sender(port, from) else {
            return self.protocol(edge, from, "end from a rank that does not feed this edge".into());
        };
        if let Some(seq) = seq {
            if seq != s.next_seq {
                let detail = format!("end frame {seq} arrived, expected frame {}", s.next_seq);
                return self.protocol(edge, from, detail);
            }
            s.next_seq += 1;
        }
        if s.end_seen {
            return self.protocol(edge, from, "second end of the same channel".into());
        }
        if (s.batches, s.rows) != (batches, rows) {
            let detail =
                format!("sender reports {batches} batches / {rows} rows, {} / {} arrived", s.batches, s.rows);
            return self.protocol(edge, from, detail);
        }
        s.end_seen = true;
        self.inbox.push_back(Item::End { port });
    }
}

impl Actor for OperatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.me_addr = Some(ctx.address().recipient());
    }
}

impl Handler<Pump> for OperatorActor {
    type Result = ();

    fn handle(&mut self, _: Pump, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

impl Handler<ToOperator> for OperatorActor {
    type Result = ();

    fn handle(&mut self, msg: ToOperator, ctx: &mut Self::Context) {
        if self.failed {
            return;
        }
        match msg {
            ToOperator::Start => {
                self.started = true;
                if self.setup.inputs.is_empty() {
                    self.more = true;
                }
            }
            ToOperator::StartAfter { port, dependent } => match self.setup.inputs.get(port) {
                Some(p) if p.ended == p.expected => dependent.do_send(ToOperator::Start),
                Some(_) => self.dependents.push((port, dependent)),
                None => self.fail(
                    format!("a stage waits for input {port}, which this stage lacks"),
                    FailureClass::Operator,
                ),
            },
            ToOperator::Local { edge, port, from, batch, guard } => {
                let Some(s) = self.sender(port, from) else {
                    return self.protocol(edge, from, "local batch for an unknown port".into());
                };
                s.batches += 1;
                s.rows += batch.num_rows() as u64;
                self.inbox.push_back(Item::Batch { port, from, batch, _guard: Some(guard) });
            }
            ToOperator::LocalEnd { edge, port, from, batches, rows } => {
                self.on_end(edge, port, from, None, batches, rows);
            }
            ToOperator::RemoteData { edge, from, seq, body } => self.on_remote_data(edge, from, seq, body),
            ToOperator::RemoteEnd { edge, from, seq, batches, rows } => {
                match self.setup.edge_ports.get(&edge) {
                    Some(&port) => self.on_end(edge, port, from, Some(seq), batches, rows),
                    None => self.protocol(edge, from, "end for an edge this stage does not consume".into()),
                }
            }
            ToOperator::Credit { edge, dest, bytes } => {
                let Some(me) = self.me_addr.clone() else { return };
                let returned = match self.setup.outputs.iter_mut().find(|o| o.id() == edge) {
                    Some(out) => out.on_credit(dest, bytes, &me),
                    None => Err("credit for an edge this stage does not produce".into()),
                };
                if let Err(detail) = returned {
                    return self.protocol(edge, dest, detail);
                }
                self.in_flight.set(self.setup.outputs.iter().map(OutEdge::in_flight).sum::<u64>() as f64);
                self.maybe_report();
            }
        }
        self.pump(ctx);
    }
}
