//! The join's hash table, radix-partitioned: both sides' rows are grouped by the top bits of
//! their key hash ([`Partitions`]), then each build partition gets a small chained table
//! ([`PartitionTable`]: bucket heads indexed by the next hash bits, rows of a bucket chained
//! through a `next` array) that stays in cache while the probe rows of the same partition are
//! matched against it. No per-key allocation; one pass over each side to partition it.
//!
//! Keys are either one integer column (any width, compared as i64, hashed by a multiply) or
//! any other key set, compared in Arrow's row format and hashed with XXH3. Key columns are
//! first made comparable as [`crate::keys`] says (dictionaries decoded, floats canonical).

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_row::{RowConverter, Rows, SortField};
use arrow_schema::DataType;
use updraft_runtime::OperatorError;

/// End of a chain.
pub const END: u32 = u32::MAX;

/// The key columns of one side, ready to hash and compare.
pub enum JoinKeys {
    /// One integer key column.
    Int {
        /// Values as i64.
        values: ScalarBuffer<i64>,
        /// Validity.
        nulls: Option<NullBuffer>,
    },
    /// Any key set, in row format.
    Rows {
        /// Encoded rows.
        rows: Rows,
        /// A row is valid when no key column is null there.
        valid: Vec<bool>,
        /// XXH3 of each row's bytes.
        hashes: Vec<u64>,
    },
}

/// True for integer types that compare exactly as i64.
pub fn is_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
    )
}

/// Key representations for both sides; `left_on` and `right_on` name the key columns (for
/// messages). Key columns compare as [`crate::keys`] says; see [`KeyEncoder`] for the types
/// that join with each other.
///
/// # Errors
/// As [`KeyEncoder::new`] and [`KeyEncoder::encode`].
pub fn join_keys(
    left: &[ArrayRef],
    right: &[ArrayRef],
    join: &str,
    names: (&[String], &[String]),
) -> Result<(JoinKeys, JoinKeys), OperatorError> {
    let types = |cols: &[ArrayRef]| cols.iter().map(|c| c.data_type().clone()).collect::<Vec<_>>();
    let enc = KeyEncoder::new(&types(left), &types(right), join, names)?;
    Ok((enc.encode(left)?, enc.encode(right)?))
}

/// Turns the key columns of either side of one join into [`JoinKeys`] the other side's compare
/// with, batch by batch if need be (a streamed probe side). The two columns of a key must have
/// one type once dictionaries are decoded, except that integers of any width and signedness
/// join by value (a value only one side's type can hold, such as a `UInt64` ≥ 2^63 against an
/// `Int64`, matches nothing), and strings (binaries) of any offset width join with each other.
pub struct KeyEncoder {
    casts: Vec<KeyCast>,
    /// Row format of the keys, unless they are one integer column.
    rows: Option<RowConverter>,
}

/// What a key column becomes before it is encoded.
enum KeyCast {
    Keep,
    /// Integers of different types: `Int64` by value.
    ExactI64,
    To(DataType),
}

impl KeyEncoder {
    /// The encoder for key columns of types `left` and `right` (as stored, dictionaries
    /// included); `left_on`/`right_on` name them in messages.
    ///
    /// # Errors
    /// Key types that cannot be compared, naming the join, both columns and their types, or
    /// key types the row format does not take.
    pub fn new(
        left: &[DataType],
        right: &[DataType],
        join: &str,
        (left_on, right_on): (&[String], &[String]),
    ) -> Result<KeyEncoder, OperatorError> {
        let mut casts = Vec::with_capacity(left.len());
        let mut types = Vec::with_capacity(left.len());
        for (i, (l, r)) in left.iter().zip(right).enumerate() {
            let (lt, rt) = (crate::keys::key_type(l), crate::keys::key_type(r));
            let (cast, ty) = if lt == rt {
                (KeyCast::Keep, lt)
            } else if lt.is_integer() && rt.is_integer() {
                (KeyCast::ExactI64, DataType::Int64)
            } else if is_string(&lt) && is_string(&rt) {
                (KeyCast::To(DataType::LargeUtf8), DataType::LargeUtf8)
            } else if is_binary(&lt) && is_binary(&rt) {
                (KeyCast::To(DataType::LargeBinary), DataType::LargeBinary)
            } else {
                let name = |names: &[String]| {
                    names.get(i).map_or_else(|| format!("{}", i + 1), |n| format!("`{n}`"))
                };
                return Err(OperatorError::Invalid(format!(
                    "`{join}`: key {} ({} on the left, {} on the right) is {lt} on the left but {rt} on the right; \
                     give both one type (integers of any width and strings of any kind join with each other)",
                    i + 1,
                    name(left_on),
                    name(right_on),
                )));
            };
            casts.push(cast);
            types.push(ty);
        }
        let rows = if types.len() == 1 && is_int(&types[0]) {
            None
        } else {
            Some(RowConverter::new(types.into_iter().map(SortField::new).collect())?)
        };
        Ok(KeyEncoder { casts, rows })
    }

