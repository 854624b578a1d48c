//! The lexical retriever inside the service: per language, the character n-gram TF-IDF index
//! of `--model lexical` ([`LexicalIndex`], the code `eval` and `predict` use), kept next to the
//! language's vector matrix.
//!
//! - **Rebuilt from the store's texts.** Its idf depends on every content of the language, so
//!   any change re-weighs them all; it is derived data that the store's texts fully determine,
//!   so it is fitted on them at start-up (every language, before the first request) and, after
//!   writes, by one background thread ([`Rebuilder`]) that waits for a quiet moment (writes of
//!   one publish come in bursts) and then refits the languages that changed, outside any lock,
//!   and swaps each in under a short write lock. Beside a store on disk, each fit is also
//!   saved ([`super::lexical_saved`]): a start on an unchanged language reads it back instead
//!   of fitting (at ten times LECR's catalog the fits took minutes of the start). The saved
//!   fit is a cache checked against a fingerprint of the language's contents, never a second
//!   truth to keep in step.
//! - **Rows.** The vector matrix moves rows on every write (a removal moves the last row into
//!   the hole); the lexical index keeps the positions of the contents it was fitted on, and a
//!   map from each matrix row to its position follows the matrix. A content written since the
//!   last fit has no position and scores 0 until the next one (a language with such rows is
//!   *stale*; `/metrics` counts them and `/health` says so).

use crate::select::lexical::{LexicalIndex, Threads};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// No position in the fitted index (written since the fit), or no row (removed since).
pub const NOWHERE: u32 = u32::MAX;

/// A fitted index and the position of each content it was fitted on, made outside any lock.
pub struct Fitted {
    index: LexicalIndex,
    pos: HashMap<String, u32>,
}

impl Fitted {
    /// An index fitted on the texts of `ids` (in that order).
    pub fn with_index(ids: &[String], index: LexicalIndex) -> Fitted {
        Fitted {
            index,
            pos: ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i as u32))
                .collect(),
        }
    }
}

/// The lexical side of one language.
pub struct LexRows {
    index: LexicalIndex,
    /// Position of each matrix row in `index` (or [`NOWHERE`]).
    map: Vec<u32>,
    /// Matrix row of each fitted position (or [`NOWHERE`]): where its score goes.
    slot: Vec<u32>,
    /// Whether each fitted position is its own row (no removal since the fit): then the
    /// scores need no slots.
    identity: bool,
}

impl LexRows {
    /// `fitted` mapped onto the matrix rows `rows` (ids in row order). `same` says the rows are
    /// the ones it was fitted on, in that order (no change since): no lookups needed.
    pub fn new(fitted: Fitted, rows: &[String], same: bool) -> LexRows {
        let map: Vec<u32> = if same {
            (0..rows.len() as u32).collect()
        } else {
            rows.iter()
                .map(|id| fitted.pos.get(id).copied().unwrap_or(NOWHERE))
                .collect()
        };
        let mut slot = vec![NOWHERE; fitted.index.len()];
        for (r, &p) in map.iter().enumerate() {
            if p != NOWHERE {
                slot[p as usize] = r as u32;
            }
        }
        LexRows {
            index: fitted.index,
            map,
            slot,
            identity: same,
        }
    }

    /// A row was appended to the matrix (a written content: not fitted yet).
    pub fn push_unfitted(&mut self) {
        self.map.push(NOWHERE);
    }

    /// The matrix moved its last row into `r` (a removal).
    pub fn swap_remove(&mut self, r: usize) {
        self.identity = false;
        let last = self.map.len() - 1;
        if self.map[r] != NOWHERE {
            self.slot[self.map[r] as usize] = NOWHERE;
        }
        self.map.swap_remove(r);
        if r != last && self.map[r] != NOWHERE {
            self.slot[self.map[r] as usize] = r as u32;
        }
    }

    /// `text`'s lexical similarity to every matrix row, into `row` (zeroed first).
    pub fn scores_into(&self, text: &str, row: &mut [f32]) {
        assert_eq!(row.len(), self.map.len(), "a value per matrix row");
        row.fill(0.0);
        if self.identity {
            // Rows written since the fit come after the fitted ones.
            self.index.scores_into(text, &mut row[..self.slot.len()]);
        } else {
            self.index.scores_into_slots(text, &self.slot, row);
        }
    }

    /// `text`'s lexical similarity to every matrix row.
    pub fn scores(&self, text: &str) -> Vec<f32> {
        let mut row = vec![0f32; self.map.len()];
        self.scores_into(text, &mut row);
        row
    }

    /// Bytes held in memory (the index, unless it is used from its saved file, and the two
    /// maps).
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_bytes() + (self.map.capacity() + self.slot.capacity()) * 4
    }

    /// Bytes of the index used in place from its saved file (through the page cache).
    pub fn mapped_bytes(&self) -> usize {
        self.index.mapped_bytes()
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
    fn install(&self, snapshot: Snapshot, fitted: Fitted);
    /// A saved fit of exactly this snapshot's contents, if one is kept.
    fn saved(&self, _snapshot: &Snapshot) -> Option<LexicalIndex> {
        None
    }
    /// Keeps a fit for the next start (where fits are kept), and gives back the index to
    /// serve: the saved one, used from its file, or `index` itself.
    fn save(&self, _snapshot: &Snapshot, index: LexicalIndex) -> LexicalIndex {
        index
    }
}

