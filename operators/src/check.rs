//! Column checks before a run: unknown columns and type mismatches, found by running each
//! stage's real operator on an empty batch of its input schema.
//!
//! Source schemas come from the source itself: the generator's fixed columns, a CSV schema
//! declared in the pipeline, or the first file of a file source (its footer or header; for an
//! S3 object, the object is fetched). Every later stage is built exactly as a worker builds it
//! and fed one empty batch per input, then the end of each input; the schema of what it emits
//! feeds the stages after it. Operators check their columns and types when they first see a
//! schema, so the errors are the ones a run would give, only earlier and without data. A stage
//! whose input schema is unknown (an unreadable file, say) is not checked, and neither is
//! anything after it; sinks are never run.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use updraft_config::{FileFormat, PipelineSpec, SourceKind};
use updraft_runtime::plan::Phase;
use updraft_runtime::{Flow, OperatorError, Output};

use crate::files::{csv_type, peek_schema};
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
    /// Sources whose schema could not be read (a file not written yet, say): the stages after
    /// them were not checked. Not an error before a run; the run will fail if it persists.
    pub unchecked: Vec<Problem>,
}

/// Checks the columns of every stage of `spec` planned for `world` workers.
pub fn check_columns(spec: &PipelineSpec, world: u32, registry: &Registry) -> ColumnCheck {
    let mut problems = Vec::new();
    let mut unchecked = Vec::new();
    let plan = match build_plan_with(spec, PlanContext { rank: 0, world: world.max(1) }, registry) {
        Ok(p) => p,
        Err(e) => {
            problems.push(Problem { path: String::new(), message: e.to_string() });
            return ColumnCheck { problems, unchecked };
        }
    };
    let owner = owners(spec);
    let path_of = |stage: &str| {
        let base = stage.split('.').next().unwrap_or(stage);
        owner.get(base).cloned().unwrap_or_default()
    };
    let mut schemas: Vec<Option<SchemaRef>> = Vec::with_capacity(plan.stages.len());
    for mut stage in plan.stages {
        let schema = if stage.inputs.is_empty() {
            match spec.sources.iter().find(|s| s.name == stage.name) {
                Some(source) => match source_schema(&source.name, &source.kind) {
                    Ok(s) => s,
                    Err(e) => {
                        unchecked.push(Problem { path: path_of(&stage.name), message: e.to_string() });
                        None
                    }
                },
                None => None,
            }
        } else if stage.phase == Phase::Write {
            None
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
        schemas.push(schema);
    }
    ColumnCheck { problems, unchecked }
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

/// The schema a source produces, when it can be known without reading rows.
///
/// # Errors
/// The first file cannot be read.
pub fn source_schema(name: &str, kind: &SourceKind) -> Result<Option<SchemaRef>, OperatorError> {
    match kind {
        SourceKind::Generate { .. } => Ok(Some(crate::generate::schema())),
        SourceKind::Files { format: FileFormat::Csv { schema: Some(cols), .. }, .. } => {
            let fields = cols
                .iter()
                .map(|(n, t)| Ok(Field::new(n, csv_type(t)?, true)))
                .collect::<Result<Vec<_>, OperatorError>>()?;
            Ok(Some(Arc::new(Schema::new(fields))))
        }
        SourceKind::Files { format, files } => {
            // A per-rank path is checked through rank 0's file.
            peek_schema(name, format, files)
        }
    }
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
