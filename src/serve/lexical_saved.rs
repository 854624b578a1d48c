//! Fitted lexical indexes kept beside a store on disk (`DIR/lexical/`), so that a start on a
//! catalog that has not changed since the last fit reads each language's index back instead
//! of fitting it again (the fit is most of a large catalog's start-up).
//!
//! A saved fit is a cache, never the truth: it is used only for a language whose contents are
//! exactly those it was fitted on, in the same order (a SHA-256 *fingerprint* of every id and
//! text, with this build's version, heads the file), and only when the file is whole (a
//! SHA-256 of its body ends it). Anything else — another catalog, another lecr version, a
//! damaged or half-written file — is refitted, as without a saved fit. A file is written
//! beside its final name and renamed over it once synced, so a kill -9 leaves the old one or
//! the new one.
//!
//! A saved fit is also where the served index lives: it is used in place, mapped from its file
//! ([`LexicalIndex::map_from`]), so a language's postings take no heap, only pages of the
//! page cache that the system can drop when cold and read again when touched. A fit made
//! while serving is saved first and then used from its file the same way.
//!
//! File: `LECRLEX2`, the fingerprint (32 bytes), the index ([`LexicalIndex::write_to`], 8-byte
//! aligned parts: the body starts at byte 40), the body's SHA-256 (32 bytes). (`LECRLEX1`
//! files, of the release before, had unaligned parts: they are fitted again and replaced.)

use super::lexical::Snapshot;
use crate::select::lexical::LexicalIndex;
use ring::digest::{Context, SHA256};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LECRLEX2";
/// Where the body starts: after the magic and the fingerprint (a multiple of 8).
const BODY: usize = 40;
const DIGEST: usize = 32;

pub struct SavedFits {
    dir: PathBuf,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Context,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl SavedFits {
    /// Saved fits of the store in `store_dir`.
    pub fn beside(store_dir: &Path) -> Self {
        SavedFits {
            dir: store_dir.join("lexical"),
        }
    }

    /// A language's file: its code in hex (a language code comes from requests: never a path).
    pub fn path(&self, language: &str) -> PathBuf {
        let hex: String = language.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.lex"))
    }

    /// What the fit of `snap` depends on: its ids and texts in order, this build and the
    /// rule that picks the features.
    pub fn fingerprint(snap: &Snapshot) -> [u8; 32] {
        let mut h = Context::new(&SHA256);
        h.update(MAGIC);
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(crate::select::lexical::fit_rule().as_bytes());
        h.update(&(snap.ids.len() as u64).to_le_bytes());
        for (id, text) in snap.ids.iter().zip(&snap.texts) {
            for s in [id, text] {
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
        h.finish().as_ref().try_into().expect("32 bytes")
    }

    /// The saved fit of exactly `snap`, if there is a whole one, mapped from its file. A
    /// damaged file is said once in the log (and refitted by the caller).
    pub fn load(&self, snap: &Snapshot) -> Option<LexicalIndex> {
        let path = self.path(&snap.language);
        let file = File::open(&path).ok()?;
        match map(file, &Self::fingerprint(snap), snap.ids.len(), true) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(
                    "{}: a damaged saved lexical index ({e}); fitting it again",
                    path.display()
                );
                None
            }
        }
    }

    /// Saves the fit of `snap` (replacing an older one) and gives it back mapped from the
    /// file just written (its digest is not checked again: this process wrote and synced it).
    pub fn save(&self, snap: &Snapshot, index: &LexicalIndex) -> io::Result<LexicalIndex> {
        let fingerprint = Self::fingerprint(snap);
        self.write(&snap.language, &fingerprint, index)?;
        let file = File::open(self.path(&snap.language))?;
        match map(file, &fingerprint, snap.ids.len(), false)? {
            Some(mapped) => Ok(mapped),
            None => Err(io::Error::other("the saved file changed under it")),
        }
    }

    fn write(
        &self,
        language: &str,
        fingerprint: &[u8; 32],
        index: &LexicalIndex,
    ) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(language);
        let part = path.with_extension(format!("lex.part-{}", std::process::id()));
        let written = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&part)?);
            w.write_all(MAGIC)?;
            w.write_all(fingerprint)?;
            let mut body = Hashing {
                inner: &mut w,
                hash: Context::new(&SHA256),
            };
            index.write_to(&mut body)?;
            let digest = body.hash.finish();
            w.write_all(digest.as_ref())?;
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&part, &path)?;
            // The rename itself, made durable.
            File::open(&self.dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        written
    }
}

