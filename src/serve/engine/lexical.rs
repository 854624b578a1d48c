//! The lexical retriever's upkeep: fitting every language before the first request (or reading
//! back its saved fit), and the background refits after writes ([`crate::serve::lexical`]
//! says why it is rebuilt from the store's texts).

use super::Engine;
use crate::select::lexical::LexicalIndex;
use crate::serve::index::Index;
use crate::serve::lexical::{refit_stale, Fitted, Rebuilder, Refit, Snapshot};
use crate::serve::lexical_saved::SavedFits;
use crate::serve::metrics::Metrics;
use crate::serve::queue::ModelSide;
use anyhow::Result;
use std::sync::Arc;

/// What the refits change: the index, and the gauges that describe it.
pub(super) struct LexicalTarget {
    pub model: Arc<ModelSide>,
    pub metrics: Arc<Metrics>,
    /// Where fits are kept (beside a store on disk).
    pub saved: Option<SavedFits>,
    /// Languages read back from a saved fit so far.
    pub read_back: std::sync::atomic::AtomicUsize,
}

impl Refit for LexicalTarget {
    fn stale_languages(&self) -> Vec<String> {
        self.model.index.stale_languages()
    }
    fn snapshot(&self, language: &str) -> Option<Snapshot> {
        self.model.index.snapshot(language)
    }
    fn install(&self, snapshot: Snapshot, fitted: Fitted) {
        self.model.index.install(snapshot, fitted);
        if let Ok(i) = self.model.index.read() {
            self.metrics.set_lexical(&i);
        }
    }
    fn saved(&self, snapshot: &Snapshot) -> Option<LexicalIndex> {
        let found = self.saved.as_ref()?.load(snapshot)?;
        self.read_back
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(found)
    }
    fn save(&self, snapshot: &Snapshot, index: LexicalIndex) -> LexicalIndex {
        let Some(s) = &self.saved else {
            return index;
        };
        // Failing to keep it costs the next start a fit and this one the index's memory,
        // nothing else.
        match s.save(snapshot, &index) {
            Ok(mapped) => mapped,
            Err(e) => {
                tracing::warn!(
                    "{}: could not save the lexical index ({e}); it is held in memory, and \
                     the next start fits it again",
                    s.path(&snapshot.language).display()
                );
                index
            }
        }
    }
}

/// What [`Engine::settle_lexical`] did.
pub struct Settled {
    pub languages: usize,
    /// Of them, read back from a saved fit (not fitted).
    pub read_back: usize,
    pub contents: usize,
    pub seconds: f64,
    pub bytes: usize,
}

impl Engine {
    /// Fits the lexical index of every language that misses writes, now, and from then on
    /// keeps it current in the background. `None` without lexical retrieval.
    pub fn settle_lexical(&self) -> Result<Option<Settled>> {
        let Some(target) = &self.lexical else {
            return Ok(None);
        };
        let t0 = std::time::Instant::now();
        let before = target.read_back.load(std::sync::atomic::Ordering::Relaxed);
        // Before the first request: all cores.
        let languages = refit_stale(target.as_ref(), false);
        let read_back = target.read_back.load(std::sync::atomic::Ordering::Relaxed) - before;
        if self.rebuilder.get().is_none() {
            let r = Rebuilder::start(Arc::downgrade(target))?;
            let _ = self.rebuilder.set(r);
        }
        let index = self.index()?;
        self.metrics.set_lexical(&index);
        Ok(Some(Settled {
            languages,
            read_back,
            contents: index.sizes().iter().map(|(_, n)| n).sum(),
            seconds: t0.elapsed().as_secs_f64(),
            bytes: index.lexical_bytes(),
        }))
    }

    /// With lexical retrieval, how many languages wait for a refit.
    pub fn lexical_stale(&self) -> Option<usize> {
        self.lexical.as_ref()?;
        self.index().ok().map(|i| i.stale_languages().len())
    }

    /// The index changed (a write, a removal, another replica's change): the gauges follow,
    /// and the lexical index is refitted once writes pause.
    pub(super) fn index_changed(&self, index: &Index) {
        self.metrics.set_index(index);
        self.metrics.set_lexical(index);
        if let Some(r) = self.rebuilder.get() {
            r.changed();
        }
    }
}
