//! The lexical index's binary form, and where its parts live: in memory, or mapped from a
//! saved file.
//!
//! Form (little-endian, every part at a multiple of 8 bytes from the start, so a mapping can
//! use the parts in place): content count `n`, feature count `f`, posting bytes `b` (each a
//! u64), the `f` hashes (u64), the `f + 1` offsets (u64), the `b` posting bytes, zeros up to
//! the next multiple of 8, the `n` norms (f32).
//!
//! A mapped index reads its parts through the page cache: the heap holds none of it, and the
//! system can drop its cold pages under memory pressure and read them back when touched.
//! The mapping is of a file that lecr writes beside its final name and renames over it, so a
//! new fit never changes the bytes of a mapped one (the old file lives on until its mapping
//! goes). A file truncated by hand while mapped would fault the process, as with any database
//! that maps its files.

use super::LexicalIndex;
use bitpacking::{BitPacker, BitPacker4x};
use memmap2::Mmap;
use std::io::{self, Error, ErrorKind, Read, Write};
use std::ops::Deref;
use std::sync::Arc;

/// One part of the index: its own vector, or `len` values at byte `at` of a mapping.
pub(super) enum Held<T> {
    Owned(Vec<T>),
    Mapped {
        map: Arc<Mmap>,
        at: usize,
        len: usize,
    },
}

impl<T> From<Vec<T>> for Held<T> {
    fn from(v: Vec<T>) -> Self {
        Held::Owned(v)
    }
}

impl<T: bytemuck::Pod> Deref for Held<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        match self {
            Held::Owned(v) => v,
            // Aligned and in range: checked when the part was placed (`placed`).
            Held::Mapped { map, at, len } => {
                bytemuck::cast_slice(&map[*at..*at + *len * std::mem::size_of::<T>()])
            }
        }
    }
}

impl<T> Held<T> {
    pub(super) fn heap_bytes(&self) -> usize {
        match self {
            Held::Owned(v) => v.capacity() * std::mem::size_of::<T>(),
            Held::Mapped { .. } => 0,
        }
    }

    pub(super) fn mapped_bytes(&self) -> usize {
        match self {
            Held::Owned(_) => 0,
            Held::Mapped { len, .. } => len * std::mem::size_of::<T>(),
        }
    }
}

fn bad(what: &str) -> Error {
    Error::new(ErrorKind::InvalidData, what.to_string())
}

/// Limits far past any catalog, so a damaged header cannot ask for all memory.
fn check_sizes(n: u64, features: u64, bytes: u64) -> io::Result<()> {
    if n > u32::MAX as u64 || features > 1 << 36 || bytes > 1 << 40 {
        return Err(bad("sizes out of range"));
    }
    Ok(())
}

/// Zero bytes after `b` posting bytes, up to the next multiple of 8.
fn padding(b: usize) -> usize {
    (8 - b % 8) % 8
}

impl LexicalIndex {
    /// Writes the index in its binary form (the module's head), which
    /// [`read_from`](Self::read_from) reads back into an equal index and
    /// [`map_from`](Self::map_from) uses in place.
    pub fn write_to(&self, w: &mut dyn Write) -> io::Result<()> {
        for v in [self.n, self.hashes.len(), self.postings.len()] {
            w.write_all(&(v as u64).to_le_bytes())?;
        }
        fn le<T: Copy, const N: usize>(
            w: &mut dyn Write,
            part: &[T],
            bytes: impl Fn(T) -> [u8; N],
        ) -> io::Result<()> {
            for chunk in part.chunks(1 << 16) {
                let b: Vec<u8> = chunk.iter().flat_map(|&v| bytes(v)).collect();
                w.write_all(&b)?;
            }
            Ok(())
        }
        le(w, &self.hashes, u64::to_le_bytes)?;
        le(w, &self.offsets, u64::to_le_bytes)?;
        w.write_all(&self.postings)?;
        w.write_all(&[0u8; 8][..padding(self.postings.len())])?;
        le(w, &self.norms, f32::to_le_bytes)
    }

