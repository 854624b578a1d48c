//! The lexical index's posting lists, compressed: one feature's list of (content position,
//! n-gram count) pairs, positions ascending, as bytes.
//!
//! A list is its length (a varint), then its postings in blocks of 128, bit-packed with the
//! `bitpacking` crate (tantivy's codec; SIMD to decode): per block the bit widths of its
//! position gaps and of its counts less 1, then the packed gaps (`compress_sorted`, from the
//! block's previous position) and the packed counts (nothing when every count is 1, the
//! usual case). The postings past the last full block, which is all of them in most lists
//! (most n-grams occur in a few contents), are LEB128 varints: the gap shifted left once with
//! the low bit set when the count is above 1, then the count less 2.
//!
//! The index is written in two passes over its contents: the first sizes each list
//! ([`Sizer`]), so the second ([`Writer`]) writes every list straight into its place in one
//! allocation.

use bitpacking::{BitPacker, BitPacker4x};
use std::sync::LazyLock;

/// Postings per packed block.
pub const BLOCK: usize = BitPacker4x::BLOCK_LEN;

/// Bits of `v` (0 for 0), as the packer counts them.
fn bits(v: u32) -> u8 {
    (32 - v.leading_zeros()) as u8
}

/// Bytes of a packed block whose gaps and counts take `gap_bits` and `count_bits`.
fn block_bytes(gap_bits: u8, count_bits: u8) -> u64 {
    2 + BitPacker4x::compressed_block_size(gap_bits) as u64
        + BitPacker4x::compressed_block_size(count_bits) as u64
}

/// Bytes of `v` as a varint.
pub fn put_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Writes `v` as a varint at `out[at..]`; returns the position after it.
fn put_at(out: &mut [u8], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        out[at] = v as u8 | 0x80;
        v >>= 7;
        at += 1;
    }
    out[at] = v as u8;
    at + 1
}

/// The varint at `bytes[at..]` and the position after it.
#[inline(always)]
pub fn get(bytes: &[u8], mut at: usize) -> (u64, usize) {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[at];
        at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return (v, at);
        }
        shift += 7;
    }
}

/// A varint posting: the gap and count flag, then the count when above 1.
fn tail_posting(gap: u32, count: u32) -> (u64, Option<u64>) {
    let more = count > 1;
    (
        (gap as u64) << 1 | more as u64,
        more.then(|| (count - 2) as u64),
    )
}

fn tail_len(gap: u32, count: u32) -> u64 {
    let (head, more) = tail_posting(gap, count);
    (put_len(head) + more.map_or(0, put_len)) as u64
}

/// The first pass's view of one list: its size so far.
#[derive(Default, Clone, Copy)]
pub struct Sizer {
    len: u32,
    last: u32,
    /// Bytes of its full blocks.
    blocks: u64,
    /// The open block's gaps and counts less 1, or-ed (their bit widths).
    gaps: u32,
    counts: u32,
    /// Bytes of the open block's postings as varints (if it stays the tail).
    tail: u64,
}

impl Sizer {
    /// A posting at `pos` (above the last one's) with `count`.
    pub fn add(&mut self, pos: u32, count: u32) {
        let gap = pos - self.last;
        self.gaps |= gap;
        self.counts |= count - 1;
        self.tail += tail_len(gap, count);
        self.len += 1;
        self.last = pos;
        if (self.len as usize).is_multiple_of(BLOCK) {
            self.blocks += block_bytes(bits(self.gaps), bits(self.counts));
            (self.gaps, self.counts, self.tail) = (0, 0, 0);
        }
    }

    /// Postings so far.
    pub fn postings(&self) -> u32 {
        self.len
    }

    /// Bytes of the whole list, its length included.
    pub fn bytes(&self) -> u64 {
        put_len(self.len as u64) as u64 + self.blocks + self.tail
    }
}

/// Where the second pass is in one list (read and written together for each posting: the
/// lists are written in the contents' order, so consecutive postings hit lists far apart,
/// and each separate array would be one more cache miss per posting).
#[derive(Clone, Copy)]
struct Cursor {
    /// Where the list is written up to.
    at: u64,
    last: u32,
    written: u32,
    len: u32,
    /// Its open block (the block's place in `Writer::open`) when it has a full block, else
    /// `u32::MAX`.
    slot: u32,
    /// The position before its open block.
    before: u32,
}