    /// The keys of one side's key columns (of the types this encoder was made for).
    ///
    /// # Errors
    /// An Arrow error decoding a dictionary, casting or encoding rows.
    pub fn encode(&self, cols: &[ArrayRef]) -> Result<JoinKeys, OperatorError> {
        let mut cols = crate::keys::key_columns(cols)?;
        for (c, cast) in cols.iter_mut().zip(&self.casts) {
            match cast {
                KeyCast::Keep => {}
                KeyCast::ExactI64 => *c = exact_i64(c)?,
                KeyCast::To(t) => *c = arrow_cast::cast(c, t)?,
            }
        }
        match &self.rows {
            None => int_keys(&cols[0]),
            Some(conv) => row_keys(conv, &cols),
        }
    }
}

/// True for the UTF-8 string types (every offset width and the view).
pub fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_binary(t: &DataType) -> bool {
    matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView)
}

/// An integer column as `Int64` by value; a `UInt64` value above `i64::MAX` (which no other
/// integer type's value can equal) becomes null, so that it matches nothing.
fn exact_i64(col: &ArrayRef) -> Result<ArrayRef, OperatorError> {
    match col.data_type() {
        DataType::UInt64 => {
            let a = col.as_primitive::<UInt64Type>();
            Ok(std::sync::Arc::new(a.unary_opt::<_, Int64Type>(|v| i64::try_from(v).ok())))
        }
        _ => Ok(arrow_cast::cast(col, &DataType::Int64)?),
    }
}

fn int_keys(col: &ArrayRef) -> Result<JoinKeys, OperatorError> {
    let col = if col.data_type() == &DataType::Int64 {
        col.clone()
    } else {
        arrow_cast::cast(col, &DataType::Int64)?
    };
    let a = col.as_primitive::<Int64Type>();
    Ok(JoinKeys::Int { values: a.values().clone(), nulls: a.nulls().cloned() })
}

fn row_keys(conv: &RowConverter, cols: &[ArrayRef]) -> Result<JoinKeys, OperatorError> {
    let rows = conv.convert_columns(cols)?;
    let n = rows.num_rows();
    let valid = (0..n).map(|i| cols.iter().all(|c| c.is_valid(i))).collect();
    let hashes = (0..n).map(|i| xxhash_rust::xxh3::xxh3_64(rows.row(i).as_ref())).collect();
    Ok(JoinKeys::Rows { rows, valid, hashes })
}

