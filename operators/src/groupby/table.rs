//! The group-by's hash table: open addressing with linear probing, a slot per (key word, group
//! id), looked up a batch at a time with each row's slot prefetched [`PREFETCH_AHEAD`] rows
//! ahead, so that the cache misses of a table far larger than the cache overlap instead of
//! following one another (the batched lookups of Chen et al., "Improving Hash Join
//! Performance through Prefetching", ICDE 2004, applied to aggregation).
//!
//! A key word is the key itself for one integer column (equal words, equal keys), or a
//! 64-bit hash of the key's row for any other key set (equal words, then the rows compared).

use crate::hash_table::{PREFETCH_AHEAD, prefetch};

/// A slot: a key word and its group id, or [`EMPTY`].
#[derive(Debug, Clone, Copy)]
struct Slot {
    word: u64,
    gid: u32,
}

/// The group id of a free slot.
const EMPTY: u32 = u32::MAX;

/// Slots are at most this many tenths full: linear probing needs about 1.7 probes for a key
/// found and 6 for a new key at 0.7 (Knuth, TAOCP vol. 3, 6.4), most within one cache line.
const MAX_LOAD_TENTHS: usize = 7;

/// Rows looked up between two checks of the load: the table grows at most this many keys
/// ahead of those it holds (a table of a few groups stays small, whatever the batch size).
const CHUNK: usize = 4096;

/// The keys of a group-by: what the table asks of them while it looks up a batch.
pub(super) trait GroupKeys {
    /// The slot position bits of `word`: the word itself when it is already a hash.
    fn hash(word: u64) -> u64;
    /// Whether row `i` of the batch has the key of group `gid` (their words being equal).
    fn same(&self, i: usize, gid: u32) -> bool;
    /// A new group for row `i` of the batch (`None`: a null key, a group of its own that the
    /// table does not hold); returns its id.
    fn add(&mut self, i: Option<usize>) -> u32;
}

/// Key words to group ids; ids are handed out in order of first appearance by
/// [`GroupKeys::add`].
#[derive(Debug, Default)]
pub(super) struct GroupTable {
    slots: Vec<Slot>,
    len: usize,
}

impl GroupTable {
    /// Bytes held by the slots.
    pub(super) fn bytes(&self) -> u64 {
        (self.slots.capacity() * std::mem::size_of::<Slot>()) as u64
    }

    /// Makes room for `more` keys beyond those held, so that no insert of the next chunk of
    /// rows grows the table: doubles it (re-placing every key) until they fit under the load
    /// limit.
    fn reserve<K: GroupKeys>(&mut self, more: usize) {
        let need = self.len + more;
        let mut cap = self.slots.len().max(16);
        while need * 10 > cap * MAX_LOAD_TENTHS {
            cap *= 2;
        }
        if cap == self.slots.len() {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![Slot { word: 0, gid: EMPTY }; cap]);
        let mask = cap - 1;
        for s in old.into_iter().filter(|s| s.gid != EMPTY) {
            let mut at = K::hash(s.word) as usize & mask;
            while self.slots[at].gid != EMPTY {
                at = (at + 1) & mask;
            }
            self.slots[at] = s;
        }
    }

    /// The group id of each row of a batch whose key words are `words`; rows that are not
    /// `valid` go to `keys.add(None)`.
    pub(super) fn ids<K: GroupKeys>(
        &mut self,
        words: &[u64],
        valid: impl Fn(usize) -> bool,
        keys: &mut K,
    ) -> Vec<u32> {
        let mut gids = Vec::with_capacity(words.len());
        let mut homes = Vec::with_capacity(CHUNK.min(words.len()));
        for (start, chunk) in (0..).step_by(CHUNK).zip(words.chunks(CHUNK)) {
            self.reserve::<K>(chunk.len());
            let mask = self.slots.len() - 1;
            homes.clear();
            homes.extend(chunk.iter().map(|&w| K::hash(w) as usize & mask));
            for (i, (&word, &home)) in chunk.iter().zip(&homes).enumerate() {
                if let Some(&ahead) = homes.get(i + PREFETCH_AHEAD) {
                    prefetch(&self.slots, ahead);
                }
                gids.push(self.id(start + i, word, home, &valid, keys));
            }
        }
        gids
    }

