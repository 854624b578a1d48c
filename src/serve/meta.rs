//! The contents' metadata in the index: per content, in memory, only what ranking and
//! routing need (its language, kind and channel as numbers into one table of names each held
//! once, and where its texts are); the texts themselves (title, description, the encoder's
//! short text) in an unnamed file on disk beside the exact vectors ([`super::exact`] says
//! why unnamed: it vanishes with the process and is rebuilt from the store at start).
//!
//! The texts are read back only for what leaves the index: a recommendation's title and
//! description, the reranker's text features of a topic's candidates, a page's rows, a
//! lexical refit. They come through the kernel's page cache, which keeps the warm ones in
//! memory and can drop the cold ones under pressure; the heap holds about a tenth of what it
//! held when the texts lived there.
//!
//! The file is written at its end only (a replaced or removed content leaves its old record
//! as garbage, counted), through a buffer that a read looks into first; once the garbage
//! outweighs the live records (and passes [`COMPACT_FROM`]), the live ones are copied to a
//! new file, so the file stays within about twice what is live.

use crate::store::ContentMeta;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Records written in one go (and the most a read looks for in the buffer).
const BUFFER: usize = 1 << 20;
/// Garbage below this is never compacted away.
pub const COMPACT_FROM: u64 = 8 << 20;
const NO_LANGUAGE: u32 = u32::MAX;

/// What the table keeps of a content in memory.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Its texts' record in the file, and the record's length.
    at: u64,
    len: u32,
    channel: u32,
    kind: u32,
    /// [`NO_LANGUAGE`]: stored, not recommendable.
    language: u32,
}

/// Names held once each, by number, with how many entries use each (a name no entry uses
/// any more is dropped, and its number used again).
#[derive(Default)]
struct Names {
    names: Vec<(String, u32)>,
    ids: HashMap<String, u32>,
    free: Vec<u32>,
    heap: usize,
}

impl Names {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            self.names[i as usize].1 += 1;
            return i;
        }
        self.heap += 2 * s.len();
        let i = match self.free.pop() {
            Some(i) => {
                self.names[i as usize] = (s.to_string(), 1);
                i
            }
            None => {
                self.names.push((s.to_string(), 1));
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(s.to_string(), i);
        i
    }

    fn release(&mut self, i: u32) {
        let (name, refs) = &mut self.names[i as usize];
        *refs -= 1;
        if *refs == 0 {
            self.heap -= 2 * name.len();
            self.ids.remove(name.as_str());
            *name = String::new();
            self.free.push(i);
        }
    }

    fn name(&self, i: u32) -> &str {
        &self.names[i as usize].0
    }

    fn memory_bytes(&self) -> usize {
        self.names.capacity() * std::mem::size_of::<(String, u32)>()
            + self.ids.capacity() * (std::mem::size_of::<(String, u32)>() + 1)
            + self.free.capacity() * 4
            + self.heap
    }
}

/// The texts' file: records up to `flushed` on disk, the rest in `pending`.
struct TextFile {
    file: File,
    flushed: u64,
    pending: Vec<u8>,
    /// Bytes of the records still in use.
    live: u64,
}

impl TextFile {
    fn new_in(dir: &Path) -> io::Result<TextFile> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the index's metadata file in {}: {e}", dir.display()),
            )
        })?;
        Ok(TextFile {
            file,
            flushed: 0,
            pending: Vec::new(),
            live: 0,
        })
    }

    fn end(&self) -> u64 {
        self.flushed + self.pending.len() as u64
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all_at(&self.pending, self.flushed)?;
            self.flushed += self.pending.len() as u64;
            self.pending.clear();
        }
        Ok(())
    }

    /// Appends a record; returns where it went.
    fn append(&mut self, record: &[u8]) -> io::Result<u64> {
        if self.pending.len() + record.len() > BUFFER {
            self.flush()?;
        }
        let at = self.end();
        self.pending.extend_from_slice(record);
        self.live += record.len() as u64;
        Ok(at)
    }

    fn read(&self, at: u64, len: u32) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; len as usize];
        if at >= self.flushed {
            let from = (at - self.flushed) as usize;
            out.copy_from_slice(&self.pending[from..from + len as usize]);
        } else {
            self.file.read_exact_at(&mut out, at)?;
        }
        Ok(out)
    }
}

/// A record: the three texts' lengths (u32, little-endian), then the texts.
fn record(m: &ContentMeta) -> Vec<u8> {
    let texts = [&m.title, &m.description, &m.short_text];
    let mut out = Vec::with_capacity(12 + texts.iter().map(|t| t.len()).sum::<usize>());
    for t in texts {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
    }
    for t in texts {
        out.extend_from_slice(t.as_bytes());
    }
    out
}

