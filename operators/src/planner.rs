//! Pipeline spec → physical plan. Every worker runs this with the same spec and gets the same
//! stages in the same order, so stage indices and edge ids agree across the job.
//!
//! Stages come out in topological order: sources, then operators (each after its inputs), then
//! sinks. A join gets a shuffle stage in front of each input (`<join>.shuffle-left`,
//! `<join>.shuffle-right`), and any stage that reads a shuffle reads it from every rank.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use updraft_config::{JoinAlgorithm, JoinBuild, OperatorKind, PipelineSpec, SetOpKind, SinkKind, SourceKind};
use updraft_runtime::plan::{InputPlan, Phase, PhysicalPlan, StagePlan};
use updraft_runtime::{JobError, MemoryPool};

use crate::expr::{Filter, Project};
use crate::files::FileSource;
use crate::generate::{Generate, GenerateSpec};
use crate::groupby::{Agg, GroupBy, GroupParams, Mode, decomposable};
use crate::head::{GatherHead, LocalHead, RoundRobin, RowRange};
use crate::inputs::JobInputs;
use crate::join::{Join, JoinParams};
use crate::outputs::JobOutputs;
use crate::registry::{BuildContext, Registry};
use crate::setops::{SetKind, SetOp};
use crate::shuffle::Shuffle;
use crate::sinks::{FileSink, SummarySink};
use crate::sort::{LocalSort, RangePartition, Sampler, SortKey};

/// Where the plan runs, and what the job agreed before it started.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// This worker's rank.
    pub rank: u32,
    /// Number of workers.
    pub world: u32,
    /// The files and agreed schema of every file source (see [`crate::inputs`]).
    pub inputs: &'a JobInputs,
    /// This rank's file outputs in this run (see [`crate::outputs`]).
    pub outputs: &'a Arc<JobOutputs>,
    /// The worker's memory budget, which joins, sorts, group-bys and set operations reserve
    /// from and spill under.
    pub memory: &'a Arc<MemoryPool>,
}

struct Builder {
    plan: PhysicalPlan,
    index: HashMap<String, usize>,
    shuffles: Vec<bool>,
}

impl Builder {
    fn push(
        &mut self,
        name: String,
        phase: Phase,
        operator: Box<dyn updraft_runtime::Operator>,
        inputs: &[usize],
    ) -> usize {
        let inputs = inputs.iter().map(|&from| InputPlan { from, exchange: self.shuffles[from] }).collect();
        let i = self.plan.stages.len();
        self.shuffles.push(false);
        self.plan.stages.push(StagePlan { name: name.clone(), phase, operator, inputs, start_after: None });
        self.index.insert(name, i);
        i
    }

    /// The source stages `stage` reads from, directly or not (itself if it is one).
    fn sources_of(&self, stage: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut sources = BTreeSet::new();
        let mut todo = vec![stage];
        while let Some(s) = todo.pop() {
            if !seen.insert(s) {
                continue;
            }
            let inputs = &self.plan.stages[s].inputs;
            if inputs.is_empty() {
                sources.insert(s);
            }
            todo.extend(inputs.iter().map(|i| i.from));
        }
        sources
    }

    /// The sources that input `port` of `stage` waits for: those it reads, and, for each of
    /// them that starts after another input ends, the sources that input waits for.
    fn waits_for(&self, stage: usize, port: usize) -> BTreeSet<usize> {
        let mut all = BTreeSet::new();
        let mut todo = vec![(stage, port)];
        while let Some((s, p)) = todo.pop() {
            for src in self.sources_of(self.plan.stages[s].inputs[p].from) {
                if all.insert(src)
                    && let Some(after) = self.plan.stages[src].start_after
                {
                    todo.push(after);
                }
            }
        }
        all
    }

    /// Makes the sources only the probe side of hash join `join` reads start once its build
    /// input `build` has ended on this worker, so that probe batches stream through the table
    /// instead of piling up while it is built. A source the build side reads (a self-join), or
    /// that already waits for another join, starts as it would; so does one whose wait could
    /// close a circle (a build side that waits, through other joins, for this probe side).
    fn start_probe_after_build(&mut self, join: usize, build: usize) {
        let probe_from = self.plan.stages[join].inputs[1 - build].from;
        let build_waits = self.waits_for(join, build);
        for s in self.sources_of(probe_from) {
            if self.plan.stages[s].start_after.is_none() && !build_waits.contains(&s) {
                self.plan.stages[s].start_after = Some((join, build));
            }
        }
    }

    fn lookup(&self, name: &str) -> Result<usize, JobError> {
        self.index.get(name).copied().ok_or_else(|| JobError::Plan(format!("unknown stage `{name}`")))
    }
}

