//! The pipeline spec: named sources, operators and sinks forming a DAG, read from TOML.
//!
//! ```toml
//! [job]
//! name = "example"
//!
//! [source.left]
//! kind = "generate"        # or "parquet", "csv", "ipc"
//! rows = 1000              # per worker
//!
//! [operator.joined]
//! kind = "join"
//! left = "left"
//! right = "right"
//! on = ["key"]
//!
//! [sink.summary]
//! kind = "summary"
//! input = "joined"
//! ```

use std::collections::{BTreeMap, BTreeSet};

use toml::de::DeTable;

use crate::error::{ConfigError, ConfigErrors};
use crate::operator_spec::{BuiltinOnly, OperatorCatalog, OperatorSpec, read_operator};
use crate::reader::{Doc, Table};
use crate::settings::RuntimeSettings;

/// A whole pipeline, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// Job name, used in output and metrics.
    pub name: String,
    /// Deadlines and sizes.
    pub runtime: RuntimeSettings,
    /// Sources in file order.
    pub sources: Vec<SourceSpec>,
    /// Operators in file order.
    pub operators: Vec<OperatorSpec>,
    /// Sinks in file order.
    pub sinks: Vec<SinkSpec>,
    /// The file as sorted `key.path = value` lines (values in TOML syntax): what the job's plan
    /// fingerprint covers, so that workers given different files are told where they differ.
    pub canonical: Vec<(String, String)>,
}

/// A named source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// Name other stages refer to.
    pub name: String,
    /// What it reads.
    pub kind: SourceKind,
}

/// What a source reads.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// The distributed-join benchmark table: `key` int64 uniform in
    /// `[0, unique_factor × rows × world)`, `payload` int64; seeded per rank.
    Generate {
        /// Rows made on each worker.
        rows: u64,
        /// Key range as a fraction of the total row count.
        unique_factor: f64,
        /// Base seed; each rank mixes its rank in.
        seed: u64,
    },
    /// Files on disk or in S3 (`s3://bucket/key`).
    Files {
        /// Parquet, CSV or Arrow IPC.
        format: FileFormat,
        /// Which files each rank reads.
        files: SourceFiles,
        /// What a column that only some files have means.
        missing_columns: MissingColumns,
    },
}

/// What a column present in some files of a source and absent from others means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingColumns {
    /// The job fails, naming a file that has the column and one that lacks it.
    #[default]
    Error,
    /// The column is null in the rows of the files that lack it.
    Null,
}

impl MissingColumns {
    /// The name used in pipelines.
    pub fn name(self) -> &'static str {
        match self {
            MissingColumns::Error => "error",
            MissingColumns::Null => "null",
        }
    }
}

/// File formats a source can read.
#[derive(Debug, Clone, PartialEq)]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma (or other delimiter) separated text.
    Csv(CsvOptions),
    /// Arrow IPC: sources read the file format (Feather v2) and the stream format (told apart
    /// by the file magic); sinks write the file format.
    Ipc,
    /// The Arrow IPC stream format: written by an `ipc` sink with `stream = true`
    /// (dictionaries kept encoded, replaced as they change). A source reads it as `ipc`.
    IpcStream,
    /// JSON lines (NDJSON): one JSON object per line, fields by name.
    Json,
}

impl FileFormat {
    /// The format's name as written in pipelines.
    pub fn name(&self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv(_) => "csv",
            FileFormat::Ipc | FileFormat::IpcStream => "ipc",
            FileFormat::Json => "json",
        }
    }

    /// File name extensions of the format, for directories given as a path (lower case,
    /// without the dot).
    pub fn extensions(&self) -> &'static [&'static str] {
        match self {
            FileFormat::Parquet => &["parquet", "parq", "pq"],
            FileFormat::Csv(_) => &["csv", "tsv", "txt"],
            FileFormat::Ipc | FileFormat::IpcStream => &["arrow", "ipc", "feather", "arrows"],
            FileFormat::Json => &["json", "jsonl", "ndjson"],
        }
    }
}