impl JoinKeys {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            JoinKeys::Int { values, .. } => values.len(),
            JoinKeys::Rows { valid, .. } => valid.len(),
        }
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// False when a key column is null in row `i` (such a row never matches).
    #[inline]
    pub fn valid(&self, i: usize) -> bool {
        match self {
            JoinKeys::Int { nulls, .. } => nulls.as_ref().is_none_or(|n| n.is_valid(i)),
            JoinKeys::Rows { valid, .. } => valid[i],
        }
    }

    /// The hash of row `i`'s key (meaningless for a row with a null key).
    #[inline]
    pub fn hash(&self, i: usize) -> u64 {
        match self {
            JoinKeys::Int { values, .. } => (values[i] as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            JoinKeys::Rows { hashes, .. } => hashes[i],
        }
    }

    /// Orders row `i` of these keys against row `j` of `other` (keys of the two sides of one
    /// join, from [`join_keys`]).
    #[inline]
    pub fn compare(&self, i: usize, other: &JoinKeys, j: usize) -> std::cmp::Ordering {
        match (self, other) {
            (JoinKeys::Int { values: a, .. }, JoinKeys::Int { values: b, .. }) => a[i].cmp(&b[j]),
            (JoinKeys::Rows { rows: a, .. }, JoinKeys::Rows { rows: b, .. }) => a.row(i).cmp(&b.row(j)),
            // join_keys never mixes representations.
            (JoinKeys::Int { .. }, JoinKeys::Rows { .. }) => std::cmp::Ordering::Less,
            (JoinKeys::Rows { .. }, JoinKeys::Int { .. }) => std::cmp::Ordering::Greater,
        }
    }

    /// The rows with a valid key sorted by key, and the rows with a null in a key column.
    pub fn sorted(&self) -> (Vec<u32>, Vec<u32>) {
        let (mut valid, nulls): (Vec<u32>, Vec<u32>) =
            (0..self.len() as u32).partition(|&i| self.valid(i as usize));
        match self {
            JoinKeys::Int { values, .. } => valid.sort_by_key(|&i| values[i as usize]),
            JoinKeys::Rows { rows, .. } => {
                valid.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)))
            }
        }
        (valid, nulls)
    }

    /// True when equal hashes mean equal keys: one integer key, whose hash (a multiplication
    /// by an odd constant modulo 2^64) is a bijection.
    #[inline]
    pub fn hash_decides(&self) -> bool {
        matches!(self, JoinKeys::Int { .. })
    }

    #[inline]
    fn equal(&self, i: usize, other: &JoinKeys, j: usize) -> bool {
        match (self, other) {
            (JoinKeys::Int { values: a, .. }, JoinKeys::Int { values: b, .. }) => a[i] == b[j],
            (JoinKeys::Rows { rows: a, hashes: ha, .. }, JoinKeys::Rows { rows: b, hashes: hb, .. }) => {
                ha[i] == hb[j] && a.row(i) == b.row(j)
            }
            _ => false,
        }
    }
}

/// Rows per build partition that [`partition_bits`] aims at: a partition's table (bucket
/// heads, chain links, hashes and row ids: about 24 bytes a row) then stays in a core's L2
/// cache while its probe rows are matched.
const ROWS_PER_PARTITION: usize = 8192;

/// How many top hash bits split a build side of `rows` rows into partitions of about
/// `ROWS_PER_PARTITION` rows (at most 2^14 partitions).
pub fn partition_bits(rows: usize) -> u32 {
    let parts = rows.div_ceil(ROWS_PER_PARTITION).next_power_of_two();
    parts.trailing_zeros().min(14)
}

/// The rows of one join side with a valid key, grouped by the top `bits` bits of their key hash
/// (a radix partitioning, as in the partitioned hash joins of Manegold et al., "Optimizing
/// Main-Memory Join on Modern Hardware", 2002): hashes and row ids partition by partition, rows
/// ascending within one. Rows with a null key are listed apart; they never match.
pub struct Partitions {
    bits: u32,
    offsets: Vec<usize>,
    hashes: Vec<u64>,
    rows: Vec<u32>,
    /// Rows with a null in a key column.
    pub nulls: Vec<u32>,
}

impl Partitions {
    /// Partitions the rows of `keys` by the top `bits` bits of their hash.
    ///
    /// # Errors
    /// More rows than a `u32` row id can name.
    pub fn new(keys: &JoinKeys, bits: u32) -> Result<Partitions, OperatorError> {
        let n = keys.len();
        fits_row_ids(n)?;
        let part = |h: u64| if bits == 0 { 0 } else { (h >> (64 - bits)) as usize };
        let mut offsets = vec![0usize; (1 << bits) + 1];
        let mut nulls = Vec::new();
        for i in 0..n {
            if keys.valid(i) {
                offsets[part(keys.hash(i)) + 1] += 1;
            } else {
                nulls.push(i as u32);
            }
        }
        for p in 1..offsets.len() {
            offsets[p] += offsets[p - 1];
        }
        let total = offsets[offsets.len() - 1];
        let mut fill = offsets.clone();
        let mut hashes = vec![0u64; total];
        let mut rows = vec![0u32; total];
        for i in 0..n {
            if keys.valid(i) {
                let h = keys.hash(i);
                let at = &mut fill[part(h)];
                hashes[*at] = h;
                rows[*at] = i as u32;
                *at += 1;
            }
        }
        Ok(Partitions { bits, offsets, hashes, rows, nulls })
    }

    /// Number of partitions.
    pub fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The positions of partition `p`'s rows (indices for [`Partitions::row`]).
    pub fn range(&self, p: usize) -> std::ops::Range<usize> {
        self.offsets[p]..self.offsets[p + 1]
    }

    /// The row id at position `at`.
    #[inline]
    pub fn row(&self, at: usize) -> u32 {
        self.rows[at]
    }
}