/// The index in `file`, mapped. `Ok(None)`: a whole file of another catalog (or build).
/// `Err`: damaged (with `verify`, the body's digest is checked too).
fn map(
    file: File,
    fingerprint: &[u8; 32],
    n: usize,
    verify: bool,
) -> io::Result<Option<LexicalIndex>> {
    // SAFETY: lecr never writes a saved file in place (a new one is renamed over it), so
    // the mapped bytes do not change while mapped; see `select::lexical::form`.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if map.len() < BODY + DIGEST {
        return match map.starts_with(MAGIC) {
            true => Err(bad("cut short")),
            false => Ok(None),
        };
    }
    if &map[..8] != MAGIC || map[8..BODY] != fingerprint[..] {
        return Ok(None);
    }
    let end = map.len() - DIGEST;
    if verify {
        let digest = ring::digest::digest(&SHA256, &map[BODY..end]);
        if map[end..] != *digest.as_ref() {
            return Err(bad("its digest does not match its body"));
        }
    }
    let index = LexicalIndex::map_from(std::sync::Arc::new(map), BODY, end)?;
    if index.len() != n {
        return Err(bad("another number of contents than its fingerprint's"));
    }
    Ok(Some(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(texts: &[&str]) -> Snapshot {
        Snapshot {
            language: "pt-BR/../x".into(),
            version: 1,
            ids: (0..texts.len()).map(|i| format!("c{i}")).collect(),
            texts: texts.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn a_saved_fit_comes_back_only_for_the_same_contents_and_only_whole() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedFits::beside(dir.path());
        let texts = ["adding fractions", "volcano eruptions", "fractional parts"];
        let s = snap(&texts);
        assert!(saved.load(&s).is_none(), "nothing saved yet");
        let ix = LexicalIndex::fit(&s.texts);
        let mapped = saved.save(&s, &ix).unwrap();
        // What save gives back is used from its file: no heap, the same scores.
        assert!(ix.memory_bytes() > 0 && ix.mapped_bytes() == 0);
        assert_eq!(mapped.memory_bytes(), 0);
        assert_eq!(mapped.mapped_bytes(), ix.memory_bytes());
        assert_eq!(mapped.scores("fractions"), ix.scores("fractions"));
        // The language is hex in the file name: no path from a request.
        let path = saved.path(&s.language);
        assert_eq!(path.parent().unwrap(), dir.path().join("lexical"));
        assert!(path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".lex"));
        let back = saved.load(&s).expect("the same contents");
        assert_eq!(back.scores("fractions"), ix.scores("fractions"));
        assert_eq!(
            back.memory_bytes(),
            0,
            "read back in place, not into the heap"
        );
        // A file of the release before (another magic): fitted again, not an error.
        let mut old = std::fs::read(&path).unwrap();
        old[..8].copy_from_slice(b"LECRLEX1");
        std::fs::write(&path, &old).unwrap();
        assert!(saved.load(&s).is_none());
        saved.save(&s, &ix).unwrap();
        // Replaced while a mapping of the old file is in use: the old mapping keeps its bytes.
        let other = snap(&["a different catalog", "of two"]);
        let other_ix = LexicalIndex::fit(&other.texts);
        let held = saved.load(&s).unwrap();
        let mut renamed = other.clone_for_test();
        renamed.language = s.language.clone();
        saved.save(&renamed, &other_ix).unwrap();
        assert_eq!(held.scores("fractions"), ix.scores("fractions"));
        assert!(
            saved.load(&s).is_none(),
            "the file is the other catalog's now"
        );
        saved.save(&s, &ix).unwrap();
        // Another text, or the same texts in another order: not used.
        assert!(saved
            .load(&snap(&["adding fractions", "volcano", "fractional parts"]))
            .is_none());
        let mut swapped = s.clone_for_test();
        swapped.ids.swap(0, 1);
        swapped.texts.swap(0, 1);
        assert!(saved.load(&swapped).is_none());
        // A damaged body or a cut file: refused (and logged), never a panic.
        let bytes = std::fs::read(&path).unwrap();
        let mut flipped = bytes.clone();
        let mid = bytes.len() - 40;
        flipped[mid] ^= 0x55;
        std::fs::write(&path, &flipped).unwrap();
        assert!(saved.load(&s).is_none());
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(saved.load(&s).is_none());
        // Saving again replaces it; no part file is left behind.
        saved.save(&s, &ix).unwrap();
        assert!(saved.load(&s).is_some());
        assert_eq!(
            std::fs::read_dir(dir.path().join("lexical"))
                .unwrap()
                .count(),
            1
        );
    }

    impl Snapshot {
        fn clone_for_test(&self) -> Snapshot {
            Snapshot {
                language: self.language.clone(),
                version: self.version,
                ids: self.ids.clone(),
                texts: self.texts.clone(),
            }
        }
    }
}
