//! A program that is the whole `updraft` command plus one operator of its own, `top_n_per_key`:
//! for every value of an integer key column, the `n` rows with the largest (or smallest) values
//! of another column.
//!
//! Build and run it like `updraft` itself:
//!
//! ```text
//! cargo run --release --example custom_operator -- run apps/examples/custom-operator.toml --workers 4
//! ```
//!
//! The pipeline names the operator by the name it is registered under, gives its parameters in
//! `[operator.NAME.params]`, and asks for `partition_by = ["<key>"]` so that all rows of a key
//! meet on one rank before the operator sees them:
//!
//! ```toml
//! [operator.top]
//! kind = "top_n_per_key"
//! input = "sales"
//! partition_by = ["key"]
//! [operator.top.params]
//! key = "key"
//! by = "payload"
//! n = 3
//! ```
//!
//! `updraft validate` checks the parameters through the same `Deserialize` impl (a missing or
//! unknown field is reported at `operator.top.params`) and the columns by running the operator
//! on an empty batch, which is why `on_end` resolves the columns even when it saw no rows.

use std::process::ExitCode;
use std::sync::Arc;

use serde::Deserialize;
use updraft::arrow::array::cast::AsArray;
use updraft::arrow::array::types::{Float64Type, Int64Type};
use updraft::arrow::array::{Array, RecordBatch, UInt32Array};
use updraft::arrow::schema::{DataType, SchemaRef};
use updraft::arrow::{cast as arrow_cast, select as arrow_select};
use updraft::{BuildContext, Flow, Operator, OperatorError, Output, Registry};

/// Parameters, as written under `[operator.NAME.params]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopNParams {
    /// Integer (int64) key column.
    key: String,
    /// Column ranked within each key.
    by: String,
    /// Rows kept per key.
    n: usize,
    /// Keep the smallest values instead of the largest.
    #[serde(default)]
    ascending: bool,
}

/// Collects its input, then emits the top `n` rows of every key, keys in ascending order, in
/// batches of at most `batch_rows` rows.
struct TopNPerKey {
    name: String,
    p: TopNParams,
    batch_rows: usize,
    batches: Vec<RecordBatch>,
    schema: Option<SchemaRef>,
    /// Rows to emit once the input ended: (batch, row) in output order.
    result: Vec<(u32, u32)>,
    emitted: usize,
}

impl TopNPerKey {
    fn invalid(&self, what: String) -> OperatorError {
        OperatorError::Invalid(format!("`{}`: {what}", self.name))
    }

    /// Index of a column, checked once the schema is known.
    fn column(&self, schema: &SchemaRef, name: &str, want_int: bool) -> Result<usize, OperatorError> {
        let i =
            schema.index_of(name).map_err(|_| self.invalid(format!("no column `{name}` in the input")))?;
        let t = schema.field(i).data_type();
        if want_int && t != &DataType::Int64 {
            return Err(self.invalid(format!("key column `{name}` is {t}, expected Int64")));
        }
        if !want_int && !t.is_numeric() {
            return Err(self.invalid(format!("column `{name}` is {t}, expected a number")));
        }
        Ok(i)
    }
}

impl Operator for TopNPerKey {
    fn on_batch(&mut self, _port: usize, batch: RecordBatch, _out: &mut Output) -> Result<(), OperatorError> {
        if self.schema.is_none() {
            let schema = batch.schema();
            self.column(&schema, &self.p.key, true)?;
            self.column(&schema, &self.p.by, false)?;
            self.schema = Some(schema);
        }
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
        Ok(())
    }

    fn on_end(&mut self, _port: usize, out: &mut Output) -> Result<Flow, OperatorError> {
        let Some(schema) = self.schema.clone() else { return Ok(Flow::Idle) };
        let (k, b) = (self.column(&schema, &self.p.key, true)?, self.column(&schema, &self.p.by, false)?);
        // Every row with a key, as (key, rank value, batch, row); null keys and values are skipped.
        let mut rows: Vec<(i64, f64, u32, u32)> = Vec::new();
        for (bi, batch) in self.batches.iter().enumerate() {
            let keys = batch.column(k).as_primitive::<Int64Type>();
            let values = arrow_cast::cast(batch.column(b), &DataType::Float64)?;
            let values = values.as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                if keys.is_valid(i) && values.is_valid(i) {
                    rows.push((keys.value(i), values.value(i), bi as u32, i as u32));
                }
            }
        }
        let descending = !self.p.ascending;
        rows.sort_by(|x, y| {
            let by = x.1.total_cmp(&y.1);
            x.0.cmp(&y.0).then(if descending { by.reverse() } else { by })
        });
        let mut taken = 0;
        for (i, row) in rows.iter().enumerate() {
            taken = if i > 0 && rows[i - 1].0 == row.0 { taken + 1 } else { 1 };
            if taken <= self.p.n {
                self.result.push((row.2, row.3));
            }
        }
        if self.result.is_empty() {
            // Consumers still learn the schema.
            out.emit(RecordBatch::new_empty(schema));
            return Ok(Flow::Idle);
        }
        Ok(Flow::More)
    }

    fn resume(&mut self, out: &mut Output) -> Result<Flow, OperatorError> {
        let end = (self.emitted + self.batch_rows).min(self.result.len());
        let chunk = &self.result[self.emitted..end];
        let Some(schema) = self.schema.clone() else { return Ok(Flow::Idle) };
        // One `take` per source batch, then the pieces in order.
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < chunk.len() {
            let bi = chunk[start].0;
            let run = chunk[start..].iter().take_while(|(b, _)| *b == bi).count();
            let idx =
                UInt32Array::from(chunk[start..start + run].iter().map(|(_, r)| *r).collect::<Vec<_>>());
            let batch = &self.batches[bi as usize];
            let cols = batch
                .columns()
                .iter()
                .map(|c| arrow_select::take::take(c.as_ref(), &idx, None))
                .collect::<Result<Vec<_>, _>>()?;
            pieces.push(RecordBatch::try_new(Arc::clone(&schema), cols)?);
            start += run;
        }
        out.emit(arrow_select::concat::concat_batches(&schema, &pieces)?);
        self.emitted = end;
        Ok(if self.emitted < self.result.len() { Flow::More } else { Flow::Idle })
    }
}

fn build(p: TopNParams, ctx: &BuildContext<'_>) -> Result<Box<dyn Operator>, OperatorError> {
    if p.n == 0 {
        return Err(OperatorError::Invalid(format!("`{}`: n must be at least 1", ctx.name)));
    }
    if ctx.inputs != 1 {
        return Err(OperatorError::Invalid(format!("`{}`: top_n_per_key reads one input", ctx.name)));
    }
    Ok(Box::new(TopNPerKey {
        name: ctx.name.to_string(),
        p,
        batch_rows: ctx.batch_rows.max(1),
        batches: Vec::new(),
        schema: None,
        result: Vec::new(),
        emitted: 0,
    }))
}

fn main() -> ExitCode {
    let mut registry = Registry::new();
    if let Err(e) = registry.register("top_n_per_key", build) {
        eprintln!("custom_operator: {e}");
        return ExitCode::from(1);
    }
    updraft::main_with(registry)
}
