//! Looking at data: `updraft schema` (the schema and row count of files) and the rows a job
//! wrote (`updraft run --show N`).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::SchemaRef;
use updraft_config::{CsvOptions, FileFormat, MissingColumns, PipelineSpec, SinkKind};
use updraft_operators::files::{FileSource, read_schema};
use updraft_operators::outputs::existing_parts;
use updraft_operators::pushdown::Scan;
use updraft_operators::storage::{Location, expand};

use crate::output::{BadInput, schema_lines, type_name};

/// The format named `name`, or the one whose extensions `path` ends with (a directory: the
/// first of its files with a known extension).
///
/// # Errors
/// An unknown name, or a path whose extension names no format.
pub fn format_of(name: Option<&str>, path: &str) -> anyhow::Result<FileFormat> {
    let formats =
        [FileFormat::Parquet, FileFormat::Csv(CsvOptions::default()), FileFormat::Ipc, FileFormat::Json];
    if let Some(name) = name {
        return formats.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            BadInput(format!("unknown format `{name}`; expected one of: parquet, csv, ipc, json")).into()
        });
    }
    let ext = |p: &str| p.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let mut exts = vec![ext(path)];
    // A local directory: the first of its files (by name) that has a known extension.
    if let Ok(entries) = std::fs::read_dir(path) {
        let mut names: Vec<String> =
            entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().to_string()).collect();
        names.sort();
        exts.extend(names.iter().map(|n| ext(n)));
    }
    let known = |e: &String| formats.iter().find(|f| f.extensions().contains(&e.as_str())).cloned();
    exts.iter().find_map(known).ok_or_else(|| {
        let msg = format!(
            "cannot tell the format of `{path}` from its name: give --format parquet, csv, ipc or json"
        );
        BadInput(msg).into()
    })
}

/// Rows of one file, reading no column where the format allows it.
fn count_rows(format: &FileFormat, at: &Location, schema: &SchemaRef) -> anyhow::Result<u64> {
    let none = Scan { columns: Some(Default::default()), filters: Vec::new() };
    let mut source = FileSource::new("file", format.clone(), vec![at.clone()], Arc::clone(schema), 65_536)
        .with_scan(&none);
    let mut rows = 0u64;
    while let Some(b) = source.next_batch()? {
        rows += b.num_rows() as u64;
    }
    Ok(rows)
}

