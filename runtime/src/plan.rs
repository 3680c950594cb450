//! The physical plan a worker runs: stages (one operator actor each) and the edges between them.
//! Every worker builds the same plan from the same pipeline, so stage indices and edge ids agree
//! across the job.

use serde::{Deserialize, Serialize};

use crate::error::JobError;
use crate::ids::EdgeId;
use crate::operator::Operator;

/// What a stage's time is accounted to in the phase table.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
#[rkyv(derive(PartialEq))]
pub enum Phase {
    /// Rendezvous and punching.
    Setup,
    /// Sources.
    Read,
    /// Hash partitioning and the all-to-all exchange.
    Shuffle,
    /// Local joins.
    Join,
    /// Group-by aggregation.
    Aggregate,
    /// Sinks.
    Write,
    /// Anything else.
    Other,
}

impl Phase {
    /// Label used in the phase table.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Setup => "set-up",
            Phase::Read => "read",
            Phase::Shuffle => "partition+shuffle",
            Phase::Join => "join",
            Phase::Aggregate => "aggregate",
            Phase::Write => "write",
            Phase::Other => "other",
        }
    }
}

/// One input of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputPlan {
    /// Index of the producing stage (must come earlier in the plan).
    pub from: usize,
    /// True: the producer on every rank sends to this stage (its output is partitioned by rank).
    /// False: only the producer on the same rank does.
    pub exchange: bool,
}

/// One stage: an operator and where its inputs come from.
pub struct StagePlan {
    /// Unique name (the pipeline's stage name, or a generated one such as `joined.left.shuffle`).
    pub name: String,
    /// Phase it is accounted to.
    pub phase: Phase,
    /// The operator.
    pub operator: Box<dyn Operator>,
    /// Inputs in port order.
    pub inputs: Vec<InputPlan>,
    /// `Some((stage, port))`: this stage (a source) starts only once input `port` of that
    /// stage has ended on this worker, so that its rows are not held while that input is
    /// still arriving (a hash join's probe side waits for its build side). `None`: it starts
    /// with the job.
    pub start_after: Option<(usize, usize)>,
}

/// A whole plan in topological order.
#[derive(Default)]
pub struct PhysicalPlan {
    /// Stages; a stage's inputs refer to earlier stages.
    pub stages: Vec<StagePlan>,
}

/// An edge between two stages, numbered in (consumer stage, input port) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Channel id.
    pub id: EdgeId,
    /// Producing stage.
    pub from: usize,
    /// Consuming stage.
    pub to: usize,
    /// Input port of the consumer.
    pub port: usize,
    /// Every rank's producer sends to it.
    pub exchange: bool,
}

impl PhysicalPlan {
    /// The plan's edges, checking that inputs refer to earlier stages.
    ///
    /// # Errors
    /// [`JobError::Plan`] if a stage reads itself or a later stage.
    pub fn edges(&self) -> Result<Vec<Edge>, JobError> {
        let mut edges = Vec::new();
        for (to, stage) in self.stages.iter().enumerate() {
            if let Some((after, port)) = stage.start_after
                && self.stages.get(after).is_none_or(|s| port >= s.inputs.len())
            {
                return Err(JobError::Plan(format!(
                    "stage `{}` starts after input {port} of stage {after}, which does not exist",
                    stage.name
                )));
            }
            for (port, input) in stage.inputs.iter().enumerate() {
                if input.from >= to {
                    return Err(JobError::Plan(format!(
                        "stage `{}` reads stage {} which does not come before it",
                        stage.name, input.from
                    )));
                }
                edges.push(Edge {
                    id: EdgeId(edges.len() as u32),
                    from: input.from,
                    to,
                    port,
                    exchange: input.exchange,
                });
            }
        }
        Ok(edges)
    }

    /// A one-line-per-stage description, for `explain`-style output and logs.
    pub fn describe(&self) -> Vec<String> {
        self.stages
            .iter()
            .map(|s| {
                let inputs: Vec<String> = s
                    .inputs
                    .iter()
                    .map(|i| {
                        let from = self.stages.get(i.from).map_or("?", |st| st.name.as_str());
                        if i.exchange { format!("{from} (all ranks)") } else { from.to_string() }
                    })
                    .collect();
                let after = s.start_after.map_or_else(String::new, |(stage, port)| {
                    let name = self.stages.get(stage).map_or("?", |st| st.name.as_str());
                    format!(", starts after input {port} of {name} ended")
                });
                format!(
                    "{} [{}] <- {}{after}",
                    s.name,
                    s.phase.label(),
                    if inputs.is_empty() { "-".to_string() } else { inputs.join(", ") }
                )
            })
            .collect()
    }
}
