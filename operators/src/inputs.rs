//! One input list and one schema per source, agreed by the whole job before any data moves.
//!
//! ```text
//!  rank 0: list()                 expand every file source's paths, globs and directories once
//!     ──broadcast Listing──▶ every rank
//!  every rank: read_share()       check its own view of the listed files (local lists are
//!                                 listed again and must match), read the schema of each file
//!                                 it will read (footers, CSV headers with inference)
//!     ──allgather ShareReport──▶ every rank
//!  every rank: agree()            the same per-file schemas in file order → the same agreed
//!                                 schema per source (crate::unify), or the same error
//! ```
//!
//! Each rank's share is a function of the agreed list alone: file `i` of a list goes to rank
//! `i % world`; a per-rank path (`{rank}`) gives rank `r` file `r`. `validate` runs the same
//! three steps on one machine ([`resolve_here`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use updraft_config::{FileFormat, MissingColumns, PipelineSpec, SourceFiles, SourceKind};
use updraft_runtime::{FailureClass, OperatorError};

use crate::files::read_schema;
use crate::outputs::existing_parts;
use crate::storage::{Location, expand};
use crate::unify::unify;

/// The files of one source for the whole job, and the schema they agreed on.
#[derive(Debug, Clone)]
pub struct SourceInputs {
    /// Every file of the source, in the job's order.
    pub files: Vec<Location>,
    /// One file per rank (`{rank}` in the path): file `r` is rank `r`'s.
    pub per_rank: bool,
    /// The agreed schema every batch of the source has.
    pub schema: SchemaRef,
}

impl SourceInputs {
    /// The files rank `rank` of `world` reads.
    pub fn share(&self, rank: u32, world: u32) -> Vec<Location> {
        share(&self.files, self.per_rank, rank, world)
    }
}

fn share<T: Clone>(files: &[T], per_rank: bool, rank: u32, world: u32) -> Vec<T> {
    if per_rank {
        return files.get(rank as usize).cloned().into_iter().collect();
    }
    files
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as u64) % u64::from(world.max(1)) == u64::from(rank))
        .map(|(_, f)| f.clone())
        .collect()
}

/// The agreed inputs of every file source of a job, by source name.
#[derive(Debug, Clone, Default)]
pub struct JobInputs {
    /// By source name.
    pub sources: BTreeMap<String, SourceInputs>,
}

/// One problem, at the key path it belongs to (`source.NAME`, `sink.NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Rank 0's listing: every file source's files, in order (local paths as this worker wrote
/// them, objects as `s3://` URLs). Sent to every rank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// `(source, files)` in the pipeline's source order.
    pub sources: Vec<(String, Vec<String>)>,
}

fn file_sources(
    spec: &PipelineSpec,
) -> impl Iterator<Item = (&str, &FileFormat, &SourceFiles, MissingColumns)> {
    spec.sources.iter().filter_map(|s| match &s.kind {
        SourceKind::Files { format, files, missing_columns } => {
            Some((s.name.as_str(), format, files, *missing_columns))
        }
        SourceKind::Generate { .. } => None,
    })
}

/// Expands one source's files for `world` ranks.
fn list_source(format: &FileFormat, files: &SourceFiles, world: u32) -> Result<Vec<Location>, OperatorError> {
    match files {
        SourceFiles::PerRank(pattern) => {
            (0..world.max(1)).map(|r| Location::parse(&pattern.replace("{rank}", &r.to_string()))).collect()
        }
        SourceFiles::List(list) => expand(list, format.extensions()),
    }
}