/// How CSV files are read.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvOptions {
    /// First line holds column names.
    pub has_header: bool,
    /// Field delimiter (one byte).
    pub delimiter: u8,
    /// Declared column types `(name, type)`, matched to the header by name (by position when
    /// `has_header` is false). Columns not declared are inferred.
    pub schema: Vec<(String, String)>,
    /// Field values read as null (exactly, after unquoting); by default only the empty field.
    pub null_values: Vec<String>,
    /// Rows looked at to infer the types of undeclared columns; `None`: the whole file for
    /// local files, [`defaults::CSV_INFER_ROWS`](crate::defaults::CSV_INFER_ROWS) for objects.
    pub infer_rows: Option<u64>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            has_header: true,
            delimiter: b',',
            schema: Vec::new(),
            null_values: vec![String::new()],
            infer_rows: None,
        }
    }
}

/// The files of a source and how ranks share them. Paths are local paths or `s3://bucket/key`
/// URLs.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceFiles {
    /// One file per rank: `{rank}` in the path is replaced by the rank. A missing file is an
    /// error.
    PerRank(String),
    /// A list of files, directories and glob patterns (`*`, `?`, `[...]`, `**`). Patterns are
    /// expanded and sorted, a directory stands for every file of the source's format in it
    /// (sorted; names starting with `.` or `_` are skipped), and the files are split
    /// round-robin across ranks (file `i` goes to rank `i % world`); ranks left without a file
    /// read nothing. A pattern or directory matching nothing is an error.
    List(Vec<String>),
}

/// True when `path` holds glob characters.
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// A named sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// Name, used in the report.
    pub name: String,
    /// The stage it consumes.
    pub input: String,
    /// Where the rows go.
    pub kind: SinkKind,
}

/// Sinks.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// One file per rank: `{rank}` in `path` is replaced by the rank, zero-padded to the width
    /// of the largest rank. Local path or `s3://bucket/key`. Files are written under temporary
    /// names and appear only when the whole job has succeeded.
    File {
        /// Parquet, CSV (with a header, comma-separated) or Arrow IPC.
        format: FileFormat,
        /// Output path pattern.
        path: String,
        /// What happens to files an earlier job left at the path.
        mode: WriteMode,
        /// Page compression of Parquet files (`compression`, `compression_level`); other
        /// formats are written uncompressed.
        compression: ParquetCompression,
    },
    /// Row count and order-independent checksums, combined across ranks in the job report.
    Summary,
}

/// Page compression of a Parquet sink's files: `compression = "zstd"` with an optional
/// `compression_level` where the codec has levels. Every codec here is also read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetCompression {
    /// Uncompressed pages (`"none"`).
    None,
    /// Snappy, the default: fast, and what Spark and pandas write by default.
    #[default]
    Snappy,
    /// Gzip at a level of 0 to 9 (default 6).
    Gzip(u32),
    /// Brotli at a level of 0 to 11 (default 1).
    Brotli(u32),
    /// LZ4 in Parquet's `LZ4_RAW` codec (`"lz4"`; the older Hadoop-framed `LZ4` is read too).
    Lz4Raw,
    /// Zstandard at a level of 1 to 22 (default 3).
    Zstd(i32),
}

