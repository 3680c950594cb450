//! The streamed form of the hash join, used when the plan names the build side in advance
//! (`build`, see [`updraft_config::JoinBuild`]): the build side is collected and indexed once,
//! over all of its rows ([`BuildIndex`]); then every probe batch is matched as it arrives and
//! dropped. The probe side is never held whole, concatenated or partitioned, and the planner
//! starts its sources only once the build side has ended, so its batches are decoded, matched
//! and freed one after another (the same pages reused) instead of all held at once.
//!
//! Output comes probe batch by probe batch, in the probe side's row order (at most
//! `batch_rows` rows a call, however many build rows a probe key matches); unmatched probe
//! rows of a preserved probe side come inline, unmatched build rows of a preserved build side
//! after the probe side ended.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use updraft_runtime::OperatorError;

use super::{Assembly, JoinParams, output_schema};
use crate::hash_table::{BuildIndex, JoinKeys, KeyEncoder, Lookup, PREFETCH_AHEAD};
use crate::partition::{column_indices, describe_columns, same_columns};
use crate::table::Table;

/// A build side indexed, and the probe batches being matched against it.
pub(super) struct Streamed {
    name: String,
    build_port: usize,
    build: Table,
    build_keys: JoinKeys,
    index: BuildIndex,
    encoder: KeyEncoder,
    probe_on: Vec<usize>,
    /// The probe side's columns, all nullable (batches from different ranks may differ in
    /// nullability, and the output schema is fixed at the first).
    probe_schema: SchemaRef,
    /// One all-null probe row: what unmatched build rows gather their probe columns from.
    null_probe: Table,
    assembly: Assembly,
    keep_build: bool,
    keep_probe: bool,
    matched: Vec<bool>,
    queue: VecDeque<RecordBatch>,
    current: Option<ProbeBatch>,
    /// Every probe batch has arrived.
    pub(super) probe_ended: bool,
    build_cursor: usize,
}

/// A probe batch being matched.
struct ProbeBatch {
    table: Table,
    keys: JoinKeys,
    /// Each row's bucket in the index.
    lookups: Vec<Lookup>,
    /// Next row to look up.
    row: usize,
    /// The row being walked: its hash, the bucket positions left, and whether it matched.
    walking: Option<(usize, u64, Range<usize>, bool)>,
}

impl Streamed {
    /// Indexes `build` (the side of input `build_port`, whole) for probe batches of the
    /// columns of `probe_first`, for the join `p`.
    ///
    /// # Errors
    /// A key column missing on either side, key types that do not join, or an index too
    /// large for 32-bit row ids.
    pub(super) fn new(
        p: &JoinParams,
        build_port: usize,
        build: Table,
        probe_first: &Schema,
    ) -> Result<Streamed, OperatorError> {
        let (name, how) = (p.name.as_str(), p.how);
        let on = (p.left_on.as_slice(), p.right_on.as_slice());
        let fields: Vec<Field> =
            probe_first.fields().iter().map(|f| Field::new(f.name(), f.data_type().clone(), true)).collect();
        let probe_schema = Arc::new(Schema::new(fields));
        let build_schema = build.schema();
        let (left, right) =
            if build_port == 0 { (&build_schema, &probe_schema) } else { (&probe_schema, &build_schema) };
        let lk = column_indices(left, on.0, &format!("`{name}`: left key"))?;
        let rk = column_indices(right, on.1, &format!("`{name}`: right key"))?;
        let (schema, right_keep, coalesce) =
            output_schema(left, right, &lk, &rk, &p.suffixes, how.preserves());
        let types =
            |s: &Schema, k: &[usize]| k.iter().map(|&i| s.field(i).data_type().clone()).collect::<Vec<_>>();
        let encoder = KeyEncoder::new(&types(left, &lk), &types(right, &rk), name, on)?;
        let (build_on, probe_on) = if build_port == 0 { (lk, rk) } else { (rk, lk) };
        let cols: Vec<ArrayRef> = build_on.iter().map(|&i| build.column(i)).collect();
        let build_keys = encoder.encode(&cols)?;
        let index = BuildIndex::new(&build_keys)?;
        let nulls: Vec<ArrayRef> =
            probe_schema.fields().iter().map(|f| arrow_array::new_null_array(f.data_type(), 1)).collect();
        let null_probe = Table::new(
            Arc::clone(&probe_schema),
            vec![RecordBatch::try_new(Arc::clone(&probe_schema), nulls)?],
        )?;
        let (keep_left, keep_right) = how.preserves();
        let (keep_build, keep_probe) =
            if build_port == 0 { (keep_left, keep_right) } else { (keep_right, keep_left) };
        let matched = if keep_build { vec![false; build.num_rows()] } else { Vec::new() };
        Ok(Streamed {
            name: name.to_string(),
            build_port,
            build,
            build_keys,
            index,
            encoder,
            probe_on,
            probe_schema,
            null_probe,
            assembly: Assembly { schema, right_keep, coalesce },
            keep_build,
            keep_probe,
            matched,
            queue: VecDeque::new(),
            current: None,
            probe_ended: false,
            build_cursor: 0,
        })
    }

    /// The probe side's input port.
    pub(super) fn probe_port(&self) -> usize {
        1 - self.build_port
    }