/// The second pass: writes each list into its place, given the lists' lengths and offsets.
pub struct Writer {
    packer: BitPacker4x,
    lists: Vec<Cursor>,
    /// The open block of each list that has a full block, side by side: 128 positions, then
    /// 128 counts less 1 (one flat array: a vector per block cost two more cache misses per
    /// posting, and made the fit of a 10× catalog several times slower).
    open: Vec<u32>,
}

impl Writer {
    /// Heads each list (its length) in `out`, whose list `f` spans `offsets[f]..offsets[f+1]`.
    pub fn new(out: &mut [u8], offsets: &[u64], lens: &[u32]) -> Writer {
        let mut blocks = 0u32;
        let lists = lens
            .iter()
            .enumerate()
            .map(|(f, &n)| {
                let slot = if n as usize >= BLOCK {
                    blocks += 1;
                    blocks - 1
                } else {
                    u32::MAX
                };
                Cursor {
                    at: put_at(out, offsets[f] as usize, n as u64) as u64,
                    last: 0,
                    written: 0,
                    len: n,
                    slot,
                    before: 0,
                }
            })
            .collect();
        Writer {
            packer: BitPacker4x::new(),
            lists,
            open: vec![0; blocks as usize * 2 * BLOCK],
        }
    }

    /// List `f`'s next posting (positions ascending).
    pub fn add(&mut self, out: &mut [u8], f: usize, pos: u32, count: u32) {
        let l = &mut self.lists[f];
        let k = l.written as usize;
        l.written += 1;
        let full = l.len as usize / BLOCK * BLOCK;
        if k < full {
            let block = &mut self.open[l.slot as usize * 2 * BLOCK..][..2 * BLOCK];
            let i = k % BLOCK;
            block[i] = pos;
            block[BLOCK + i] = count - 1;
            if i == BLOCK - 1 {
                let (docs, counts) = block.split_at(BLOCK);
                let at = l.at as usize;
                let initial = l.before;
                let gap_bits = self.packer.num_bits_sorted(initial, docs);
                let count_bits = self.packer.num_bits(counts);
                out[at] = gap_bits;
                out[at + 1] = count_bits;
                let mut p = at + 2;
                p += self
                    .packer
                    .compress_sorted(initial, docs, &mut out[p..], gap_bits);
                if count_bits > 0 {
                    p += self.packer.compress(counts, &mut out[p..], count_bits);
                }
                debug_assert_eq!((p - at) as u64, block_bytes(gap_bits, count_bits));
                l.at = p as u64;
                l.before = pos;
            }
        } else {
            let (head, more) = tail_posting(pos - l.last, count);
            let mut p = put_at(out, l.at as usize, head);
            if let Some(c) = more {
                p = put_at(out, p, c);
            }
            l.at = p as u64;
        }
        l.last = pos;
    }

    /// Whether every list was written to its end (`offsets[f + 1]`).
    pub fn complete(&self, offsets: &[u64]) -> bool {
        self.lists
            .iter()
            .zip(&offsets[1..])
            .all(|(l, &end)| l.at == end)
    }
}

/// `1 + ln count` for the counts a text usually has.
static LOG_COUNT: LazyLock<[f32; 64]> =
    LazyLock::new(|| std::array::from_fn(|t| 1.0 + (t.max(1) as f32).ln()));

/// Sublinear tf: `1 + ln count`.
#[inline(always)]
pub fn log_count(count: u32) -> f32 {
    match count {
        1 => 1.0,
        c if (c as usize) < 64 => LOG_COUNT[c as usize],
        c => 1.0 + (c as f32).ln(),
    }
}

/// List `bytes`' length.
pub fn len(bytes: &[u8]) -> u32 {
    get(bytes, 0).0 as u32
}