impl ParquetCompression {
    /// The codec named `name` at `level` (the codec's default level when `None`).
    ///
    /// # Errors
    /// An unknown name, a level on a codec without levels, or a level out of the codec's range;
    /// the message says which names and levels are accepted.
    pub fn parse(name: &str, level: Option<u64>) -> Result<ParquetCompression, String> {
        let ranged = |lo: u64, hi: u64, default: u64| match level {
            None => Ok(default),
            Some(l) if (lo..=hi).contains(&l) => Ok(l),
            Some(l) => Err(format!("level {l} is out of range for {name}: {lo} to {hi}")),
        };
        let none = |c: ParquetCompression| match level {
            None => Ok(c),
            Some(_) => Err(format!("{name} has no compression level")),
        };
        match name {
            "none" => none(ParquetCompression::None),
            "snappy" => none(ParquetCompression::Snappy),
            "lz4" => none(ParquetCompression::Lz4Raw),
            "gzip" => Ok(ParquetCompression::Gzip(ranged(0, 9, 6)? as u32)),
            "brotli" => Ok(ParquetCompression::Brotli(ranged(0, 11, 1)? as u32)),
            "zstd" => Ok(ParquetCompression::Zstd(ranged(1, 22, 3)? as i32)),
            other => Err(format!(
                "unknown compression `{other}`; expected one of: none, snappy, gzip, brotli, lz4, zstd"
            )),
        }
    }
}

/// What a file sink does with the files an earlier job wrote to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// The job's part files replace the earlier job's: part files the new job does not write
    /// (an earlier run on more workers) are deleted when the job commits.
    #[default]
    Overwrite,
    /// The job fails before it starts if any part file of the path exists.
    ErrorIfExists,
    /// The job adds part files whose names carry its run id, next to what is there.
    Append,
}

impl WriteMode {
    /// The name used in pipelines.
    pub fn name(self) -> &'static str {
        match self {
            WriteMode::Overwrite => "overwrite",
            WriteMode::ErrorIfExists => "error_if_exists",
            WriteMode::Append => "append",
        }
    }
}

/// Column types a CSV schema may declare.
pub const CSV_TYPES: &[&str] = &["int32", "int64", "float64", "utf8", "bool", "date32"];

/// Parses and validates a pipeline. `source_name` is used in messages (usually the file path).
///
/// # Errors
/// Every problem found, each with its key path and position.
pub fn parse_pipeline(text: &str, source_name: &str) -> Result<PipelineSpec, ConfigErrors> {
    parse_pipeline_with(text, source_name, &BuiltinOnly)
}

/// Like [`parse_pipeline`], also accepting the operator kinds `catalog` registered.
///
/// # Errors
/// Every problem found, each with its key path and position.
pub fn parse_pipeline_with(
    text: &str,
    source_name: &str,
    catalog: &dyn OperatorCatalog,
) -> Result<PipelineSpec, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors { source_name: source_name.to_string(), errors };
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let doc = Doc::new(text);
            doc.error("", e.span().unwrap_or(0..0), format!("not valid TOML: {}", e.message()));
            return Err(fail(doc.take_errors()));
        }
    };
    let doc = Doc::new(text);
    let top = Table::new(&doc, String::new(), root.span(), root.get_ref());
    // Registered operators get their `params` as plain TOML; the document parsed above, so this
    // parse succeeds too.
    let plain: toml::Table = text.parse().unwrap_or_default();
    let mut spec = read_pipeline(&top, catalog, &plain);
    top.finish(&["job", "runtime", "source", "operator", "sink"]);
    spec.canonical = canonical_lines(&plain);
    // Key order matters too: stages are numbered in file order, and aggregates, projected
    // columns and declared CSV columns come out in the order they are written.
    key_orders("", root.get_ref(), &mut spec.canonical);
    spec.canonical.sort();
    if doc.has_errors() {
        return Err(fail(doc.take_errors()));
    }
    Ok(spec)
}