/// Step 1, on rank 0 (or the launcher): lists every file source once, and checks that no
/// `error_if_exists` sink has part files already.
///
/// # Errors
/// Every problem: patterns and directories matching nothing, missing files, listing failures
/// ([`OperatorError::Unavailable`] ones are told apart by [`ListError::unavailable`]).
pub fn list(spec: &PipelineSpec, world: u32) -> Result<Listing, ListError> {
    let mut listing = Listing::default();
    let mut err = ListError::default();
    for (name, format, files, _) in file_sources(spec) {
        match list_source(format, files, world) {
            Ok(found) => {
                listing.sources.push((name.to_string(), found.iter().map(ToString::to_string).collect()))
            }
            Err(e) => err.push(format!("source.{name}"), e),
        }
    }
    if let Some((sink, message)) = crate::outputs::sink_conflict(spec) {
        err.push(format!("sink.{sink}"), OperatorError::Invalid(message));
    }
    for sink in &spec.sinks {
        if let updraft_config::SinkKind::File {
            path, mode: updraft_config::WriteMode::ErrorIfExists, ..
        } = &sink.kind
        {
            match existing_parts(path) {
                Ok(found) if !found.is_empty() => err.push(
                    format!("sink.{}", sink.name),
                    OperatorError::Invalid(format!(
                        "mode = \"error_if_exists\" and {} exists (with {} other part file{}); remove them or \
                         choose mode = \"overwrite\" or \"append\"",
                        found[0],
                        found.len() - 1,
                        if found.len() == 2 { "" } else { "s" }
                    )),
                ),
                Ok(_) => {}
                Err(e) => err.push(format!("sink.{}", sink.name), e),
            }
        }
    }
    if err.problems.is_empty() && err.unavailable.is_empty() { Ok(listing) } else { Err(err) }
}

/// What [`list`] could not do.
#[derive(Debug, Default)]
pub struct ListError {
    /// Definite problems with the pipeline or its inputs.
    pub problems: Vec<Problem>,
    /// Listings that failed because a service could not be reached (checked again at run time).
    pub unavailable: Vec<Problem>,
}

impl ListError {
    fn push(&mut self, path: String, e: OperatorError) {
        let p = Problem { path, message: e.to_string() };
        match e {
            OperatorError::Unavailable(_) => self.unavailable.push(p),
            _ => self.problems.push(p),
        }
    }

    /// Every problem, one per line.
    pub fn messages(&self) -> Vec<String> {
        self.problems.iter().chain(&self.unavailable).map(|p| format!("{}: {}", p.path, p.message)).collect()
    }

    /// As an [`AgreeError`]: every problem; `Unavailable` when only services failed.
    pub fn to_agree_error(&self) -> AgreeError {
        let class = if self.problems.is_empty() { FailureClass::Unavailable } else { FailureClass::Config };
        AgreeError { class, problems: self.messages() }
    }
}

/// One file's schema, as one rank read it.
#[derive(Debug, Clone)]
pub struct FileSchema {
    /// Source name.
    pub source: String,
    /// Index of the file in the source's listed files.
    pub index: u32,
    /// Its schema.
    pub schema: SchemaRef,
}

/// What one rank found about its share of the inputs.
#[derive(Debug, Clone, Default)]
pub struct ShareReport {
    /// Problems: files it cannot see or read, a local view that differs from the listing.
    pub problems: Vec<String>,
    /// Some problem came from a service that could not be reached (a rerun may succeed).
    pub unavailable: bool,
    /// The schema of each file it will read.
    pub schemas: Vec<FileSchema>,
}