/// Refuses a join side of more rows than a `u32` row id (below [`END`]) can name.
fn fits_row_ids(n: usize) -> Result<(), OperatorError> {
    if n >= END as usize {
        return Err(OperatorError::Invalid(format!(
            "a join side of {n} rows on one worker is too large; use more workers"
        )));
    }
    Ok(())
}

/// One hash index over a whole build side, which a probe side streams through batch by batch:
/// the rows with a valid key ordered by the top `bits` bits of their hash (about one row a
/// bucket), with the offset of each bucket's first row (a compressed-sparse-row table: a lookup
/// reads one offset pair, then its bucket's hashes and row ids side by side). Sorted in two
/// radix passes, at most 12 top bits first, then the rest within each partition (through a
/// copy of the partition), so that both passes scatter into ranges that stay in cache.
pub struct BuildIndex {
    bits: u32,
    offsets: Vec<u32>,
    entries: Vec<Entry>,
}

/// A build row in a [`BuildIndex`]: its key hash and row id side by side (one cache line).
#[derive(Clone, Copy, Default)]
struct Entry {
    hash: u64,
    row: u32,
}

/// Where a probe row's key may be in a [`BuildIndex`]: its hash and its bucket's positions
/// (empty for a null key).
#[derive(Clone, Copy)]
pub struct Lookup {
    /// The key's hash.
    pub hash: u64,
    /// First bucket position.
    pub start: u32,
    /// One past the last.
    pub end: u32,
}

/// How many rows ahead a probe asks for the cache lines it will read (Chen, Ailamaki, Gibbons
/// and Mowry, "Improving Hash Join Performance through Prefetching", ICDE 2004): far enough
/// that a line arrives from memory before it is needed, near enough that it is not evicted.
pub const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to bring `slice[i]` into its cache ahead of use; nothing when `i` is out of
/// range, and nothing off x86-64.
#[inline(always)]
pub fn prefetch<T>(slice: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = slice.get(i) {
        // SAFETY: a prefetch is a hint: it changes no memory, cannot fault, and the address is
        // that of a live element of `slice`.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                std::ptr::from_ref(x).cast(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slice, i);
}

/// Bits of the first radix pass of [`BuildIndex::new`]: 4,096 partitions, whose fill counters
/// (and, for millions of rows, partitions of a few thousand rows) stay in a core's cache.
const FIRST_PASS_BITS: u32 = 12;

impl BuildIndex {
    /// The index of `keys` (rows with a null key are left out: they never match).
    ///
    /// # Errors
    /// More rows than a `u32` row id can name.
    pub fn new(keys: &JoinKeys) -> Result<BuildIndex, OperatorError> {
        let n = keys.len();
        fits_row_ids(n)?;
        let bits = n.next_power_of_two().trailing_zeros();
        let top = bits.min(FIRST_PASS_BITS);
        let low = bits - top;
        let part = |h: u64| if top == 0 { 0 } else { (h >> (64 - top)) as usize };
        let local = |h: u64| if low == 0 { 0 } else { ((h << top) >> (64 - low)) as usize };
        // First pass: the valid rows grouped by the top bits, straight into the entries.
        let mut starts = vec![0u32; (1 << top) + 1];
        for i in (0..n).filter(|&i| keys.valid(i)) {
            starts[part(keys.hash(i)) + 1] += 1;
        }
        for p in 1..starts.len() {
            starts[p] += starts[p - 1];
        }
        let total = starts[1 << top] as usize;
        let mut entries = vec![Entry::default(); total];
        let mut fill = starts.clone();
        for i in (0..n).filter(|&i| keys.valid(i)) {
            let hash = keys.hash(i);
            let at = &mut fill[part(hash)];
            entries[*at as usize] = Entry { hash, row: i as u32 };
            *at += 1;
        }
        // Second pass, partition by partition: ordered by the next bits through a copy of the
        // partition (a few thousand entries, in cache).
        let mut offsets = vec![0u32; (1usize << bits) + 1];
        let mut scratch: Vec<Entry> = Vec::new();
        let mut fill = vec![0u32; 1 << low];
        for p in 0..1usize << top {
            let range = starts[p] as usize..starts[p + 1] as usize;
            scratch.clear();
            scratch.extend_from_slice(&entries[range.clone()]);
            fill.fill(0);
            for e in &scratch {
                fill[local(e.hash)] += 1;
            }
            let mut at = range.start as u32;
            for (b, f) in fill.iter_mut().enumerate() {
                offsets[(p << low) + b] = at;
                let count = *f;
                *f = at;
                at += count;
            }
            for e in &scratch {
                let slot = &mut fill[local(e.hash)];
                entries[*slot as usize] = *e;
                *slot += 1;
            }
        }
        offsets[1 << bits] = total as u32;
        Ok(BuildIndex { bits, offsets, entries })
    }

    #[inline]
    fn bucket_of(&self, h: u64) -> usize {
        if self.bits == 0 { 0 } else { (h >> (64 - self.bits)) as usize }
    }

    /// The positions (for [`BuildIndex::entry`]) of the bucket of hash `h`.
    #[inline]
    pub fn bucket(&self, h: u64) -> std::ops::Range<usize> {
        let b = self.bucket_of(h);
        self.offsets[b] as usize..self.offsets[b + 1] as usize
    }

    /// The bucket of every row of `probe` (a probe batch's keys), the bucket offsets fetched
    /// [`PREFETCH_AHEAD`] rows ahead so that their cache misses overlap.
    pub fn lookups(&self, probe: &JoinKeys) -> Vec<Lookup> {
        let n = probe.len();
        let hashes: Vec<u64> = (0..n).map(|i| probe.hash(i)).collect();
        let mut out = Vec::with_capacity(n);
        for (i, &hash) in hashes.iter().enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                prefetch(&self.offsets, self.bucket_of(ahead));
            }
            out.push(if probe.valid(i) {
                let b = self.bucket_of(hash);
                Lookup { hash, start: self.offsets[b], end: self.offsets[b + 1] }
            } else {
                Lookup { hash, start: 0, end: 0 }
            });
        }
        out
    }

    /// Asks for the first entry of a bucket (see [`prefetch`]).
    #[inline]
    pub fn prefetch_entry(&self, e: u32) {
        prefetch(&self.entries, e as usize);
    }

    /// Whether the build row at bucket position `e` has the key of row `i` of `probe` (of hash
    /// `h`), and that build row's id.
    #[inline]
    pub fn entry(&self, e: usize, build: &JoinKeys, probe: &JoinKeys, i: usize, h: u64) -> (bool, u32) {
        let Entry { hash, row } = self.entries[e];
        let equal = hash == h && (build.hash_decides() || build.equal(row as usize, probe, i));
        (equal, row)
    }
}