/// The three texts of a record.
fn texts(bytes: &[u8]) -> io::Result<[String; 3]> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a damaged metadata record");
    let len = |i: usize| -> io::Result<usize> {
        let b = bytes.get(4 * i..4 * i + 4).ok_or_else(bad)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let (a, b, c) = (len(0)?, len(1)?, len(2)?);
    if 12 + a + b + c != bytes.len() {
        return Err(bad());
    }
    let text = |from: usize, n: usize| {
        String::from_utf8(bytes[from..from + n].to_vec()).map_err(|_| bad())
    };
    Ok([text(12, a)?, text(12 + a, b)?, text(12 + a + b, c)?])
}

pub struct MetaTable {
    entries: HashMap<String, Entry>,
    names: Names,
    texts: Option<TextFile>,
    dir: PathBuf,
    /// Heap bytes of the entries' keys.
    keys: usize,
    without_language: usize,
}

impl MetaTable {
    /// An empty table whose texts' file (made at the first insert) goes in `dir`.
    pub fn new_in(dir: &Path) -> MetaTable {
        MetaTable {
            entries: HashMap::new(),
            names: Names::default(),
            texts: None,
            dir: dir.to_path_buf(),
            keys: 0,
            without_language: 0,
        }
    }

    /// Where the texts' file goes (only before the first insert).
    pub fn set_dir(&mut self, dir: &Path) {
        debug_assert!(self.texts.is_none(), "the file is made at the first insert");
        self.dir = dir.to_path_buf();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }

    /// Stored contents with no language yet.
    pub fn without_language(&self) -> usize {
        self.without_language
    }

    /// A content's language (`None`: unknown, or stored without one). No disk read.
    pub fn language(&self, id: &str) -> Option<&str> {
        let e = self.entries.get(id)?;
        (e.language != NO_LANGUAGE).then(|| self.names.name(e.language))
    }

    /// Adds or replaces a content's metadata. Fails only when the texts' file cannot be
    /// made or written; the table is then as it was.
    pub fn insert(&mut self, m: &ContentMeta) -> io::Result<()> {
        if self.texts.is_none() {
            self.texts = Some(TextFile::new_in(&self.dir)?);
        }
        let rec = record(m);
        let file = self.texts.as_mut().expect("made above");
        let at = file.append(&rec)?;
        self.remove(&m.id);
        let entry = Entry {
            at,
            len: rec.len() as u32,
            channel: self.names.intern(&m.channel_id),
            kind: self.names.intern(&m.kind),
            language: match &m.language {
                Some(l) => self.names.intern(l),
                None => {
                    self.without_language += 1;
                    NO_LANGUAGE
                }
            },
        };
        self.keys += m.id.capacity();
        self.entries.insert(m.id.clone(), entry);
        self.compact_if_due();
        Ok(())
    }