/// Step 2, on every rank: checks this rank's view of `listing` and reads the schema of every
/// file it will read. For sources listed from local paths, the rank lists them again: a
/// file the listing names but this rank cannot see, or one it sees but the listing lacks, is
/// a problem naming the file (workers of one job must read one set of files).
pub fn read_share(spec: &PipelineSpec, listing: &Listing, rank: u32, world: u32) -> ShareReport {
    let mut report = ShareReport::default();
    for (name, format, files, _) in file_sources(spec) {
        let Some((_, listed)) = listing.sources.iter().find(|(n, _)| n == name) else {
            report.problems.push(format!("source `{name}`: not in the job's listing"));
            continue;
        };
        let per_rank = matches!(files, SourceFiles::PerRank(_));
        if rank != 0
            && let SourceFiles::List(entries) = files
            && entries.iter().all(|e| !e.starts_with("s3://"))
        {
            match expand(entries, format.extensions()) {
                Ok(mine) => {
                    let mine: Vec<String> = mine.iter().map(ToString::to_string).collect();
                    if let Some(f) = listed.iter().find(|f| !mine.contains(f)) {
                        report.problems.push(format!(
                            "source `{name}`: {f} is listed by rank 0 but does not exist on rank {rank}; every \
                             worker must see the same files"
                        ));
                        continue;
                    }
                    if let Some(f) = mine.iter().find(|f| !listed.contains(f)) {
                        report.problems.push(format!(
                            "source `{name}`: {f} exists on rank {rank} but rank 0 does not see it; every worker \
                             must see the same files"
                        ));
                        continue;
                    }
                }
                Err(e) => {
                    report.problems.push(format!("source `{name}` on rank {rank}: {e}"));
                    continue;
                }
            }
        }
        let indices: Vec<u32> = share(&(0..listed.len() as u32).collect::<Vec<_>>(), per_rank, rank, world);
        for index in indices {
            let file = &listed[index as usize];
            let schema = Location::parse(file).and_then(|at| read_schema(name, format, &at));
            match schema {
                Ok(schema) => report.schemas.push(FileSchema { source: name.to_string(), index, schema }),
                Err(e) => {
                    report.unavailable |= matches!(e, OperatorError::Unavailable(_));
                    report.problems.push(format!("rank {rank}: {e}"));
                }
            }
        }
    }
    report
}

/// Why a job's inputs could not be agreed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.join("; "))]
pub struct AgreeError {
    /// `Config` (the inputs are wrong) or `Unavailable` (a service could not be reached).
    pub class: FailureClass,
    /// Every problem found, naming the rank and file.
    pub problems: Vec<String>,
}

