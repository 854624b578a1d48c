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
//! File: `LECRLEX1`, the fingerprint (32 bytes), the index
//! ([`LexicalIndex::write_to`]), the body's SHA-256 (32 bytes).

use super::lexical::Snapshot;
use crate::select::lexical::LexicalIndex;
use ring::digest::{Context, SHA256};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LECRLEX1";

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

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        self.hash.update(&b[..n]);
        Ok(n)
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

    /// What the fit of `snap` depends on: its ids and texts in order, and this build.
    pub fn fingerprint(snap: &Snapshot) -> [u8; 32] {
        let mut h = Context::new(&SHA256);
        h.update(MAGIC);
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        h.update(&(snap.ids.len() as u64).to_le_bytes());
        for (id, text) in snap.ids.iter().zip(&snap.texts) {
            for s in [id, text] {
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
        h.finish().as_ref().try_into().expect("32 bytes")
    }

    /// The saved fit of exactly `snap`, if there is a whole one. A damaged file is said once
    /// in the log (and refitted by the caller).
    pub fn load(&self, snap: &Snapshot) -> Option<LexicalIndex> {
        let path = self.path(&snap.language);
        let file = File::open(&path).ok()?;
        match read(file, &Self::fingerprint(snap), snap.ids.len()) {
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

    /// Saves the fit of `snap` (replacing an older one).
    pub fn save(&self, snap: &Snapshot, index: &LexicalIndex) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&snap.language);
        let part = path.with_extension(format!("lex.part-{}", std::process::id()));
        let written = (|| {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(&part)?);
            w.write_all(MAGIC)?;
            w.write_all(&Self::fingerprint(snap))?;
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

/// `Ok(None)`: a whole file of another catalog (or build). `Err`: damaged.
fn read(file: File, fingerprint: &[u8; 32], n: usize) -> io::Result<Option<LexicalIndex>> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; 40];
    r.read_exact(&mut head)?;
    if &head[..8] != MAGIC || head[8..] != fingerprint[..] {
        return Ok(None);
    }
    let mut body = Hashing {
        inner: &mut r,
        hash: Context::new(&SHA256),
    };
    let index = LexicalIndex::read_from(&mut body)?;
    let digest = body.hash.finish();
    let mut stored = [0u8; 32];
    r.read_exact(&mut stored)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    if stored[..] != *digest.as_ref() {
        return Err(bad("its digest does not match its body"));
    }
    if r.read(&mut [0u8; 1])? != 0 {
        return Err(bad("bytes after its digest"));
    }
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
        saved.save(&s, &ix).unwrap();
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