    /// Reads what [`write_to`](Self::write_to) wrote into memory, checking its shape
    /// ([`check`](Self::check)): an `InvalidData` error names what is wrong. (Posting
    /// contents are not checked here: the caller checks a digest.)
    pub fn read_from(r: &mut dyn Read) -> io::Result<LexicalIndex> {
        let mut word = [0u8; 8];
        let mut u64_of = |r: &mut dyn Read| -> io::Result<u64> {
            r.read_exact(&mut word)?;
            Ok(u64::from_le_bytes(word))
        };
        let (n, features, bytes) = (u64_of(r)?, u64_of(r)?, u64_of(r)?);
        check_sizes(n, features, bytes)?;
        fn values<T, const N: usize>(
            r: &mut dyn Read,
            len: usize,
            of: impl Fn([u8; N]) -> T,
        ) -> io::Result<Vec<T>> {
            // Grown as the data comes (a damaged size must not reserve memory up front).
            let mut out = Vec::with_capacity(len.min(1 << 20));
            let mut buf = vec![0u8; N << 16];
            while out.len() < len {
                let take = (len - out.len()).min(1 << 16);
                r.read_exact(&mut buf[..take * N])?;
                out.extend(
                    buf[..take * N]
                        .chunks_exact(N)
                        .map(|b| of(b.try_into().expect("N bytes"))),
                );
            }
            Ok(out)
        }
        let hashes = values(r, features as usize, u64::from_le_bytes)?;
        let offsets = values(r, features as usize + 1, u64::from_le_bytes)?;
        let mut postings = Vec::new();
        Read::take(&mut *r, bytes).read_to_end(&mut postings)?;
        if postings.len() as u64 != bytes {
            return Err(Error::new(ErrorKind::UnexpectedEof, "postings cut short"));
        }
        postings.shrink_to_fit();
        r.read_exact(&mut [0u8; 8][..padding(bytes as usize)])?;
        let norms = values(r, n as usize, f32::from_le_bytes)?;
        let index = LexicalIndex {
            hashes: hashes.into(),
            offsets: offsets.into(),
            postings: postings.into(),
            packer: BitPacker4x::new(),
            norms: norms.into(),
            n: n as usize,
        };
        index.check()?;
        Ok(index)
    }