/// Step 3, on every rank: the agreed inputs from every rank's report (in rank order).
///
/// # Errors
/// Every rank's problems, or the first schema conflict of a source in file order.
pub fn agree(
    spec: &PipelineSpec,
    listing: &Listing,
    reports: &[ShareReport],
) -> Result<JobInputs, AgreeError> {
    let problems: Vec<String> = reports.iter().flat_map(|r| r.problems.iter().cloned()).collect();
    if !problems.is_empty() {
        let unavailable = reports.iter().any(|r| r.unavailable);
        let class = if unavailable { FailureClass::Unavailable } else { FailureClass::Config };
        return Err(AgreeError { class, problems });
    }
    let mut inputs = JobInputs::default();
    let mut errors = Vec::new();
    for (name, _, files, missing) in file_sources(spec) {
        let Some((_, listed)) = listing.sources.iter().find(|(n, _)| n == name) else { continue };
        let mut schemas: Vec<Option<SchemaRef>> = vec![None; listed.len()];
        for s in reports.iter().flat_map(|r| &r.schemas).filter(|s| s.source == name) {
            if let Some(slot) = schemas.get_mut(s.index as usize) {
                *slot = Some(Arc::clone(&s.schema));
            }
        }
        let mut named = Vec::with_capacity(listed.len());
        for (file, schema) in listed.iter().zip(schemas) {
            match schema {
                Some(s) => named.push((file.clone(), s)),
                None => errors.push(format!("source `{name}`: no rank read the schema of {file}")),
            }
        }
        if named.len() != listed.len() {
            continue;
        }
        let schema = if named.is_empty() {
            // A per-rank path always names a file; only an empty list gets here.
            Arc::new(arrow_schema::Schema::empty())
        } else {
            match unify(name, &named, missing) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            }
        };
        let files_at: Result<Vec<Location>, OperatorError> =
            listed.iter().map(|f| Location::parse(f)).collect();
        match files_at {
            Ok(files_at) => {
                let per_rank = matches!(files, SourceFiles::PerRank(_));
                inputs.sources.insert(name.to_string(), SourceInputs { files: files_at, per_rank, schema });
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(AgreeError { class: FailureClass::Config, problems: errors })
    }
}

/// What [`resolve_here`] found.
#[derive(Debug, Default)]
pub struct Resolution {
    /// The agreed inputs of every source that could be read and agreed.
    pub inputs: JobInputs,
    /// Definite problems, at their key paths.
    pub problems: Vec<Problem>,
    /// Sources that could not be checked because a service could not be reached.
    pub unchecked: Vec<Problem>,
}

/// The three steps on one machine, reading every file (as `validate` and the local launcher
/// do before starting anything): the same answers the job will reach, or the same errors,
/// each at its key path.
pub fn resolve_here(spec: &PipelineSpec, world: u32) -> Resolution {
    let mut out = Resolution::default();
    let listing = match list(spec, world) {
        Ok(l) => l,
        Err(e) => {
            out.problems = e.problems;
            out.unchecked = e.unavailable;
            return out;
        }
    };
    let mut inputs = JobInputs::default();
    for (name, format, files, missing) in file_sources(spec) {
        let path = format!("source.{name}");
        let Some((_, listed)) = listing.sources.iter().find(|(n, _)| n == name) else { continue };
        let mut named = Vec::with_capacity(listed.len());
        let mut at = Vec::with_capacity(listed.len());
        let mut failed = false;
        for file in listed {
            match Location::parse(file).and_then(|l| read_schema(name, format, &l).map(|s| (l, s))) {
                Ok((l, s)) => {
                    at.push(l);
                    named.push((file.clone(), s));
                }
                Err(e) => {
                    let p = Problem { path: path.clone(), message: e.to_string() };
                    if matches!(e, OperatorError::Unavailable(_)) {
                        out.unchecked.push(p);
                    } else {
                        out.problems.push(p);
                    }
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        match unify(name, &named, missing) {
            Ok(schema) => {
                let per_rank = matches!(files, SourceFiles::PerRank(_));
                inputs.sources.insert(name.to_string(), SourceInputs { files: at, per_rank, schema });
            }
            Err(e) => out.problems.push(Problem { path, message: e.to_string() }),
        }
    }
    out.inputs = inputs;
    out
}

/// The agreement's messages on the wire (rkyv, checked on receipt): rank 0's listing (or why
/// there is none), and each rank's share report (schemas as Arrow IPC schema messages).
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum AgreeMsg {
    Listing { sources: Vec<(String, Vec<String>)>, problems: Vec<String>, unavailable: bool },
    Share { problems: Vec<String>, unavailable: bool, schemas: Vec<(String, u32, Vec<u8>)> },
}

fn encode(msg: &AgreeMsg) -> Result<Vec<u8>, String> {
    rkyv::to_bytes::<rkyv::rancor::Error>(msg).map(|v| v.into_vec()).map_err(|e| e.to_string())
}

fn decode(bytes: &[u8]) -> Result<AgreeMsg, String> {
    // Received bytes may sit anywhere: copy into an aligned buffer before the checked read.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<AgreeMsg, rkyv::rancor::Error>(&aligned)
        .map_err(|e| format!("a malformed agreement message: {e}"))
}

/// An Arrow schema as an IPC schema message.
fn encode_schema(schema: &SchemaRef) -> Result<Vec<u8>, String> {
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    w.into_inner().map_err(|e| e.to_string())
}

fn decode_schema(bytes: &[u8]) -> Result<SchemaRef, String> {
    updraft_runtime::actor::contain_panics("a schema", || {
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .map(|r| r.schema())
            .map_err(|e| format!("a malformed schema: {e}"))
    })
}

impl Listing {
    /// The listing as sent to every rank; `Err` carries rank 0's problems instead.
    ///
    /// # Errors
    /// If it cannot be encoded.
    pub fn to_bytes(listing: &Result<Listing, AgreeError>) -> Result<Vec<u8>, String> {
        let msg = match listing {
            Ok(l) => {
                AgreeMsg::Listing { sources: l.sources.clone(), problems: Vec::new(), unavailable: false }
            }
            Err(e) => AgreeMsg::Listing {
                sources: Vec::new(),
                problems: e.problems.clone(),
                unavailable: e.class == FailureClass::Unavailable,
            },
        };
        encode(&msg)
    }

    /// A listing received from rank 0: the listing, or rank 0's problems.
    ///
    /// # Errors
    /// Bytes that are not a listing.
    pub fn from_bytes(bytes: &[u8]) -> Result<Result<Listing, AgreeError>, String> {
        match decode(bytes)? {
            AgreeMsg::Listing { problems, unavailable, .. } if !problems.is_empty() => {
                let class = if unavailable { FailureClass::Unavailable } else { FailureClass::Config };
                Ok(Err(AgreeError { class, problems }))
            }
            AgreeMsg::Listing { sources, .. } => Ok(Ok(Listing { sources })),
            AgreeMsg::Share { .. } => Err("a share report where the listing was expected".into()),
        }
    }
}

impl ShareReport {
    /// The report as sent to every rank.
    ///
    /// # Errors
    /// If it cannot be encoded.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut schemas = Vec::with_capacity(self.schemas.len());
        for s in &self.schemas {
            schemas.push((s.source.clone(), s.index, encode_schema(&s.schema)?));
        }
        encode(&AgreeMsg::Share { problems: self.problems.clone(), unavailable: self.unavailable, schemas })
    }

    /// A report received from another rank.
    ///
    /// # Errors
    /// Bytes that are not a share report.
    pub fn from_bytes(bytes: &[u8]) -> Result<ShareReport, String> {
        match decode(bytes)? {
            AgreeMsg::Share { problems, unavailable, schemas } => {
                let mut out =
                    ShareReport { problems, unavailable, schemas: Vec::with_capacity(schemas.len()) };
                for (source, index, schema) in schemas {
                    out.schemas.push(FileSchema { source, index, schema: decode_schema(&schema)? });
                }
                Ok(out)
            }
            AgreeMsg::Listing { .. } => Err("a listing where a share report was expected".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_round_robin_or_per_rank() {
        let files: Vec<u32> = (0..5).collect();
        assert_eq!(share(&files, false, 0, 2), vec![0, 2, 4]);
        assert_eq!(share(&files, false, 1, 2), vec![1, 3]);
        assert!(share(&files, false, 3, 8).contains(&3));
        assert_eq!(share(&files, true, 3, 5), vec![3]);
        assert!(share(&files, true, 7, 8).is_empty());
    }

    #[test]
    fn agreement_messages_round_trip() {
        let listing = Listing { sources: vec![("a".into(), vec!["x.csv".into(), "s3://b/y.csv".into()])] };
        let bytes = Listing::to_bytes(&Ok(listing.clone())).expect("encode");
        assert_eq!(Listing::from_bytes(&bytes).expect("decode"), Ok(listing));
        let e = AgreeError { class: FailureClass::Unavailable, problems: vec!["no".into()] };
        let bytes = Listing::to_bytes(&Err(e.clone())).expect("encode");
        assert_eq!(Listing::from_bytes(&bytes).expect("decode"), Err(e));
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "k",
            arrow_schema::DataType::Int64,
            true,
        )]));
        let report = ShareReport {
            problems: vec!["p".into()],
            unavailable: false,
            schemas: vec![FileSchema { source: "a".into(), index: 1, schema: Arc::clone(&schema) }],
        };
        let back = ShareReport::from_bytes(&report.to_bytes().expect("encode")).expect("decode");
        assert_eq!(back.problems, report.problems);
        assert_eq!(back.schemas[0].schema, schema);
        assert!(ShareReport::from_bytes(b"garbage").is_err());
        assert!(Listing::from_bytes(&report.to_bytes().expect("encode")).is_err());
    }
}