/// The hash table of one build partition: bucket heads indexed by the hash bits below the
/// partition bits, rows of a bucket chained through `next` (positions within the partition).
/// Rebuilt for each partition in the same allocations.
#[derive(Default)]
pub struct PartitionTable {
    part: Option<usize>,
    start: usize,
    shift: u32,
    heads: Vec<u32>,
    next: Vec<u32>,
}

impl PartitionTable {
    /// Makes this the table of partition `p` of `build` (nothing to do when it already is).
    pub fn build(&mut self, build: &Partitions, p: usize) {
        if self.part == Some(p) {
            return;
        }
        let range = build.range(p);
        let m = range.len();
        let buckets = (2 * m).next_power_of_two().max(2);
        self.part = Some(p);
        self.start = range.start;
        self.shift = 64 - buckets.trailing_zeros();
        self.heads.clear();
        self.heads.resize(buckets, END);
        self.next.clear();
        self.next.resize(m, END);
        // In reverse, so that chains list rows in ascending order.
        for local in (0..m).rev() {
            let b = self.bucket(build.bits, build.hashes[range.start + local]);
            self.next[local] = self.heads[b];
            self.heads[b] = local as u32;
        }
    }

    #[inline]
    fn bucket(&self, bits: u32, h: u64) -> usize {
        ((h << bits) >> self.shift) as usize
    }

    /// The first entry of the chain of probe position `at` (of `probe`, in the partition this
    /// table was built for), or [`END`].
    #[inline]
    pub fn head(&self, probe: &Partitions, at: usize) -> u32 {
        self.heads[self.bucket(probe.bits, probe.hashes[at])]
    }