/// `updraft schema`: each file's row count, then the schema the files agree on as one source
/// (or why they do not).
///
/// # Errors
/// Paths that match nothing, and unreadable files; disagreeing schemas exit with code 2.
pub fn schema(paths: &[String], format: Option<&str>) -> anyhow::Result<ExitCode> {
    let first =
        paths.first().ok_or_else(|| anyhow::anyhow!("give at least one file, directory or pattern"))?;
    let format = format_of(format, first.trim_end_matches('/'))?;
    let bad = |e: updraft_runtime::OperatorError| BadInput(e.to_string());
    let files = expand(paths, format.extensions()).map_err(bad)?;
    let mut schemas = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for at in &files {
        let schema = read_schema("file", &format, at).map_err(bad)?;
        let rows = count_rows(&format, at, &schema).map_err(|e| BadInput(format!("{e:#}")))?;
        total += rows;
        println!("{at}: {rows} rows, {} columns", schema.fields().len());
        schemas.push((at.to_string(), schema));
    }
    match updraft_operators::unify::unify("file", &schemas, MissingColumns::Null) {
        Ok(agreed) => {
            println!("{} {} files, {total} rows; as one source:", files.len(), format.name());
            for line in schema_lines(&agreed, "  ") {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("updraft: these files cannot be one source: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// Prints the first `limit` rows of every file sink of `spec`, read back from the part files
/// at its path (rank order); `rows` gives a sink's total row count when known.
///
/// # Errors
/// Part files that cannot be listed or read.
pub fn show_sinks(
    spec: &PipelineSpec,
    limit: usize,
    rows: impl Fn(&str) -> Option<u64>,
) -> anyhow::Result<()> {
    for sink in &spec.sinks {
        let SinkKind::File { format, path, .. } = &sink.kind else { continue };
        let parts = existing_parts(path)?;
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut taken = 0usize;
        for part in &parts {
            if taken >= limit && !batches.is_empty() {
                break;
            }
            let at = Location::parse_entry(part)?;
            let schema = read_schema(&sink.name, format, &at)?;
            let mut source = FileSource::new(&sink.name, format.clone(), vec![at], Arc::clone(&schema), 1024);
            if batches.is_empty() {
                batches.push(RecordBatch::new_empty(schema));
            }
            while taken < limit {
                let Some(b) = source.next_batch()? else { break };
                taken += b.num_rows();
                batches.push(b);
            }
        }
        println!("sink `{}` ({} part files at {path}):", sink.name, parts.len());
        print!("{}", table(&batches, limit, rows(&sink.name)));
    }
    Ok(())
}

/// `batches` as a text table of at most `limit` rows: column names, their types under them,
/// then the rows (null as `null`), as data-frame libraries print tables; `total` is the row
/// count of the whole table when known.
pub fn table(batches: &[RecordBatch], limit: usize, total: Option<u64>) -> String {
    let Some(schema) = batches.first().map(RecordBatch::schema) else { return "(no rows)\n".into() };
    let total = total.map_or_else(|| batches.iter().map(RecordBatch::num_rows).sum(), |t| t as usize);
    let options = FormatOptions::default().with_null("null");
    let mut cells: Vec<Vec<String>> = vec![
        schema.fields().iter().map(|f| f.name().clone()).collect(),
        schema.fields().iter().map(|f| type_name(f.data_type())).collect(),
    ];
    'rows: for b in batches {
        let formatters: Vec<Option<ArrayFormatter>> =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
        for r in 0..b.num_rows() {
            if cells.len() - 2 >= limit {
                break 'rows;
            }
            cells.push(
                formatters
                    .iter()
                    .map(|f| f.as_ref().map_or("?".into(), |f| f.value(r).to_string()))
                    .collect(),
            );
        }
    }
    let widths: Vec<usize> = (0..schema.fields().len())
        .map(|c| cells.iter().map(|row| row[c].chars().count().min(40)).max().unwrap_or(0))
        .collect();
    let rule: String = widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+");
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| {
                let cell: String = if cell.chars().count() > 40 {
                    cell.chars().take(39).chain(std::iter::once('…')).collect()
                } else {
                    cell.clone()
                };
                format!(" {cell:<w$} ")
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("|").trim_end());
        if i == 1 {
            let _ = writeln!(out, "{rule}");
        }
    }
    let shown = cells.len() - 2;
    if shown < total {
        let _ = writeln!(out, "({shown} of {total} rows)");
    } else {
        let _ = writeln!(out, "({total} rows)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};

    #[test]
    fn a_table_has_names_types_rows_and_says_what_it_left_out() {
        let b = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(Int64Array::from(vec![Some(1), None, Some(300)])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["a", "bb", "c"])) as ArrayRef),
        ])
        .expect("batch");
        let t = table(&[b.clone(), b], 4, None);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], " k     | name");
        assert_eq!(lines[1], " int64 | utf8");
        assert_eq!(lines[2], "-------+------");
        assert_eq!(lines[3], " 1     | a");
        assert_eq!(lines[4], " null  | bb");
        assert_eq!(lines.len(), 8, "{t}");
        assert_eq!(lines[7], "(4 of 6 rows)");
    }

    #[test]
    fn formats_come_from_the_name_or_the_extension() {
        assert_eq!(format_of(None, "data/x-*.parquet").expect("parquet").name(), "parquet");
        assert_eq!(format_of(None, "a.JSONL").expect("json").name(), "json");
        assert_eq!(format_of(Some("csv"), "a.dat").expect("csv").name(), "csv");
        let e = format_of(None, "a.dat").expect_err("unknown").to_string();
        assert!(e.contains("--format"), "{e}");
    }
}