    /// The index whose binary form is `map[at..end]`, used in place (nothing copied to the
    /// heap); its shape is checked as [`read_from`](Self::read_from) checks it, and it must
    /// fill the range exactly. `at` must be a multiple of 8. On a big-endian machine the
    /// form is read into memory instead.
    pub fn map_from(map: Arc<Mmap>, at: usize, end: usize) -> io::Result<LexicalIndex> {
        if end > map.len() || at > end {
            return Err(bad("a range outside its file"));
        }
        if cfg!(target_endian = "big") {
            let mut body = &map[at..end];
            let index = Self::read_from(&mut body)?;
            return match body.is_empty() {
                true => Ok(index),
                false => Err(bad("bytes after its index")),
            };
        }
        let word = |i: usize| -> io::Result<u64> {
            let b = map
                .get(at + 8 * i..at + 8 * i + 8)
                .ok_or_else(|| Error::new(ErrorKind::UnexpectedEof, "header cut short"))?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        let (n, features, bytes) = (word(0)?, word(1)?, word(2)?);
        check_sizes(n, features, bytes)?;
        let (n, features, bytes) = (n as usize, features as usize, bytes as usize);
        let mut next = at + 24;
        let mut place = |len: usize, size: usize, pad: usize| -> io::Result<(usize, usize)> {
            let start = next;
            next = start + len * size + pad;
            if next > end {
                return Err(Error::new(ErrorKind::UnexpectedEof, "index cut short"));
            }
            if !(map.as_ptr() as usize + start).is_multiple_of(size) {
                return Err(bad("a part that is not aligned"));
            }
            Ok((start, len))
        };
        let hashes = place(features, 8, 0)?;
        let offsets = place(features + 1, 8, 0)?;
        let postings = place(bytes, 1, padding(bytes))?;
        let norms = place(n, 4, 0)?;
        if next != end {
            return Err(bad("bytes after its index"));
        }
        fn held<T>(map: &Arc<Mmap>, (at, len): (usize, usize)) -> Held<T> {
            Held::Mapped {
                map: map.clone(),
                at,
                len,
            }
        }
        let index = LexicalIndex {
            hashes: held(&map, hashes),
            offsets: held(&map, offsets),
            postings: held(&map, postings),
            packer: BitPacker4x::new(),
            norms: held(&map, norms),
            n,
        };
        index.check()?;
        Ok(index)
    }

    /// The shape a read or mapped index must have before any query walks it: sorted
    /// hashes, offsets in order and in range, positive norms.
    fn check(&self) -> io::Result<()> {
        if self.hashes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("feature hashes not ascending"));
        }
        let o = &self.offsets;
        if o.len() != self.hashes.len() + 1
            || o[0] != 0
            || o.windows(2).any(|w| w[0] > w[1])
            || o[o.len() - 1] != self.postings.len() as u64
        {
            return Err(bad("posting offsets out of order or out of range"));
        }
        if self.norms.len() != self.n || self.norms.iter().any(|&x| !(x.is_finite() && x > 0.0)) {
            return Err(bad("a content norm that is not positive"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bytes` in a file after `lead` bytes, mapped.
    fn mapped(lead: usize, bytes: &[u8]) -> Arc<Mmap> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; lead]).unwrap();
        f.write_all(bytes).unwrap();
        Arc::new(unsafe { Mmap::map(&f).unwrap() })
    }

    #[test]
    fn a_mapped_index_scores_as_the_one_written_and_a_bad_range_is_refused() {
        // Posting bytes that are not a multiple of 8 among these sizes: the padding matters.
        let mut unpadded = 0;
        for n in [1usize, 7, 40, 301] {
            let texts: Vec<String> = (0..n)
                .map(|i| format!("word{} shared text{} zz{}", i % 17, i % 5, i * 7 % 300))
                .collect();
            let ix = LexicalIndex::fit(&texts);
            unpadded += usize::from(!ix.postings.len().is_multiple_of(8));
            let mut bytes = Vec::new();
            ix.write_to(&mut bytes).unwrap();
            assert_eq!(bytes.len() % 4, 0);
            let map = mapped(40, &bytes);
            let end = 40 + bytes.len();
            let m = LexicalIndex::map_from(map.clone(), 40, end).unwrap();
            assert_eq!(m.memory_bytes(), 0);
            assert_eq!(m.mapped_bytes(), ix.memory_bytes());
            assert_eq!(m.len(), n);
            let read = LexicalIndex::read_from(&mut bytes.as_slice()).unwrap();
            for q in ["word3 shared", "zz21 text4", "nothing known", "text1"] {
                let (a, b, c) = (ix.scores(q), m.scores(q), read.scores(q));
                assert!(
                    a.iter()
                        .zip(&b)
                        .zip(&c)
                        .all(|((x, y), z)| x.to_bits() == y.to_bits() && x.to_bits() == z.to_bits()),
                    "{n} {q}"
                );
            }
            // Cut short, one byte too many, past the file, or not aligned: an error.
            let cut = LexicalIndex::map_from(map.clone(), 40, end - 4)
                .err()
                .unwrap();
            assert_eq!(cut.kind(), ErrorKind::UnexpectedEof, "{cut}");
            let more = mapped(40, &[bytes.as_slice(), &[0u8; 4]].concat());
            let err = LexicalIndex::map_from(more, 40, end + 4).err().unwrap();
            assert!(err.to_string().contains("after"), "{err}");
            assert!(LexicalIndex::map_from(map.clone(), 40, end + 1).is_err());
            let odd = mapped(41, &bytes);
            let err = LexicalIndex::map_from(odd, 41, end + 1).err().unwrap();
            assert!(err.to_string().contains("aligned"), "{err}");
        }
        assert!(unpadded > 0, "some sizes need padding");
    }
}
