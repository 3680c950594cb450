//! The group-by's table for one integer key column: open addressing with linear probing, a
//! slot per (key, group id), looked up a batch at a time with each row's slot prefetched
//! [`PREFETCH_AHEAD`] rows ahead, so that the cache misses of a table far larger than the cache
//! overlap instead of following one another (the batched lookups of Chen et al., "Improving
//! Hash Join Performance through Prefetching", ICDE 2004, applied to aggregation).

use crate::hash_table::{PREFETCH_AHEAD, prefetch};

/// A slot: a key and its group id, or [`EMPTY`].
#[derive(Debug, Clone, Copy)]
struct Slot {
    key: i64,
    gid: u32,
}

/// The group id of a free slot.
const EMPTY: u32 = u32::MAX;

/// Slots are at most this many tenths full: linear probing needs about 1.7 probes for a key
/// found and 6 for a new key at 0.7 (Knuth, TAOCP vol. 3, 6.4), most within one cache line.
const MAX_LOAD_TENTHS: usize = 7;

/// Keys to group ids; ids are handed out in order of first appearance by the caller.
#[derive(Debug, Default)]
pub(super) struct IntTable {
    slots: Vec<Slot>,
    len: usize,
}

/// MurmurHash3's 64-bit finaliser (Appleby, 2008): every input bit moves every output bit, so
/// the slot bits (low) vary with every key bit.
fn mix(v: i64) -> u64 {
    let mut k = v as u64;
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

impl IntTable {
    /// Bytes held by the slots.
    pub(super) fn bytes(&self) -> u64 {
        (self.slots.capacity() * std::mem::size_of::<Slot>()) as u64
    }

    /// Makes room for `more` keys beyond those held, so that no insert of the next batch
    /// grows the table: doubles it (re-placing every key) until they fit under the load limit.
    fn reserve(&mut self, more: usize) {
        let need = self.len + more;
        let mut cap = self.slots.len().max(16);
        while need * 10 > cap * MAX_LOAD_TENTHS {
            cap *= 2;
        }
        if cap == self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot { key: 0, gid: EMPTY }; cap]);
        let mask = cap - 1;
        for s in old.into_iter().filter(|s| s.gid != EMPTY) {
            let mut at = mix(s.key) as usize & mask;
            while self.slots[at].gid != EMPTY {
                at = (at + 1) & mask;
            }
            self.slots[at] = s;
        }
    }

    /// The group id of each key of `keys`: `group(Some(key))` gives the id of a key not seen
    /// before, `group(None)` that of a row that is not `valid` (a null key, a group of its own,
    /// which the table does not hold).
    pub(super) fn ids(
        &mut self,
        keys: &[i64],
        valid: impl Fn(usize) -> bool,
        mut group: impl FnMut(Option<i64>) -> u32,
    ) -> Vec<u32> {
        self.reserve(keys.len());
        let mask = self.slots.len() - 1;
        let hashes: Vec<usize> = keys.iter().map(|&k| mix(k) as usize & mask).collect();
        let mut gids = Vec::with_capacity(keys.len());
        for (i, (&key, &home)) in keys.iter().zip(&hashes).enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                prefetch(&self.slots, ahead);
            }
            if !valid(i) {
                gids.push(group(None));
                continue;
            }
            let mut at = home;
            let gid = loop {
                let s = self.slots[at];
                if s.gid == EMPTY {
                    let gid = group(Some(key));
                    self.slots[at] = Slot { key, gid };
                    self.len += 1;
                    break gid;
                }
                if s.key == key {
                    break s.gid;
                }
                at = (at + 1) & mask;
            };
            gids.push(gid);
        }
        gids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_first_appearance_across_growth_and_skip_invalid_rows() {
        let mut t = IntTable::default();
        let mut seen: std::collections::HashMap<i64, u32> = std::collections::HashMap::new();
        let mut next = 0u32;
        // Keys with the same low bits and far apart, negative and extreme, over many batches
        // so that the table doubles between them.
        for batch in 0..40i64 {
            let keys: Vec<i64> = (0..997)
                .map(|i| ((i * 7919 + batch * 31) % 5000 - 2500) << 20)
                .chain([i64::MIN, i64::MAX])
                .collect();
            let gids = t.ids(
                &keys,
                |i| i % 11 != 3,
                |k| match k {
                    Some(_) => {
                        next += 1;
                        next - 1
                    }
                    None => EMPTY - 1,
                },
            );
            for (i, (k, g)) in keys.iter().zip(&gids).enumerate() {
                if i % 11 == 3 {
                    assert_eq!(*g, EMPTY - 1, "an invalid row gets the id given for it");
                    continue;
                }
                let want = *seen.entry(*k).or_insert(*g);
                assert_eq!(*g, want, "key {k} keeps its group");
            }
        }
        assert_eq!(t.len, seen.len());
        assert_eq!(next as usize, seen.len(), "one new group per distinct key");
        assert!(t.len * 10 <= t.slots.len() * MAX_LOAD_TENTHS);
    }
}