    /// Whether chain entry `local` matches probe position `at` (keys compared through
    /// `build_keys`/`probe_keys` unless the hash decides), its build row, and the chain's next
    /// entry.
    #[inline]
    pub fn step(
        &self,
        local: u32,
        (build, build_keys): (&Partitions, &JoinKeys),
        (probe, probe_keys): (&Partitions, &JoinKeys),
        at: usize,
    ) -> (bool, u32, u32) {
        let b = self.start + local as usize;
        let row = build.rows[b];
        let equal = build.hashes[b] == probe.hashes[at]
            && (build_keys.hash_decides()
                || build_keys.equal(row as usize, probe_keys, probe.rows[at] as usize));
        (equal, row, self.next[local as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    /// The build rows matching probe row `j`, found through partitions of 0 and of 2 bits
    /// (which must agree).
    fn matches(b: &JoinKeys, p: &JoinKeys, j: usize) -> Vec<u32> {
        let mut found = Vec::new();
        for bits in [0, 2] {
            let bp = Partitions::new(b, bits).expect("build partitions");
            let pp = Partitions::new(p, bits).expect("probe partitions");
            let mut table = PartitionTable::default();
            let mut v = Vec::new();
            for part in 0..pp.count() {
                for at in pp.range(part).filter(|&at| pp.row(at) as usize == j) {
                    table.build(&bp, part);
                    let mut c = table.head(&pp, at);
                    while c != END {
                        let (equal, row, next) = table.step(c, (&bp, b), (&pp, p), at);
                        if equal {
                            v.push(row);
                        }
                        c = next;
                    }
                }
            }
            found.push(v);
        }
        assert_eq!(found[0], found[1], "partitioning changes no match");
        let index = BuildIndex::new(b).expect("index");
        let mut streamed: Vec<u32> = if p.valid(j) {
            let h = p.hash(j);
            index
                .bucket(h)
                .filter_map(|e| Some(index.entry(e, b, p, j, h)).filter(|m| m.0).map(|m| m.1))
                .collect()
        } else {
            Vec::new()
        };
        streamed.sort_unstable();
        assert_eq!(streamed, found[0], "the whole-side index finds what the partitioned tables do");
        found.swap_remove(0)
    }

    #[test]
    fn int_keys_of_different_widths_match_and_nulls_never_do() {
        let build: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(1), None]));
        let probe: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(3)]));
        let (b, p) = join_keys(&[build], &[probe], "j", (&[], &[])).expect("keys");
        assert_eq!(matches(&b, &p, 0), vec![0, 2]);
        assert!(matches(&b, &p, 1).is_empty());
        assert!(matches(&b, &p, 2).is_empty());
    }

    #[test]
    fn row_keys_compare_whole_keys_not_just_hashes() {
        let names: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b"), None, Some("a")]));
        let probe: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("c"), None]));
        let (b, p) = join_keys(&[names], &[probe], "j", (&[], &[])).expect("keys");
        assert_eq!(matches(&b, &p, 0), vec![0, 3]);
        assert!(matches(&b, &p, 1).is_empty());
        assert!(matches(&b, &p, 2).is_empty(), "a null key matches nothing, not even a null");
    }

    #[test]
    fn the_whole_side_index_finds_every_match_across_both_radix_passes() {
        // 20,000 build rows: 2^15 buckets, sorted by 12 bits, then by 3 more within each.
        let build: ArrayRef =
            Arc::new(Int64Array::from_iter((0..20_000i64).map(|i| (i % 7 != 0).then_some(i % 9_000))));
        let probe: ArrayRef = Arc::new(Int64Array::from_iter((0..10_000i64).map(|i| Some(i - 500))));
        let (b, p) = join_keys(&[build], &[probe], "j", (&[], &[])).expect("keys");
        let index = BuildIndex::new(&b).expect("index");
        for j in 0..p.len() {
            let h = p.hash(j);
            let mut got: Vec<u32> =
                index.bucket(h).map(|e| index.entry(e, &b, &p, j, h)).filter(|m| m.0).map(|m| m.1).collect();
            got.sort_unstable();
            let key = j as i64 - 500;
            let want: Vec<u32> =
                (0..20_000u32).filter(|&i| i % 7 != 0 && i64::from(i) % 9_000 == key).collect();
            assert_eq!(got, want, "probe key {key}");
        }
    }

    #[test]
    fn an_empty_side_builds_an_empty_table() {
        let empty: ArrayRef = Arc::new(Int64Array::from(Vec::<i64>::new()));
        let probe: ArrayRef = Arc::new(Int64Array::from(vec![1]));
        let (b, p) = join_keys(&[empty], &[probe], "j", (&[], &[])).expect("keys");
        assert!(matches(&b, &p, 0).is_empty());
    }
}