    /// The group id of row `i` of the batch, of key word `word` and home slot `home`.
    #[inline]
    fn id<K: GroupKeys>(
        &mut self,
        i: usize,
        word: u64,
        home: usize,
        valid: impl Fn(usize) -> bool,
        keys: &mut K,
    ) -> u32 {
        let mask = self.slots.len() - 1;
        if !valid(i) {
            return keys.add(None);
        }
        let mut at = home;
        loop {
            let s = self.slots[at];
            if s.gid == EMPTY {
                let gid = keys.add(Some(i));
                self.slots[at] = Slot { word, gid };
                self.len += 1;
                return gid;
            }
            if s.word == word && keys.same(i, s.gid) {
                return s.gid;
            }
            at = (at + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test keys: optional strings whose word is their length, so that words collide and only
    /// `same` tells keys apart; `None` is the null key.
    struct Strings<'a> {
        batch: &'a [Option<String>],
        groups: Vec<Option<String>>,
        null: Option<u32>,
    }

    impl GroupKeys for Strings<'_> {
        fn hash(word: u64) -> u64 {
            word.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        }
        fn same(&self, i: usize, gid: u32) -> bool {
            self.groups[gid as usize] == self.batch[i]
        }
        fn add(&mut self, i: Option<usize>) -> u32 {
            if i.is_none()
                && let Some(g) = self.null
            {
                return g;
            }
            self.groups.push(i.and_then(|i| self.batch[i].clone()));
            let g = (self.groups.len() - 1) as u32;
            if i.is_none() {
                self.null = Some(g);
            }
            g
        }
    }

    #[test]
    fn ids_follow_first_appearance_across_growth_colliding_words_and_null_keys() {
        // Many batches, so that the table doubles between them, and one of several chunks; at
        // most 4 distinct lengths.
        let batches: Vec<Vec<Option<String>>> = (0..40u64)
            .map(|b| {
                (0..if b == 7 { 3 * CHUNK as u64 + 5 } else { 997 })
                    .map(|i| (i % 13 != 5).then(|| format!("{:x}", (i * 7919 + b * 31) % 5000 + 0x100)))
                    .collect()
            })
            .collect();
        let mut t = GroupTable::default();
        let mut keys = Strings { batch: &[], groups: Vec::new(), null: None };
        let mut want: std::collections::HashMap<Option<String>, u32> = std::collections::HashMap::new();
        for batch in &batches {
            let words: Vec<u64> = batch.iter().map(|k| k.as_ref().map_or(0, |s| s.len() as u64)).collect();
            keys.batch = batch;
            let gids = t.ids(&words, |i| batch[i].is_some(), &mut keys);
            for (k, g) in batch.iter().zip(&gids) {
                let next = want.len() as u32;
                assert_eq!(
                    *g,
                    *want.entry(k.clone()).or_insert(next),
                    "{k:?}: ids in order of first appearance"
                );
            }
        }
        assert_eq!(keys.groups.len(), want.len(), "one group per distinct key, null included");
        assert_eq!(t.len, want.len() - 1, "the null key is not in the table");
        assert!(t.len * 10 <= t.slots.len() * MAX_LOAD_TENTHS);
    }

    #[test]
    fn a_few_groups_keep_a_small_table_whatever_the_batch_size() {
        let batch: Vec<Option<String>> = (0..100_000).map(|i| Some(format!("k{}", i % 3))).collect();
        let words = vec![2u64; batch.len()];
        let mut t = GroupTable::default();
        let mut keys = Strings { batch: &batch, groups: Vec::new(), null: None };
        let gids = t.ids(&words, |_| true, &mut keys);
        assert!(gids.iter().enumerate().all(|(i, g)| *g as usize == i % 3));
        assert!(t.slots.len() <= 2 * CHUNK, "{} slots for 3 groups", t.slots.len());
    }
}
