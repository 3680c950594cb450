//! Column checks before a run: unknown columns and type mismatches, found by running each
//! stage's real operator on an empty batch of its input schema.
//!
//! Source schemas come from the source itself: the generator's fixed columns, or the schema
//! the files of a file source agree on, found exactly as a job finds it
//! ([`crate::inputs::resolve_here`]: every file's footer or header, the unify rules); a
//! pattern or directory that matches nothing and files that disagree are problems at the
//! source's key path. Every later stage is built exactly as a worker builds it
//! and fed one empty batch per input, then the end of each input; the schema of what it emits
//! feeds the stages after it. Operators check their columns and types when they first see a
//! schema, so the errors are the ones a run would give, only earlier and without data. A stage
//! whose input schema is unknown (an unreadable file, say) is not checked, and neither is
//! anything after it. Sinks are never run: each is asked to write one all-null row of its input
//! schema to memory ([`crate::sinks::check_writable`]), so a column its format cannot hold is
//! reported too.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use updraft_config::{PipelineSpec, SourceKind};
use updraft_runtime::plan::Phase;
use updraft_runtime::{Flow, OperatorError, Output};

use crate::inputs::{JobInputs, SourceInputs, resolve_here};
use crate::outputs::JobOutputs;
use crate::planner::{PlanContext, build_plan_with};
use crate::registry::Registry;

/// One problem, at the key path of the stage it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `operator.joined`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Calls allowed to an operator's `resume` on empty input before the check gives up on it.
const MAX_RESUMES: usize = 1000;

/// What [`check_columns`] found.
#[derive(Debug, Default)]
pub struct ColumnCheck {
    /// Unknown columns, type mismatches and the like.
    pub problems: Vec<Problem>,
    /// Sources whose files could not be listed or read because a service (S3, credentials)
    /// could not be reached: the stages after them were not checked. Not an error before a
    /// run; the run will fail if it persists.
    pub unchecked: Vec<Problem>,
    /// The files and agreed schema of every source that could be read.
    pub inputs: JobInputs,
    /// Every stage of rank 0's plan, in plan order, with the schema of what it emits (a sink:
    /// what it writes); `None` where it could not be found (an earlier problem).
    pub schemas: Vec<(String, Option<SchemaRef>)>,
}

/// Checks the columns of every stage of `spec` planned for `world` workers.
pub fn check_columns(spec: &PipelineSpec, world: u32, registry: &Registry) -> ColumnCheck {
    let world = world.max(1);
    let resolution = resolve_here(spec, world);
    let mut problems: Vec<Problem> =
        resolution.problems.into_iter().map(|p| Problem { path: p.path, message: p.message }).collect();
    let unchecked: Vec<Problem> =
        resolution.unchecked.into_iter().map(|p| Problem { path: p.path, message: p.message }).collect();
    let known = resolution.inputs;
    // Sources that could not be agreed are planned with no files; their stages are skipped.
    let mut inputs = known.clone();
    for s in &spec.sources {
        if matches!(s.kind, SourceKind::Files { .. }) && !inputs.sources.contains_key(&s.name) {
            let empty =
                SourceInputs { files: Vec::new(), per_rank: false, schema: Arc::new(Schema::empty()) };
            inputs.sources.insert(s.name.clone(), empty);
        }
    }
    let outputs = JobOutputs::new(spec, 0, world, "0000000000000000");
    let memory = updraft_runtime::MemoryPool::unbounded();
    let ctx = PlanContext { rank: 0, world, inputs: &inputs, outputs: &outputs, memory: &memory };
    let plan = match build_plan_with(spec, ctx, registry) {
        Ok(p) => p,
        Err(e) => {
            problems.push(Problem { path: String::new(), message: e.to_string() });
            return ColumnCheck { problems, unchecked, inputs: known, schemas: Vec::new() };
        }
    };
    let scans = crate::pushdown::scans(spec);
    let owner = owners(spec);
    let path_of = |stage: &str| {
        let base = stage.split('.').next().unwrap_or(stage);
        owner.get(base).cloned().unwrap_or_default()
    };
    let mut schemas: Vec<Option<SchemaRef>> = Vec::with_capacity(plan.stages.len());
    let mut written: Vec<(String, Option<SchemaRef>)> = Vec::with_capacity(plan.stages.len());
    for mut stage in plan.stages {
        let schema = if stage.inputs.is_empty() {
            match spec.sources.iter().find(|s| s.name == stage.name).map(|s| &s.kind) {
                Some(SourceKind::Generate { .. }) => Some(crate::generate::schema()),
                // Projected as the run projects it.
                Some(SourceKind::Files { .. }) => known.sources.get(&stage.name).map(|i| {
                    scans.get(&stage.name).map_or_else(|| Arc::clone(&i.schema), |s| s.project(&i.schema))
                }),
                None => None,
            }
        } else if stage.phase == Phase::Write {
            // Sinks are not run; their writers are asked whether they can hold every column.
            let input = stage.inputs.first().and_then(|i| schemas.get(i.from).cloned().flatten());
            if let (Some(schema), Some(sink)) = (&input, spec.sinks.iter().find(|s| s.name == stage.name))
                && let Err(e) = crate::sinks::check_writable(&sink.name, &sink.kind, schema)
            {
                problems.push(Problem { path: path_of(&stage.name), message: e.to_string() });
            }
            written.push((stage.name.clone(), input));
            schemas.push(None);
            continue;
        } else {
            let inputs: Option<Vec<SchemaRef>> =
                stage.inputs.iter().map(|i| schemas.get(i.from).cloned().flatten()).collect();
            match inputs {
                Some(inputs) => match dry_run(stage.operator.as_mut(), &inputs) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(Problem { path: path_of(&stage.name), message: e.to_string() });
                        None
                    }
                },
                None => None,
            }
        };
        written.push((stage.name.clone(), schema.clone()));
        schemas.push(schema);
    }
    ColumnCheck { problems, unchecked, inputs: known, schemas: written }
}

/// Key path of every stage name: `source.NAME`, `operator.NAME`, `sink.NAME`.
fn owners(spec: &PipelineSpec) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for s in &spec.sources {
        m.insert(s.name.clone(), format!("source.{}", s.name));
    }
    for o in &spec.operators {
        m.insert(o.name.clone(), format!("operator.{}", o.name));
    }
    for s in &spec.sinks {
        m.insert(s.name.clone(), format!("sink.{}", s.name));
    }
    m
}

fn dry_run(
    op: &mut dyn updraft_runtime::Operator,
    inputs: &[SchemaRef],
) -> Result<Option<SchemaRef>, OperatorError> {
    let mut out = Output::default();
    for (port, schema) in inputs.iter().enumerate() {
        op.on_batch(port, RecordBatch::new_empty(Arc::clone(schema)), &mut out)?;
    }
    let mut first = out.drain().next().map(|(_, b)| b.schema());
    for port in 0..inputs.len() {
        let mut flow = op.on_end(port, &mut out)?;
        let mut calls = 0;
        while flow == Flow::More && calls < MAX_RESUMES {
            flow = op.resume(&mut out)?;
            calls += 1;
        }
        if first.is_none() {
            first = out.drain().next().map(|(_, b)| b.schema());
        }
    }
    Ok(first)
}