/// Fits every stale language of `target` now; returns how many it fitted. In the
/// `background`, the fits run one after another on this thread alone in the machine's idle
/// time, while the snapshot and the swap (which hold the index's lock) run at normal
/// priority: a thread that waits for idle time must not hold a lock that requests wait for.
/// Otherwise (before the first request) the languages are fitted side by side, one per core,
/// each on its own thread: part of a fit (merging counts, writing the postings) runs on one
/// thread, so fitting one language at a time over the pool left cores idle; and one fit per
/// core bounds the fits held in memory at once (rayon's work stealing would not).
pub fn refit_stale(target: &dyn Refit, background: bool) -> usize {
    let languages = target.stale_languages();
    if !background {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let queue = Mutex::new(languages.iter());
        let direct = |f: &mut dyn FnMut()| f();
        return std::thread::scope(|s| {
            let workers: Vec<_> = (0..cores.min(languages.len()))
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0;
                        while let Some(lang) = queue.lock().ok().and_then(|mut q| q.next()) {
                            n += usize::from(refit_one(target, lang, Threads::Caller, &direct));
                        }
                        n
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
        });
    }
    let locked = |f: &mut dyn FnMut()| {
        set_idle(false);
        f();
        set_idle(true);
    };
    languages
        .iter()
        .filter(|lang| refit_one(target, lang, Threads::Caller, &locked))
        .count()
}

/// Fits one language of `target` (false: it is gone); `locked` runs the steps that take the
/// index's lock.
fn refit_one(
    target: &dyn Refit,
    lang: &str,
    threads: Threads,
    locked: &dyn Fn(&mut dyn FnMut()),
) -> bool {
    let mut snap = None;
    locked(&mut || snap = target.snapshot(lang));
    let Some(snap) = snap else {
        return false;
    };
    let t0 = Instant::now();
    let fitted = match target.saved(&snap) {
        Some(index) => {
            tracing::debug!(
                "lexical index of `{lang}` ({} contents) read back from its saved fit in {:.2} s",
                snap.ids.len(),
                t0.elapsed().as_secs_f64()
            );
            Fitted::with_index(&snap.ids, index)
        }
        None => {
            let index = LexicalIndex::fit_with(&snap.texts, threads);
            tracing::debug!(
                "lexical index of `{lang}` refitted on {} contents in {:.2} s",
                snap.ids.len(),
                t0.elapsed().as_secs_f64()
            );
            Fitted::with_index(&snap.ids, target.save(&snap, index))
        }
    };
    let mut parts = Some((snap, fitted));
    locked(&mut || {
        if let Some((snap, fitted)) = parts.take() {
            target.install(snap, fitted);
        }
    });
    true
}

/// Quiet time after the last write before a refit starts: longer than the gap between the
/// embed-content requests of one publish (each commits a batch), so a publish is one burst.
pub const QUIET: Duration = Duration::from_secs(2);
/// Longest a change waits for quiet under a steady stream of writes (a publish): refitting
/// during one costs its recommends even in idle time (the cores' caches, and on machines whose
/// cores are hyperthreads of one, the core itself), while its new contents are recommended by
/// their vectors meanwhile.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// After a refit that took T, the next starts no sooner than `REST × T` later: refits take at
/// most a ninth of the time however steady the writes (a 154k-content corpus takes seconds to
/// refit, and a publish writes for minutes).
pub const REST: u32 = 8;

#[derive(Default)]
struct Pending {
    /// When the first unfitted change came (None: nothing pending).
    since: Option<Instant>,
    last: Option<Instant>,
    closed: bool,
}

/// The background thread that refits stale languages after writes: on one thread in the
/// machine's idle time, outside rayon's pool, so requests keep the cores.
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
            .spawn(move || {
                set_idle(true);
                rebuild_loop(&s, target)
            })?;
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

/// `idle`: the calling thread runs only when no other thread wants a core (Linux's
/// `SCHED_IDLE`; nice 19 where that is refused; elsewhere nothing), so a refit takes no time
/// from requests (at nice 10 it still halved the recommends of a server under load while
/// Studio published). Otherwise: back to the normal class.
fn set_idle(idle: bool) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id, with a valid parameter.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        let class = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        if libc::sched_setscheduler(tid, class, &param) != 0 {
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                if idle { 19 } else { 0 },
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = idle;
}

fn rebuild_loop<T: Refit>(shared: &(Mutex<Pending>, Condvar), target: Weak<T>) {
    let (m, cv) = shared;
    let mut not_before = Instant::now();
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
                let due = (last + QUIET).min(since + MAX_WAIT).max(not_before);
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
        let t0 = Instant::now();
        let caught =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| refit_stale(&*t, true)));
        if caught.is_err() {
            tracing::error!("refitting the lexical index panicked; it stays as it was");
        }
        not_before = Instant::now() + t0.elapsed() * REST;
    }
}