    /// The output schema.
    pub(super) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.assembly.schema)
    }

    /// Queues a probe batch.
    ///
    /// # Errors
    /// Its columns differ from the first probe batch's.
    pub(super) fn push(&mut self, batch: RecordBatch) -> Result<(), OperatorError> {
        if !same_columns(&self.probe_schema, &batch.schema()) {
            let side = if self.build_port == 0 { "right" } else { "left" };
            return Err(OperatorError::Invalid(format!(
                "`{}`: the {side} input has batches with different columns ({} vs {}); do all ranks read the same kind of data?",
                self.name,
                describe_columns(&self.probe_schema),
                describe_columns(&batch.schema())
            )));
        }
        if batch.num_rows() > 0 {
            self.queue.push_back(batch);
        }
        Ok(())
    }

    /// True when every probe batch has arrived and been matched, and every unmatched build row
    /// of a preserved build side emitted.
    pub(super) fn done(&self) -> bool {
        self.probe_ended
            && self.queue.is_empty()
            && self.current.is_none()
            && (!self.keep_build || self.build_cursor >= self.matched.len())
    }

    /// The next output batch of at most `limit` rows; `None` when nothing is left until more
    /// probe batches arrive (or at all, once [`Streamed::done`]).
    ///
    /// # Errors
    /// An Arrow error encoding probe keys or assembling output.
    pub(super) fn next(&mut self, limit: usize) -> Result<Option<RecordBatch>, OperatorError> {
        loop {
            if self.current.is_none()
                && let Some(batch) = self.queue.pop_front()
            {
                let cols: Vec<ArrayRef> =
                    self.probe_on.iter().map(|&i| Arc::clone(batch.column(i))).collect();
                let keys = self.encoder.encode(&cols)?;
                let table = Table::new(Arc::clone(&self.probe_schema), vec![batch])?;
                let lookups = self.index.lookups(&keys);
                self.current = Some(ProbeBatch { table, keys, lookups, row: 0, walking: None });
            }
            let Some(cur) = &mut self.current else { break };
            let (probe, build) =
                cur.pairs(limit, (&self.index, &self.build_keys), self.keep_probe, &mut self.matched);
            let out = if probe.is_empty() { None } else { Some(self.assemble(probe, build, false)?) };
            if self.current.as_ref().is_some_and(ProbeBatch::done) {
                self.current = None;
            }
            if out.is_some() {
                return Ok(out);
            }
        }
        if !self.probe_ended || !self.keep_build {
            return Ok(None);
        }
        let mut build = Vec::with_capacity(limit);
        while build.len() < limit && self.build_cursor < self.matched.len() {
            if !self.matched[self.build_cursor] {
                build.push(Some(self.build_cursor as u32));
            }
            self.build_cursor += 1;
        }
        if build.is_empty() {
            return Ok(None);
        }
        let probe = vec![None; build.len()];
        Ok(Some(self.assemble(probe, build, true)?))
    }

    /// Output rows pairing probe rows (of the current batch; `None`: missing) with build rows.
    fn assemble(
        &self,
        probe: Vec<Option<u32>>,
        build: Vec<Option<u32>>,
        no_probe: bool,
    ) -> Result<RecordBatch, OperatorError> {
        let probe_table = match (&self.current, no_probe) {
            (Some(cur), false) => &cur.table,
            _ => &self.null_probe,
        };
        if self.build_port == 0 {
            self.assembly.batch((&self.build, probe_table), build, probe)
        } else {
            self.assembly.batch((probe_table, &self.build), probe, build)
        }
    }
}

impl ProbeBatch {
    fn done(&self) -> bool {
        self.walking.is_none() && self.row >= self.lookups.len()
    }

    /// Up to `limit` (probe row, build row) pairs from where the last call stopped.
    fn pairs(
        &mut self,
        limit: usize,
        (index, build_keys): (&BuildIndex, &JoinKeys),
        keep_probe: bool,
        matched: &mut [bool],
    ) -> (Vec<Option<u32>>, Vec<Option<u32>>) {
        let mut probe = Vec::with_capacity(limit.min(2 * self.keys.len()));
        let mut build = Vec::with_capacity(probe.capacity());
        while probe.len() < limit {
            if let Some((i, h, range, any)) = &mut self.walking {
                match range.next() {
                    Some(e) => {
                        let (equal, row) = index.entry(e, build_keys, &self.keys, *i, *h);
                        if equal {
                            probe.push(Some(*i as u32));
                            build.push(Some(row));
                            if let Some(m) = matched.get_mut(row as usize) {
                                *m = true;
                            }
                            *any = true;
                        }
                    }
                    None => {
                        if keep_probe && !*any {
                            probe.push(Some(*i as u32));
                            build.push(None);
                        }
                        self.walking = None;
                    }
                }
                continue;
            }
            let i = self.row;
            let Some(&Lookup { hash, start, end }) = self.lookups.get(i) else { break };
            if let Some(ahead) = self.lookups.get(i + PREFETCH_AHEAD) {
                index.prefetch_entry(ahead.start);
            }
            self.row += 1;
            // A null key has an empty bucket: unmatched, like a key not in the index.
            self.walking = Some((i, hash, start as usize..end as usize, false));
        }
        (probe, build)
    }
}