/// Calls `visit(position, 1 + ln count)` for each posting of the list `bytes`, in order.
#[inline(always)]
pub fn each(packer: &BitPacker4x, bytes: &[u8], mut visit: impl FnMut(usize, f32)) {
    let (n, mut at) = get(bytes, 0);
    let n = n as usize;
    let mut last = 0u32;
    let table: &[f32; 64] = &LOG_COUNT;
    if n >= BLOCK {
        let mut docs = [0u32; BLOCK];
        let mut counts = [0u32; BLOCK];
        for _ in 0..n / BLOCK {
            let (gap_bits, count_bits) = (bytes[at], bytes[at + 1]);
            at += 2;
            at += packer.decompress_sorted(last, &bytes[at..], &mut docs, gap_bits);
            if count_bits == 0 {
                for &d in &docs {
                    visit(d as usize, 1.0);
                }
            } else {
                at += packer.decompress(&bytes[at..], &mut counts, count_bits);
                if count_bits <= 5 {
                    // Counts up to 32: a table lookup each, no branch per posting (a
                    // branch on the count mispredicts where counts of 1 and 2 mix).
                    for (&d, &c) in docs.iter().zip(&counts) {
                        visit(d as usize, table[c as usize + 1]);
                    }
                } else {
                    for (&d, &c) in docs.iter().zip(&counts) {
                        visit(d as usize, log_count(c + 1));
                    }
                }
            }
            last = docs[BLOCK - 1];
        }
    }
    let mut pos = last as usize;
    for _ in 0..n % BLOCK {
        let (v, next) = get(bytes, at);
        at = next;
        pos += (v >> 1) as usize;
        if v & 1 == 0 {
            visit(pos, 1.0);
        } else {
            let (c, next) = get(bytes, at);
            at = next;
            visit(pos, log_count(c as u32 + 2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lists of every shape (empty, tail only, exactly full blocks, blocks and a tail; counts
    /// of 1 only or mixed; gaps of one bit to many bytes) decode to what was written, and the
    /// first pass sizes each exactly.
    #[test]
    fn lists_decode_to_what_was_written_and_are_sized_exactly() {
        let mut rng = 12345u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let shapes = [0usize, 1, 5, 127, 128, 129, 256, 300, 1000];
        let mut lists: Vec<Vec<(u32, u32)>> = Vec::new();
        for (i, &n) in shapes.iter().enumerate() {
            let mut pos = if i % 2 == 0 { 0 } else { 70_000 };
            let list = (0..n)
                .map(|k| {
                    let r = next();
                    pos += (r % [1, 3, 200, 40_000][i % 4]) as u32 + u32::from(k > 0);
                    let count = if i % 3 == 0 {
                        1
                    } else {
                        1 + (r >> 20) as u32 % 90
                    };
                    (pos, count)
                })
                .collect();
            lists.push(list);
        }
        let sizes: Vec<Sizer> = lists
            .iter()
            .map(|l| {
                let mut s = Sizer::default();
                l.iter().for_each(|&(p, c)| s.add(p, c));
                s
            })
            .collect();
        let mut offsets = vec![0u64];
        for s in &sizes {
            offsets.push(offsets.last().unwrap() + s.bytes());
        }
        let mut out = vec![0u8; *offsets.last().unwrap() as usize];
        let lens: Vec<u32> = sizes.iter().map(Sizer::postings).collect();
        let mut w = Writer::new(&mut out, &offsets, &lens);
        // Interleaved, as the fit writes them (content by content).
        let mut cursor = vec![0usize; lists.len()];
        while let Some(f) = (0..lists.len())
            .filter(|&f| cursor[f] < lists[f].len())
            .min_by_key(|&f| lists[f][cursor[f]].0)
        {
            let (p, c) = lists[f][cursor[f]];
            w.add(&mut out, f, p, c);
            cursor[f] += 1;
        }
        assert!(w.complete(&offsets), "every list filled its planned bytes");
        let packer = BitPacker4x::new();
        for (f, list) in lists.iter().enumerate() {
            let bytes = &out[offsets[f] as usize..offsets[f + 1] as usize];
            let mut got = Vec::new();
            each(&packer, bytes, |p, lt| got.push((p as u32, lt)));
            let want: Vec<(u32, f32)> = list
                .iter()
                .map(|&(p, c)| (p, 1.0 + (c as f32).ln()))
                .collect();
            assert_eq!(got, want, "list {f} of {}", list.len());
            assert_eq!(len(bytes), list.len() as u32);
        }
        // Packed blocks of small gaps with counts of 1 are far below 8 bytes a posting.
        let ones = &out[offsets[6] as usize..offsets[7] as usize];
        assert!(ones.len() < 256 * 2, "{} bytes", ones.len());
    }
}
