//! The lexical retriever inside the service: per language, the character n-gram TF-IDF index
//! of `--model lexical` ([`LexicalIndex`], the code `eval` and `predict` use), kept next to the
//! language's vector matrix.
//!
//! - **Rebuilt, not persisted.** Its idf depends on every content of the language, so any
//!   change re-weighs them all; it is derived data that the store's texts fully determine, so
//!   it is rebuilt from them at start-up (every language, before the first request) and, after
//!   writes, by one background thread ([`Rebuilder`]) that waits for a quiet moment (writes of
//!   one publish come in bursts) and then refits the languages that changed, outside any lock,
//!   and swaps each in under a short write lock. Persisting it would mean a second format to
//!   keep in step with the store and with other replicas' writes, for a rebuild that takes
//!   seconds.
//! - **Rows.** The vector matrix moves rows on every write (a removal moves the last row into
//!   the hole); the lexical index keeps the positions of the contents it was fitted on, and a
//!   map from each matrix row to its position follows the matrix. A content written since the
//!   last fit has no position and scores 0 until the next one (a language with such rows is
//!   *stale*; `/metrics` counts them and `/health` says so).

use crate::select::lexical::LexicalIndex;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// No position in the fitted index (written since the fit).
pub const UNFITTED: u32 = u32::MAX;

/// The lexical side of one language.
pub struct LexRows {
    index: LexicalIndex,
    /// Position of each matrix row in `index` (or [`UNFITTED`]).
    map: Vec<u32>,
    /// Position of each fitted content.
    pos: HashMap<String, u32>,
}

impl LexRows {
    /// Fitted on `texts` of `ids` (in that order), mapped onto the matrix rows `rows`.
    pub fn new(ids: Vec<String>, index: LexicalIndex, rows: &[String]) -> LexRows {
        let pos: HashMap<String, u32> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (id, i as u32))
            .collect();
        let map = rows
            .iter()
            .map(|id| pos.get(id).copied().unwrap_or(UNFITTED))
            .collect();
        LexRows { index, map, pos }
    }

    /// A row was appended to the matrix (a written content: not fitted yet).
    pub fn push_unfitted(&mut self) {
        self.map.push(UNFITTED);
    }

    /// The matrix moved its last row into `r`.
    pub fn swap_remove(&mut self, r: usize) {
        self.map.swap_remove(r);
    }

    /// `text`'s lexical similarity to every matrix row.
    pub fn scores(&self, text: &str) -> Vec<f32> {
        let fitted = self.index.scores(text);
        self.map
            .iter()
            .map(|&p| {
                if p == UNFITTED {
                    0.0
                } else {
                    fitted[p as usize]
                }
            })
            .collect()
    }

    /// Bytes held (the index, the row map and the id table).
    pub fn memory_bytes(&self) -> usize {
        let ids: usize = self.pos.keys().map(|k| k.capacity() + 40).sum();
        self.index.memory_bytes() + self.map.capacity() * 4 + ids
    }
}

/// One language's contents to fit: ids and lexical texts, and the matrix's change count when
/// they were taken.
pub struct Snapshot {
    pub language: String,
    pub version: u64,
    pub ids: Vec<String>,
    pub texts: Vec<String>,
}

/// What the rebuilder needs of the index: snapshots of stale languages and a place to put
/// the fitted index.
pub trait Refit: Send + Sync + 'static {
    fn stale_languages(&self) -> Vec<String>;
    fn snapshot(&self, language: &str) -> Option<Snapshot>;
    fn install(&self, snapshot: Snapshot, index: LexicalIndex);
}

/// Fits every stale language of `target` now; returns how many it fitted.
pub fn refit_stale(target: &dyn Refit) -> usize {
    let mut n = 0;
    for lang in target.stale_languages() {
        let Some(snap) = target.snapshot(&lang) else {
            continue;
        };
        let t0 = Instant::now();
        let index = LexicalIndex::fit(&snap.texts);
        tracing::debug!(
            "lexical index of `{lang}` refitted on {} contents in {:.2} s",
            snap.ids.len(),
            t0.elapsed().as_secs_f64()
        );
        target.install(snap, index);
        n += 1;
    }
    n
}

/// Quiet time after the last write before a refit starts.
pub const QUIET: Duration = Duration::from_millis(200);
/// Longest a change waits for its refit under a steady stream of writes.
pub const MAX_WAIT: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Pending {
    /// When the first unfitted change came (None: nothing pending).
    since: Option<Instant>,
    last: Option<Instant>,
    closed: bool,
}

/// The background thread that refits stale languages after writes.
pub struct Rebuilder {
    shared: Arc<(Mutex<Pending>, Condvar)>,
}

impl Rebuilder {
    /// Starts the thread; it stops when the rebuilder is dropped or `target` is gone.
    pub fn start<T: Refit>(target: Weak<T>) -> std::io::Result<Rebuilder> {
        let shared = Arc::new((Mutex::new(Pending::default()), Condvar::new()));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("lecr-lexical".into())
            .spawn(move || rebuild_loop(&s, target))?;
        Ok(Rebuilder { shared })
    }

    /// The index changed: refit once writes pause.
    pub fn changed(&self) {
        let (m, cv) = &*self.shared;
        if let Ok(mut p) = m.lock() {
            let now = Instant::now();
            p.since.get_or_insert(now);
            p.last = Some(now);
        }
        cv.notify_all();
    }
}

impl Drop for Rebuilder {
    fn drop(&mut self) {
        let (m, cv) = &*self.shared;
        if let Ok(mut p) = m.lock() {
            p.closed = true;
        }
        cv.notify_all();
    }
}

fn rebuild_loop<T: Refit>(shared: &(Mutex<Pending>, Condvar), target: Weak<T>) {
    let (m, cv) = shared;
    loop {
        {
            let Ok(mut p) = m.lock() else { return };
            loop {
                if p.closed {
                    return;
                }
                let (Some(since), Some(last)) = (p.since, p.last) else {
                    p = match cv.wait(p) {
                        Ok(p) => p,
                        Err(_) => return,
                    };
                    continue;
                };
                let due = (last + QUIET).min(since + MAX_WAIT);
                let now = Instant::now();
                if now >= due {
                    p.since = None;
                    p.last = None;
                    break;
                }
                p = match cv.wait_timeout(p, due - now) {
                    Ok((p, _)) => p,
                    Err(_) => return,
                };
            }
        }
        let Some(t) = target.upgrade() else { return };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| refit_stale(&*t)));
        if caught.is_err() {
            tracing::error!("refitting the lexical index panicked; it stays as it was");
        }
    }
}