    /// Removes a content's metadata; false when it was not there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some((key, e)) = self.entries.remove_entry(id) else {
            return false;
        };
        self.keys -= key.capacity();
        self.names.release(e.channel);
        self.names.release(e.kind);
        if e.language == NO_LANGUAGE {
            self.without_language -= 1;
        } else {
            self.names.release(e.language);
        }
        if let Some(f) = &mut self.texts {
            f.live -= e.len as u64;
        }
        true
    }

    /// A content's metadata, its texts read back from the file.
    pub fn get(&self, id: &str) -> io::Result<Option<ContentMeta>> {
        let (Some(e), Some(f)) = (self.entries.get(id), &self.texts) else {
            return Ok(None);
        };
        let [title, description, short_text] = texts(&f.read(e.at, e.len)?)?;
        Ok(Some(ContentMeta {
            id: id.to_string(),
            channel_id: self.names.name(e.channel).to_string(),
            title,
            description,
            kind: self.names.name(e.kind).to_string(),
            language: self.language(id).map(str::to_string),
            short_text,
        }))
    }

    /// Copies the live records to a new file once the garbage outweighs them (and passes
    /// [`COMPACT_FROM`]). A failure keeps the old file (and is logged): nothing is lost.
    fn compact_if_due(&mut self) {
        let Some(f) = &self.texts else { return };
        let garbage = f.end() - f.live;
        if garbage < COMPACT_FROM || garbage <= f.live {
            return;
        }
        match self.compacted() {
            Ok((file, moved)) => {
                for (id, at) in moved {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.at = at;
                    }
                }
                self.texts = Some(file);
            }
            Err(e) => tracing::warn!(
                "could not compact the index's metadata file ({e}); it keeps its garbage"
            ),
        }
    }

    fn compacted(&self) -> io::Result<(TextFile, Vec<(String, u64)>)> {
        let old = self.texts.as_ref().expect("a file to compact");
        let mut new = TextFile::new_in(&self.dir)?;
        let mut moved = Vec::with_capacity(self.entries.len());
        for (id, e) in &self.entries {
            let at = new.append(&old.read(e.at, e.len)?)?;
            moved.push((id.clone(), at));
        }
        new.flush()?;
        Ok((new, moved))
    }

    /// Gives back spare capacity (after a bulk load).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.names.ids.shrink_to_fit();
        self.names.names.shrink_to_fit();
        if let Some(f) = &mut self.texts {
            // The buffer goes to disk and its memory back (a failed write keeps it: its
            // records stay readable there, and the next write tries again).
            match f.flush() {
                Ok(()) => f.pending = Vec::new(),
                Err(e) => tracing::warn!("the index's metadata file: {e}"),
            }
        }
    }

    /// Bytes in memory (the table counted by its buckets, spare capacity included).
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * (std::mem::size_of::<(String, Entry)>() + 1)
            + self.keys
            + self.names.memory_bytes()
            + self.texts.as_ref().map_or(0, |f| f.pending.capacity())
    }

    /// Bytes of the texts' file (written and buffered, garbage included).
    pub fn file_bytes(&self) -> u64 {
        self.texts.as_ref().map_or(0, TextFile::end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, channel: &str, lang: Option<&str>, title: &str) -> ContentMeta {
        ContentMeta {
            id: id.into(),
            channel_id: channel.into(),
            title: title.into(),
            description: format!("about {title} — ünïcode"),
            kind: "video".into(),
            language: lang.map(str::to_string),
            short_text: format!("{title} short"),
        }
    }

    #[test]
    fn metadata_comes_back_as_written_through_replacements_removals_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = MetaTable::new_in(dir.path());
        assert_eq!(t.get("a").unwrap(), None);
        let a = meta("a", "ch1", Some("en"), "fractions");
        let b = meta("b", "ch2", None, "");
        t.insert(&a).unwrap();
        t.insert(&b).unwrap();
        assert_eq!(t.get("a").unwrap().as_ref(), Some(&a));
        assert_eq!(t.get("b").unwrap().as_ref(), Some(&b));
        assert_eq!((t.len(), t.without_language()), (2, 1));
        assert_eq!((t.language("a"), t.language("b")), (Some("en"), None));
        // The file is unnamed: nothing in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A replacement moves the content to its new language and channel.
        let b2 = meta("b", "ch1", Some("fr"), "volcans");
        t.insert(&b2).unwrap();
        assert_eq!(t.get("b").unwrap().as_ref(), Some(&b2));
        assert_eq!((t.len(), t.without_language()), (2, 0));
        assert!(t.remove("a") && !t.remove("a"));
        assert_eq!(t.get("a").unwrap(), None);
        // Names no content uses are dropped: only ch1, video and fr are left.
        assert_eq!(t.names.ids.len(), 3, "{:?}", t.names.ids.keys());
        // Rewriting many contents many times: the file is compacted, and all read back.
        let big = "x".repeat(4000);
        for round in 0..3 {
            for i in 0..1500 {
                let m = meta(
                    &format!("c{i}"),
                    "ch1",
                    Some("en"),
                    &format!("{big}{round}"),
                );
                t.insert(&m).unwrap();
            }
        }
        let live: u64 = (0..1500)
            .map(|i| {
                record(&meta(
                    &format!("c{i}"),
                    "ch1",
                    Some("en"),
                    &format!("{big}2"),
                ))
            })
            .chain([record(&b2)])
            .map(|r| r.len() as u64)
            .sum();
        assert_eq!(t.texts.as_ref().unwrap().live, live);
        assert!(
            t.file_bytes() < 2 * live + COMPACT_FROM,
            "{} vs {live}",
            t.file_bytes()
        );
        for i in (0..1500).step_by(97) {
            let got = t.get(&format!("c{i}")).unwrap().unwrap();
            assert_eq!(got.title, format!("{big}2"));
        }
        assert_eq!(t.get("b").unwrap().as_ref(), Some(&b2));
        assert!(t.memory_bytes() > 0);
    }

    #[test]
    fn a_folder_that_cannot_hold_the_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = MetaTable::new_in(&dir.path().join("missing"));
        let err = t.insert(&meta("a", "c", None, "t")).err().unwrap();
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(t.is_empty());
    }
}