/// Every value of a TOML document as `(key path, value)`, sorted by path: tables flattened
/// with `.`, array items as `[i]`, values in TOML syntax. Two documents that mean the same
/// (comments, order, spacing aside) give the same lines.
pub fn canonical_lines(doc: &toml::Table) -> Vec<(String, String)> {
    fn walk(path: String, v: &toml::Value, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    walk(crate::reader::join(&path, k), v, out);
                }
            }
            toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
                for (i, v) in items.iter().enumerate() {
                    walk(format!("{path}[{i}]"), v, out);
                }
            }
            other => out.push((path, render(other))),
        }
    }
    fn render(v: &toml::Value) -> String {
        match v {
            toml::Value::String(s) => format!("{s:?}"),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => format!("{f:?}"),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(items) => {
                format!("[{}]", items.iter().map(render).collect::<Vec<_>>().join(", "))
            }
            toml::Value::Table(t) => format!(
                "{{{}}}",
                t.iter().map(|(k, v)| format!("{k:?} = {}", render(v))).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    let mut out = Vec::new();
    for (k, v) in doc {
        walk(k.clone(), v, &mut out);
    }
    out.sort();
    out
}

/// For every table below the root (at its own path, which no value line has), the order its
/// keys are written in.
fn key_orders(path: &str, table: &DeTable<'_>, out: &mut Vec<(String, String)>) {
    let mut keys: Vec<(usize, String, &toml::de::DeValue<'_>)> =
        table.iter().map(|(k, v)| (k.span().start, k.get_ref().to_string(), v.get_ref())).collect();
    keys.sort_by_key(|(at, _, _)| *at);
    if !path.is_empty() {
        let names: Vec<&str> = keys.iter().map(|(_, k, _)| k.as_str()).collect();
        out.push((path.to_string(), format!("keys in this order: {}", names.join(", "))));
    }
    for (_, k, v) in keys {
        let inner = crate::reader::join(path, &k);
        if let Some(t) = v.as_table() {
            key_orders(&inner, t, out);
        } else if let Some(items) = v.as_array() {
            for (i, item) in items.iter().enumerate() {
                if let Some(t) = item.get_ref().as_table() {
                    key_orders(&format!("{inner}[{i}]"), t, out);
                }
            }
        }
    }
}

/// Problems found after reading (by checking columns against the data, say), placed at their
/// key paths in `text` so that they print like reading errors.
pub fn errors_at(text: &str, source_name: &str, problems: &[(String, String)]) -> ConfigErrors {
    let doc = Doc::new(text);
    match DeTable::parse(text) {
        Ok(root) => {
            let top = Table::new(&doc, String::new(), root.span(), root.get_ref());
            for (path, message) in problems {
                let span = if path.is_empty() { 0..0 } else { find_line(&top, path) };
                doc.error(path, span, message.clone());
            }
        }
        Err(_) => {
            for (path, message) in problems {
                doc.error(path, 0..0, message.clone());
            }
        }
    }
    ConfigErrors { source_name: source_name.to_string(), errors: doc.take_errors() }
}

fn read_pipeline(top: &Table<'_, '_>, catalog: &dyn OperatorCatalog, plain: &toml::Table) -> PipelineSpec {
    let mut name = "updraft-job".to_string();
    if let Some(job) = top.opt_table("job") {
        if let Some(n) = job.opt_str("name") {
            name = n;
        }
        job.finish(&["name"]);
    }
    let runtime = match top.opt_table("runtime") {
        Some(t) => {
            let s = RuntimeSettings::read(&t);
            t.finish(RuntimeSettings::keys());
            s
        }
        None => RuntimeSettings::default(),
    };
    // Every declared stage, whether or not its own keys are valid, so that one bad key does not
    // also make every stage that reads it look broken.
    let mut declared: Vec<(&'static str, String)> = Vec::new();
    let mut sources = Vec::new();
    if let Some(t) = top.opt_table("source") {
        for (n, t) in t.named_tables() {
            declared.push(("source", n.clone()));
            sources.extend(read_source(n, &t));
        }
    }
    let mut operators = Vec::new();
    if let Some(t) = top.opt_table("operator") {
        for (n, t) in t.named_tables() {
            declared.push(("operator", n.clone()));
            let params = plain
                .get("operator")
                .and_then(|o| o.get(&n))
                .and_then(|o| o.get("params"))
                .and_then(toml::Value::as_table);
            operators.extend(read_operator(n, &t, catalog, params));
        }
    }
    let mut sinks = Vec::new();
    if let Some(t) = top.opt_table("sink") {
        for (n, t) in t.named_tables() {
            declared.push(("sink", n.clone()));
            sinks.extend(read_sink(n, &t));
        }
    }
    let spec = PipelineSpec { name, runtime, sources, operators, sinks, canonical: Vec::new() };
    check_graph(top, &spec, &declared);
    spec
}

fn read_source(name: String, t: &Table<'_, '_>) -> Option<SourceSpec> {
    let kind = t.req_str("kind", "one of: generate, parquet, csv, ipc")?;
    let kind = match kind.as_str() {
        "generate" => {
            let rows = t.req_u64("rows", "rows per worker");
            let unique_factor = t.opt_f64("unique_factor").unwrap_or(0.9);
            if !(unique_factor > 0.0 && unique_factor.is_finite()) {
                t.error("unique_factor", "must be a positive number");
            }
            let seed = t.opt_u64("seed").unwrap_or(0);
            t.finish(&["kind", "rows", "unique_factor", "seed"]);
            SourceKind::Generate { rows: rows?, unique_factor, seed }
        }
        "parquet" | "ipc" | "json" => {
            let files = read_files(t);
            let missing_columns = read_missing_columns(t);
            t.finish(&["kind", "path", "paths", "missing_columns"]);
            let format = match kind.as_str() {
                "ipc" => FileFormat::Ipc,
                "json" => FileFormat::Json,
                _ => FileFormat::Parquet,
            };
            SourceKind::Files { format, files: files?, missing_columns }
        }
        "csv" => {
            let files = read_files(t);
            let missing_columns = read_missing_columns(t);
            let defaults = CsvOptions::default();
            let has_header = t.opt_bool("header").unwrap_or(defaults.has_header);
            let delimiter = match t.opt_str("delimiter") {
                Some(d) if d.len() == 1 => d.as_bytes()[0],
                Some(_) => {
                    t.error("delimiter", "must be a single one-byte character");
                    defaults.delimiter
                }
                None => defaults.delimiter,
            };
            let schema = t.opt_table("schema").map(|s| read_csv_schema(&s)).unwrap_or_default();
            let null_values = t.opt_str_list("null_values").unwrap_or(defaults.null_values);
            let infer_rows = t.opt_u64("infer_rows");
            if infer_rows == Some(0) {
                t.error("infer_rows", "must be at least 1 (leave it out to infer from the whole file)");
            }
            t.finish(&[
                "kind",
                "path",
                "paths",
                "missing_columns",
                "header",
                "delimiter",
                "schema",
                "null_values",
                "infer_rows",
            ]);
            let options = CsvOptions { has_header, delimiter, schema, null_values, infer_rows };
            SourceKind::Files { format: FileFormat::Csv(options), files: files?, missing_columns }
        }
        other => {
            t.error(
                "kind",
                format!("unknown source kind `{other}`; expected one of: generate, parquet, csv, ipc, json"),
            );
            return None;
        }
    };
    Some(SourceSpec { name, kind })
}

fn read_missing_columns(t: &Table<'_, '_>) -> MissingColumns {
    match t.opt_str("missing_columns").as_deref() {
        None | Some("error") => MissingColumns::Error,
        Some("null") => MissingColumns::Null,
        Some(other) => {
            t.error("missing_columns", format!("unknown value `{other}`; expected one of: error, null"));
            MissingColumns::Error
        }
    }
}

fn read_files(t: &Table<'_, '_>) -> Option<SourceFiles> {
    let path = t.opt_str("path");
    let paths = t.opt_str_list("paths");
    match (path, paths) {
        (Some(p), None) => {
            if p.is_empty() {
                t.error("path", "must not be empty");
            }
            if p.contains("{rank}") {
                Some(SourceFiles::PerRank(p))
            } else {
                // One file, a directory or a pattern: read once, dealt to the ranks.
                Some(SourceFiles::List(vec![p]))
            }
        }
        (None, Some(list)) => {
            if list.is_empty() {
                t.error("paths", "must list at least one file");
            }
            if list.iter().any(|p| p.contains("{rank}")) {
                t.error("paths", "{rank} belongs in `path` (one file per rank), not in a list");
            }
            Some(SourceFiles::List(list))
        }
        (Some(_), Some(_)) => {
            t.error(
                "paths",
                "give either `path` (one file, directory or pattern; or one file per rank with {rank}) or `paths` (a list), not both",
            );
            None
        }
        (None, None) => {
            t.error(
                "kind",
                "a file source needs `path` (a file, directory or pattern; or one file per rank with {rank}) or `paths` (a list)",
            );
            None
        }
    }
}

fn read_csv_schema(s: &Table<'_, '_>) -> Vec<(String, String)> {
    let mut cols = Vec::new();
    for key in s.keys_in_order() {
        if let Some(ty) = s.opt_str(&key) {
            if !CSV_TYPES.contains(&ty.as_str()) {
                s.error(
                    &key,
                    format!("unknown column type `{ty}`; expected one of: {}", CSV_TYPES.join(", ")),
                );
            }
            cols.push((key, ty));
        }
    }
    s.finish(&[]);
    cols
}

fn read_sink(name: String, t: &Table<'_, '_>) -> Option<SinkSpec> {
    let kind = t.req_str("kind", "one of: parquet, csv, ipc, json, summary")?;
    let input = t.req_str("input", "the stage it consumes");
    let kind = match kind.as_str() {
        "parquet" | "csv" | "ipc" | "json" => {
            let path = t.req_str("path", "output path; {rank} is replaced by the rank");
            if let Some(p) = &path {
                if !p.contains("{rank}") {
                    t.error("path", "must contain {rank}: every rank writes its own file");
                }
                if p.contains("{run}") {
                    t.error("path", "{run} is not a placeholder: mode = \"append\" adds the run id itself");
                }
            }
            let mode = match t.opt_str("mode").as_deref() {
                None | Some("overwrite") => WriteMode::Overwrite,
                Some("error_if_exists") => WriteMode::ErrorIfExists,
                Some("append") => WriteMode::Append,
                Some(other) => {
                    t.error(
                        "mode",
                        format!(
                            "unknown mode `{other}`; expected one of: overwrite, error_if_exists, append"
                        ),
                    );
                    WriteMode::Overwrite
                }
            };
            let name = t.opt_str("compression");
            let level = t.opt_u64("compression_level");
            let compression = if kind != "parquet" && (name.is_some() || level.is_some()) {
                let key = if name.is_some() { "compression" } else { "compression_level" };
                t.error(key, format!("only parquet sinks are compressed; a {kind} sink is written as it is"));
                ParquetCompression::default()
            } else {
                match ParquetCompression::parse(name.as_deref().unwrap_or("snappy"), level) {
                    Ok(c) => c,
                    Err(e) => {
                        let key = if name.is_some() && !e.contains("level") {
                            "compression"
                        } else {
                            "compression_level"
                        };
                        t.error(key, e);
                        ParquetCompression::default()
                    }
                }
            };
            let stream = t.opt_bool("stream");
            if kind != "ipc" && stream.is_some() {
                t.error(
                    "stream",
                    format!("only ipc sinks choose between the file and stream formats, not a {kind} sink"),
                );
            }
            t.finish(&["kind", "input", "path", "mode", "compression", "compression_level", "stream"]);
            let format = match kind.as_str() {
                "parquet" => FileFormat::Parquet,
                "ipc" if stream == Some(true) => FileFormat::IpcStream,
                "ipc" => FileFormat::Ipc,
                "json" => FileFormat::Json,
                _ => FileFormat::Csv(CsvOptions::default()),
            };
            SinkKind::File { format, path: path?, mode, compression }
        }
        "summary" => {
            t.finish(&["kind", "input"]);
            SinkKind::Summary
        }
        other => {
            t.error(
                "kind",
                format!("unknown sink kind `{other}`; expected one of: parquet, csv, ipc, json, summary"),
            );
            return None;
        }
    };
    Some(SinkSpec { name, input: input?, kind })
}

/// Names unique, inputs known, no cycles, something to read and somewhere to write.
fn check_graph(top: &Table<'_, '_>, spec: &PipelineSpec, declared: &[(&'static str, String)]) {
    let doc = top.doc();
    let mut kinds: BTreeMap<&str, &str> = BTreeMap::new();
    for (kind, name) in declared {
        // The first declaration keeps the name; later ones are the error.
        if let Some(prev) = kinds.get(name.as_str()) {
            let path = format!("{kind}.{name}");
            let article = if prev.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
            doc.error(
                &path,
                find_line(top, &path),
                format!("name `{name}` is already used by {article} {prev}; stage names must be unique"),
            );
        } else {
            kinds.insert(name.as_str(), kind);
        }
    }
    let producer = |name: &str| matches!(kinds.get(name), Some(&"source") | Some(&"operator"));
    let position = |path: &str| find_line(top, path);
    for o in &spec.operators {
        for (input, key) in o.kind.inputs().into_iter().zip(o.kind.input_keys()) {
            if !producer(input) {
                let path = format!("operator.{}.{key}", o.name);
                let what = if kinds.get(input) == Some(&"sink") {
                    "is a sink, which has no output"
                } else {
                    "is not a source or operator"
                };
                let at = path.split('[').next().unwrap_or(&path).to_string();
                doc.error(&path, position(&at), format!("input `{input}` {what}"));
            }
        }
    }
    for s in &spec.sinks {
        if !producer(&s.input) {
            let path = format!("sink.{}.input", s.name);
            doc.error(&path, position(&path), format!("input `{}` is not a source or operator", s.input));
        }
    }
    if let Some(cycle) = find_cycle(&spec.operators) {
        let path = format!("operator.{}", cycle[0]);
        doc.error(&path, position(&path), format!("operators form a cycle: {}", cycle.join(" -> ")));
    }
    if !declared.iter().any(|(k, _)| *k == "source") {
        doc.error("source", 0..0, "the pipeline has no source; add e.g. [source.left] kind = \"generate\"");
    }
    if !declared.iter().any(|(k, _)| *k == "sink") {
        doc.error("sink", 0..0, "the pipeline has no sink; add e.g. [sink.summary] kind = \"summary\"");
    }
}

/// Byte position of a dotted path's value, for errors found after reading.
fn find_line(top: &Table<'_, '_>, path: &str) -> std::ops::Range<usize> {
    top.span_of(path).unwrap_or(0..0)
}

fn find_cycle(ops: &[OperatorSpec]) -> Option<Vec<String>> {
    let by_name: BTreeMap<&str, &OperatorSpec> = ops.iter().map(|o| (o.name.as_str(), o)).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        by_name: &BTreeMap<&'a str, &'a OperatorSpec>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(name) {
            Some(Mark::Done) => return None,
            Some(Mark::Active) => {
                let start = stack.iter().position(|n| *n == name).unwrap_or(0);
                let mut cycle: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_string());
                return Some(cycle);
            }
            None => {}
        }
        let op = by_name.get(name)?;
        marks.insert(name, Mark::Active);
        stack.push(name);
        for input in op.kind.inputs() {
            if by_name.contains_key(input)
                && let Some(c) = visit(input, by_name, marks, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    let names: BTreeSet<&str> = by_name.keys().copied().collect();
    for name in names {
        let mut stack = Vec::new();
        if let Some(c) = visit(name, &by_name, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests;