/// Total size of `files` when all are local and readable (objects in S3 are not sized here).
fn local_bytes(files: &[crate::storage::Location]) -> Option<u64> {
    files
        .iter()
        .map(|f| match f {
            crate::storage::Location::Local(path) => std::fs::metadata(path).ok().map(|m| m.len()),
            crate::storage::Location::S3 { .. } => None,
        })
        .sum()
}

/// Builds the plan for one worker, with the built-in operators only.
///
/// # Errors
/// As for [`build_plan_with`].
pub fn build_plan(spec: &PipelineSpec, ctx: PlanContext) -> Result<PhysicalPlan, JobError> {
    build_plan_with(spec, ctx, &Registry::new())
}

/// Builds the plan for one worker; registered operators come from `registry`.
///
/// # Errors
/// [`JobError::Plan`] if the spec refers to unknown stages or has a cycle (a validated spec
/// has neither), or a registered operator cannot be built.
pub fn build_plan_with(
    spec: &PipelineSpec,
    ctx: PlanContext,
    registry: &Registry,
) -> Result<PhysicalPlan, JobError> {
    let batch_rows = spec.runtime.batch_rows;
    let mut b = Builder { plan: PhysicalPlan::default(), index: HashMap::new(), shuffles: Vec::new() };
    let scans = crate::pushdown::scans(spec);
    // Input bytes of each source stage, for the choice of a join's build side (`None`:
    // unknown).
    let mut source_bytes: Vec<Option<u64>> = Vec::new();
    for s in &spec.sources {
        source_bytes.push(match &s.kind {
            SourceKind::Generate { rows, .. } => rows.checked_mul(16),
            SourceKind::Files { .. } => ctx.inputs.sources.get(&s.name).and_then(|i| local_bytes(&i.files)),
        });
        let op: Box<dyn updraft_runtime::Operator> = match &s.kind {
            SourceKind::Generate { rows, unique_factor, seed } => Box::new(Generate::new(GenerateSpec {
                rows: *rows,
                unique_factor: *unique_factor,
                seed: *seed,
                rank: ctx.rank,
                world: ctx.world,
                batch_rows,
            })),
            SourceKind::Files { format, .. } => {
                let Some(inputs) = ctx.inputs.sources.get(&s.name) else {
                    return Err(JobError::Plan(format!(
                        "source `{}`: the job agreed no files for it",
                        s.name
                    )));
                };
                let mut source = FileSource::new(
                    &s.name,
                    format.clone(),
                    inputs.share(ctx.rank, ctx.world),
                    Arc::clone(&inputs.schema),
                    batch_rows,
                );
                if let Some(scan) = scans.get(&s.name) {
                    source = source.with_scan(scan);
                }
                Box::new(source)
            }
        };
        b.push(s.name.clone(), Phase::Read, op, &[]);
    }
    // Stages whose rows are all on rank 0 by plan: a head, a whole-table aggregate, and
    // filters and projections of those.
    let mut on_rank0: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut remaining: Vec<&updraft_config::OperatorSpec> = spec.operators.iter().collect();
    while !remaining.is_empty() {
        let ready = remaining.iter().position(|o| o.kind.inputs().iter().all(|i| b.index.contains_key(*i)));
        let Some(pos) = ready else {
            let names: Vec<&str> = remaining.iter().map(|o| o.name.as_str()).collect();
            return Err(JobError::Plan(format!(
                "operators {names:?} wait on each other or on unknown stages"
            )));
        };
        let o = remaining.remove(pos);
        let gathered = match &o.kind {
            OperatorKind::Head { .. } => true,
            OperatorKind::GroupBy { keys, .. } => keys.is_empty(),
            OperatorKind::Filter { input, .. } | OperatorKind::Project { input, .. } => {
                on_rank0.contains(input.as_str())
            }
            _ => false,
        };
        if gathered {
            on_rank0.insert(o.name.as_str());
        }
        match &o.kind {
            OperatorKind::GroupBy { input, keys, aggregates, pre_aggregate } => {
                let aggs: Vec<Agg> = aggregates
                    .iter()
                    .map(|a| Agg {
                        func: a.func,
                        column: a.column.clone(),
                        output: a.output.clone(),
                        quantile: a.quantile,
                    })
                    .collect();
                let params = |name: &str| GroupParams {
                    name: name.to_string(),
                    keys: keys.clone(),
                    aggs: aggs.clone(),
                    batch_rows,
                    owns_whole_table: ctx.rank == 0,
                };
                let mut from = b.lookup(input)?;
                // One rank holds every group anyway: partial states would only be computed twice.
                let split = *pre_aggregate && decomposable(&aggs) && ctx.world > 1;
                if split {
                    let name = format!("{}.partial", o.name);
                    from = b.push(
                        name.clone(),
                        Phase::Aggregate,
                        Box::new(GroupBy::new(params(&name), Mode::Partial).with_memory(ctx.memory)),
                        &[from],
                    );
                }
                let shuffle = format!("{}.shuffle", o.name);
                let i = b.push(
                    shuffle.clone(),
                    Phase::Shuffle,
                    if keys.is_empty() {
                        Box::new(Shuffle::to_rank(&shuffle, 0, ctx.world))
                    } else {
                        Box::new(Shuffle::new(&shuffle, keys.clone(), ctx.world))
                    },
                    &[from],
                );
                b.shuffles[i] = true;
                let mode = if split { Mode::Final } else { Mode::Complete };
                let op = GroupBy::new(params(&o.name), mode).with_memory(ctx.memory);
                b.push(o.name.clone(), Phase::Aggregate, Box::new(op), &[i]);
            }
            OperatorKind::Sort { input, by } => {
                let keys: Vec<SortKey> = by
                    .iter()
                    .map(|k| SortKey {
                        column: k.column.clone(),
                        descending: k.descending,
                        nulls_first: k.nulls_first,
                    })
                    .collect();
                let from = b.lookup(input)?;
                let name = format!("{}.sample", o.name);
                let s = b.push(
                    name.clone(),
                    Phase::Shuffle,
                    Box::new(Sampler::new(&name, keys.clone(), ctx.world)),
                    &[from],
                );
                b.shuffles[s] = true;
                let name = format!("{}.range", o.name);
                let r = b.push(
                    name.clone(),
                    Phase::Shuffle,
                    Box::new(RangePartition::with_memory(&name, keys.clone(), ctx.world, ctx.memory)),
                    &[s],
                );
                b.shuffles[r] = true;
                b.push(
                    o.name.clone(),
                    Phase::Other,
                    Box::new(LocalSort::new(&o.name, keys, batch_rows).with_memory(ctx.memory)),
                    &[r],
                );
            }
            OperatorKind::Head { input, rows, offset, from_end } => {
                let from = b.lookup(input)?;
                let range = RowRange {
                    offset: usize::try_from(*offset).unwrap_or(usize::MAX),
                    rows: usize::try_from(*rows).unwrap_or(usize::MAX),
                    from_end: *from_end,
                };
                let name = format!("{}.local", o.name);
                let l = b.push(name, Phase::Other, Box::new(LocalHead::new(range, ctx.rank)), &[from]);
                b.shuffles[l] = true;
                b.push(o.name.clone(), Phase::Other, Box::new(GatherHead::new(range)), &[l]);
            }
            OperatorKind::Repartition { input, keys } => {
                let from = b.lookup(input)?;
                let op: Box<dyn updraft_runtime::Operator> = if keys.is_empty() {
                    Box::new(RoundRobin::new(ctx.rank, ctx.world))
                } else {
                    Box::new(Shuffle::new(&o.name, keys.clone(), ctx.world))
                };
                let i = b.push(o.name.clone(), Phase::Shuffle, op, &[from]);
                b.shuffles[i] = true;
            }
            OperatorKind::Filter { input, predicate } => {
                let from = b.lookup(input)?;
                b.push(
                    o.name.clone(),
                    Phase::Other,
                    Box::new(Filter::new(&o.name, predicate.clone())),
                    &[from],
                );
            }
            OperatorKind::Project { input, columns } => {
                let from = b.lookup(input)?;
                b.push(
                    o.name.clone(),
                    Phase::Other,
                    Box::new(Project::new(&o.name, columns.clone())),
                    &[from],
                );
            }
            OperatorKind::Set { op, inputs } => {
                let kind = match op {
                    SetOpKind::UnionAll => SetKind::UnionAll,
                    SetOpKind::UnionDistinct => SetKind::UnionDistinct,
                    SetOpKind::Intersect => SetKind::Intersect,
                    SetOpKind::Subtract => SetKind::Subtract,
                    SetOpKind::Distinct { columns } => SetKind::Distinct { columns: columns.clone() },
                };
                let mut from = Vec::new();
                for (n, input) in inputs.iter().enumerate() {
                    let producer = b.lookup(input)?;
                    if kind == SetKind::UnionAll {
                        from.push(producer);
                        continue;
                    }
                    // Equal rows must meet: shuffle on the compared columns (none = whole rows).
                    let keys = match &kind {
                        SetKind::Distinct { columns } => columns.clone(),
                        _ => Vec::new(),
                    };
                    let name = format!("{}.shuffle-{n}", o.name);
                    let i = b.push(
                        name.clone(),
                        Phase::Shuffle,
                        Box::new(Shuffle::new(&name, keys, ctx.world)),
                        &[producer],
                    );
                    b.shuffles[i] = true;
                    from.push(i);
                }
                let op = SetOp::new(&o.name, kind, from.len()).with_memory(ctx.memory);
                b.push(o.name.clone(), Phase::Other, Box::new(op), &from);
            }
            OperatorKind::Shuffle { input, keys } => {
                let from = b.lookup(input)?;
                let i = b.push(
                    o.name.clone(),
                    Phase::Shuffle,
                    Box::new(Shuffle::new(&o.name, keys.clone(), ctx.world)),
                    &[from],
                );
                b.shuffles[i] = true;
            }
            OperatorKind::Join(j) => {
                let sides = [b.lookup(&j.left)?, b.lookup(&j.right)?];
                let build = match j.build {
                    JoinBuild::Left => Some(0),
                    JoinBuild::Right => Some(1),
                    JoinBuild::Auto => {
                        let estimate = |stage: usize| {
                            b.sources_of(stage).iter().map(|&s| source_bytes[s]).sum::<Option<u64>>()
                        };
                        match (estimate(sides[0]), estimate(sides[1])) {
                            // Ties build on the right.
                            (Some(l), Some(r)) => Some(if l < r { 0 } else { 1 }),
                            _ => None,
                        }
                    }
                };
                let mut inputs = Vec::new();
                for (side, input, keys) in [("left", &j.left, &j.left_on), ("right", &j.right, &j.right_on)] {
                    let from = b.lookup(input)?;
                    let name = format!("{}.shuffle-{side}", o.name);
                    let i = b.push(
                        name.clone(),
                        Phase::Shuffle,
                        Box::new(Shuffle::new(&name, keys.clone(), ctx.world)),
                        &[from],
                    );
                    b.shuffles[i] = true;
                    inputs.push(i);
                }
                let params = JoinParams {
                    name: o.name.clone(),
                    left_on: j.left_on.clone(),
                    right_on: j.right_on.clone(),
                    suffixes: j.suffixes.clone(),
                    batch_rows,
                    how: j.how,
                    algorithm: j.algorithm,
                    build,
                };
                let at = b.push(
                    o.name.clone(),
                    Phase::Join,
                    Box::new(Join::new(params).with_memory(ctx.memory)),
                    &inputs,
                );
                if let Some(port) = build.filter(|_| j.algorithm == JoinAlgorithm::Hash) {
                    b.start_probe_after_build(at, port);
                }
            }
            OperatorKind::Custom(c) => {
                let Some(factory) = registry.get(&c.kind) else {
                    return Err(JobError::Plan(format!(
                        "`{}`: operator kind `{}` is not registered in this program",
                        o.name, c.kind
                    )));
                };
                let mut from = Vec::new();
                for (n, input) in c.inputs.iter().enumerate() {
                    let producer = b.lookup(input)?;
                    if c.partition_by.is_empty() {
                        from.push(producer);
                        continue;
                    }
                    let name = format!("{}.shuffle-{n}", o.name);
                    let i = b.push(
                        name.clone(),
                        Phase::Shuffle,
                        Box::new(Shuffle::new(&name, c.partition_by.clone(), ctx.world)),
                        &[producer],
                    );
                    b.shuffles[i] = true;
                    from.push(i);
                }
                let build = BuildContext {
                    name: &o.name,
                    rank: ctx.rank,
                    world: ctx.world,
                    batch_rows,
                    inputs: from.len(),
                    memory: ctx.memory,
                };
                let op = factory
                    .build(&c.params, &build)
                    .map_err(|e| JobError::Plan(format!("`{}`: cannot build `{}`: {e}", o.name, c.kind)))?;
                b.push(o.name.clone(), Phase::Other, op, &from);
            }
        }
    }
    for s in &spec.sinks {
        let from = b.lookup(&s.input)?;
        let op: Box<dyn updraft_runtime::Operator> = match &s.kind {
            SinkKind::Summary => Box::new(SummarySink::default()),
            SinkKind::File { format, compression, .. } => {
                let sink = FileSink::new(&s.name, format.clone(), *compression, Arc::clone(ctx.outputs));
                if ctx.rank != 0 && on_rank0.contains(s.input.as_str()) {
                    Box::new(sink.held_elsewhere())
                } else {
                    Box::new(sink)
                }
            }
        };
        b.push(s.name.clone(), Phase::Write, op, &[from]);
    }
    Ok(b.plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_get_a_shuffle_per_input() {
        let spec = updraft_config::parse_pipeline(
            r#"
[source.l]
kind = "generate"
rows = 10
[source.r]
kind = "generate"
rows = 10
[operator.j]
kind = "join"
left = "l"
right = "r"
on = ["key"]
[sink.s]
kind = "summary"
input = "j"
"#,
            "t",
        )
        .expect("valid");
        let inputs = JobInputs::default();
        let outputs = JobOutputs::new(&spec, 0, 2, "0000000000000000");
        let memory = MemoryPool::unbounded();
        let ctx = PlanContext { rank: 0, world: 2, inputs: &inputs, outputs: &outputs, memory: &memory };
        let plan = build_plan(&spec, ctx).expect("plan");
        assert_eq!(
            plan.describe(),
            vec![
                "l [read] <- -, starts after input 1 of j ended",
                "r [read] <- -",
                "j.shuffle-left [partition+shuffle] <- l",
                "j.shuffle-right [partition+shuffle] <- r",
                "j [join] <- j.shuffle-left (all ranks), j.shuffle-right (all ranks)",
                "s [write] <- j",
            ]
        );
        let edges = plan.edges().expect("edges");
        assert_eq!(edges.len(), 5);
        assert!(edges.iter().filter(|e| e.exchange).count() == 2);
    }

    /// Each stage's `start_after`, by name: (stage, waited-for stage, port).
    fn waits(toml: &str) -> Vec<(String, String, usize)> {
        let spec = updraft_config::parse_pipeline(toml, "t").expect("valid");
        let inputs = JobInputs::default();
        let outputs = JobOutputs::new(&spec, 0, 1, "0000000000000000");
        let memory = MemoryPool::unbounded();
        let ctx = PlanContext { rank: 0, world: 1, inputs: &inputs, outputs: &outputs, memory: &memory };
        let plan = build_plan(&spec, ctx).expect("plan");
        plan.stages
            .iter()
            .filter_map(|s| {
                s.start_after.map(|(j, port)| (s.name.clone(), plan.stages[j].name.clone(), port))
            })
            .collect()
    }

    #[test]
    fn a_probe_side_source_starts_after_the_build_side_ends() {
        let join = |l_rows: u64, r_rows: u64, extra: &str| {
            format!(
                "[source.l]\nkind = \"generate\"\nrows = {l_rows}\n[source.r]\nkind = \"generate\"\nrows = {r_rows}\n\
                 [operator.j]\nkind = \"join\"\nleft = \"l\"\nright = \"r\"\non = [\"key\"]\n{extra}\n\
                 [sink.s]\nkind = \"summary\"\ninput = \"j\"\n"
            )
        };
        let w = |s: &str, j: &str, p: usize| (s.to_string(), j.to_string(), p);
        // The smaller side builds (ties: the right); its sources are not held back.
        assert_eq!(waits(&join(10, 10, "")), vec![w("l", "j", 1)]);
        assert_eq!(waits(&join(5, 10, "")), vec![w("r", "j", 0)]);
        assert_eq!(waits(&join(5, 10, "build = \"right\"")), vec![w("l", "j", 1)]);
        assert_eq!(waits(&join(10, 10, "build = \"left\"")), vec![w("r", "j", 0)]);
        // Sort-merge needs both sides at once.
        assert_eq!(waits(&join(5, 10, "algorithm = \"sort_merge\"")), vec![]);
        // A self-join: the one source feeds the build side too.
        let own = "[source.l]\nkind = \"generate\"\nrows = 10\n[operator.j]\nkind = \"join\"\nleft = \"l\"\n\
                   right = \"l\"\non = [\"key\"]\n[sink.s]\nkind = \"summary\"\ninput = \"j\"\n";
        assert_eq!(waits(own), vec![]);
        // Two joins whose build sides are each other's probe sources: only the first waits.
        let crossed = "[source.a]\nkind = \"generate\"\nrows = 10\n[source.b]\nkind = \"generate\"\nrows = 10\n\
                       [operator.j1]\nkind = \"join\"\nleft = \"a\"\nright = \"b\"\non = [\"key\"]\n\
                       [operator.j2]\nkind = \"join\"\nleft = \"b\"\nright = \"a\"\non = [\"key\"]\n\
                       [operator.u]\nkind = \"union\"\ninputs = [\"j1\", \"j2\"]\n\
                       [sink.s]\nkind = \"summary\"\ninput = \"u\"\n";
        assert_eq!(waits(crossed), vec![w("a", "j1", 1)]);
    }
}
