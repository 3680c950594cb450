//! Row-wise storage of the group-by's fixed-width accumulator states: every group has one row
//! of 64-bit words holding the states of all its fixed-width aggregates (counts, sums, means,
//! moments, min and max of numbers) side by side, so that adding a row to its group touches one
//! or two cache lines whatever the number of aggregates, instead of one or more per aggregate
//! (the per-aggregate vectors it replaces cost a cache miss each on a large table). The row
//! layout of the aggregate states is the one of DuckDB's and DataFusion's row-wise accumulators;
//! rows live in fixed-size blocks, so the table grows without copying what it holds.

use std::ops::Range;

/// Groups per block: a block of eight words a group is 256 KiB.
const BLOCK: usize = 4096;

/// A flag bit of a group's row: word `word`, bit `bit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag {
    word: usize,
    bit: u32,
}

impl Flag {
    fn mask(self) -> u64 {
        1 << self.bit
    }
}

/// Hands out the words of a row while the accumulators are built.
#[derive(Debug, Default)]
pub(crate) struct Layout {
    width: usize,
    /// The flags word being filled and its next free bit.
    flags: Option<(usize, u32)>,
}

impl Layout {
    /// `n` consecutive words; returns the first one's offset.
    pub(crate) fn words(&mut self, n: usize) -> usize {
        let off = self.width;
        self.width += n;
        off
    }

    /// One flag bit (64 to a word).
    pub(crate) fn flag(&mut self) -> Flag {
        match self.flags {
            Some((word, bit)) if bit < 64 => {
                self.flags = Some((word, bit + 1));
                Flag { word, bit }
            }
            _ => {
                let word = self.words(1);
                self.flags = Some((word, 1));
                Flag { word, bit: 0 }
            }
        }
    }
}

/// One row of `width` zero-initialised words per group, in blocks of [`BLOCK`] groups.
#[derive(Debug)]
pub(crate) struct Slab {
    width: usize,
    blocks: Vec<Vec<u64>>,
    groups: usize,
}

impl Slab {
    /// An empty slab with the rows `layout` made.
    pub(crate) fn new(layout: &Layout) -> Slab {
        Slab { width: layout.width, blocks: Vec::new(), groups: 0 }
    }

    /// Makes room for `groups` groups (new rows are zero). The first block grows with the
    /// groups (a small table holds little), the others are allocated whole.
    pub(crate) fn grow(&mut self, groups: usize) {
        if groups <= self.groups {
            return;
        }
        if self.width > 0 {
            if self.blocks.is_empty() {
                self.blocks.push(Vec::new());
            }
            if let Some(first) = self.blocks.first_mut() {
                first.resize(groups.min(BLOCK) * self.width, 0);
            }
            while self.blocks.len() * BLOCK < groups {
                self.blocks.push(vec![0; BLOCK * self.width]);
            }
        }
        self.groups = groups;
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.capacity() as u64 * 8).sum()
    }

    /// The row of group `g`; `None` beyond [`Slab::grow`]'s groups.
    #[inline]
    pub(crate) fn row(&mut self, g: usize) -> Option<&mut [u64]> {
        if g >= self.groups {
            return None;
        }
        let w = self.width;
        let block = self.blocks.get_mut(g / BLOCK)?;
        let at = (g % BLOCK) * w;
        block.get_mut(at..at + w)
    }

    /// Asks the CPU to bring the row of group `g` into its cache ahead of use (its first
    /// cache line); nothing beyond the groups grown.
    #[inline]
    pub(crate) fn prefetch(&self, g: usize) {
        if let Some(block) = self.blocks.get(g / BLOCK) {
            crate::hash_table::prefetch(block, (g % BLOCK) * self.width);
        }
    }

    /// Word `off` of the groups `range` (clamped to the groups grown), in group order.
    pub(crate) fn column(&self, off: usize, range: Range<usize>) -> impl Iterator<Item = u64> + '_ {
        let w = self.width;
        let range = range.start.min(self.groups)..range.end.min(self.groups);
        range.map(move |g| {
            self.blocks.get(g / BLOCK).and_then(|b| b.get((g % BLOCK) * w + off)).map_or(0, |v| *v)
        })
    }

    /// Flag `f` of the groups `range`, in group order.
    pub(crate) fn flags(&self, f: Flag, range: Range<usize>) -> impl Iterator<Item = bool> + '_ {
        self.column(f.word, range).map(move |w| w & f.mask() != 0)
    }
}

/// Flag `f` of `row`.
pub(crate) fn flag_set(row: &[u64], f: Flag) -> bool {
    row[f.word] & f.mask() != 0
}

/// Sets flag `f` of `row`.
pub(crate) fn set_flag(row: &mut [u64], f: Flag) {
    row[f.word] |= f.mask();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_words_across_blocks_and_flags_pack_64_to_a_word() {
        let mut layout = Layout::default();
        let a = layout.words(2);
        let flags: Vec<Flag> = (0..65).map(|_| layout.flag()).collect();
        let b = layout.words(1);
        assert_eq!((a, b), (0, 4), "two words, two flag words, one word");
        let mut slab = Slab::new(&layout);
        slab.grow(10);
        assert_eq!(slab.bytes(), 10 * 5 * 8, "a small table holds its rows only");
        let n = 3 * BLOCK + 5;
        slab.grow(n);
        assert!(slab.row(n).is_none(), "no row past the groups grown");
        for g in 0..n {
            let row = slab.row(g).expect("row");
            row[a] = g as u64;
            row[b] = 2 * g as u64;
            if g % 3 == 0 {
                set_flag(row, flags[64]);
            }
        }
        assert!(slab.column(a, 0..n).eq(0..n as u64));
        assert!(
            slab.column(b, 5..n + 9).eq((5..n as u64).map(|g| 2 * g)),
            "a range is clamped to the groups"
        );
        assert!(slab.flags(flags[64], 0..n).eq((0..n).map(|g| g % 3 == 0)));
        assert!(slab.flags(flags[0], 0..n).all(|f| !f));
        assert_eq!(slab.bytes(), (4 * BLOCK * 5 * 8) as u64);
    }
}
