//! A server follows its store: a thread applies to this server's in-memory index, catalog and
//! reranker context every change other processes commit (other replicas of a PostgreSQL
//! store; `lecr feedback import --store` beside a server on either back end). Its own changes
//! come back too, marked with its writer id, and are skipped without reading them: it applied
//! them as it wrote them (rereading them cost a replica under write load about 5 s of CPU a
//! minute). On PostgreSQL it wakes on the
//! store's notification, or every 250 ms when none comes, so a lost notification only delays;
//! on SQLite it polls every 250 ms.

use super::Engine;
use crate::serve::error::ServeResult;
use crate::store::changes::{Change, ChangeKind, Listener};
use crate::store::{DecisionKind, Location, Store};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The longest wait between two looks at the change log.
const POLL: Duration = Duration::from_millis(250);
/// Change rows older than this are pruned (a replica that was away loads the whole store).
const KEEP_CHANGES: Duration = Duration::from_secs(3600);

impl Engine {
    /// Starts following the store's change log (nothing to do without a store on disk). The
    /// thread ends with the engine.
    pub fn follow(self: &Arc<Self>, loc: &Location) -> anyhow::Result<()> {
        if matches!(loc, Location::Memory) {
            return Ok(());
        }
        let store = Store::open_at(loc)?;
        let listener = Listener::open(loc)?;
        let weak = Arc::downgrade(self);
        let (loc, from) = (loc.clone(), self.followed_from);
        std::thread::Builder::new()
            .name("lecr-follow".into())
            .spawn(move || follow_loop(weak, store, listener, loc, from))?;
        Ok(())
    }

    /// Whether this server wrote `change` (and so has applied it already).
    fn wrote(&self, change: &Change) -> bool {
        change.writer.as_deref() == Some(self.writer.as_str())
    }

    /// Applies the changes after `last` (advancing it); returns how many.
    fn apply_changes(&self, store: &Store, last: &mut i64) -> ServeResult<usize> {
        let mut n = 0;
        loop {
            let batch = self.checked(store.changes_after(*last, 1000))?;
            if batch.is_empty() {
                return Ok(n);
            }
            // Others' contents of the batch in one query, as they are now.
            let mut seen = std::collections::HashSet::new();
            let ids: Vec<&str> = batch
                .iter()
                .filter(|c| !self.wrote(c))
                .filter(|c| c.kind == ChangeKind::Content && seen.insert(c.key.as_str()))
                .map(|c| c.key.as_str())
                .collect();
            let mut rows = self.checked(store.contents(&ids))?;
            if !ids.is_empty() {
                let mut index = self.index_mut()?;
                // A change another writer logged may be one this server made too (both wrote
                // the same content): left alone when the index holds it as it is (an upsert
                // would move its row and mark the lexical index stale).
                let mut changed = false;
                for id in &ids {
                    match rows.remove(*id) {
                        Some(c) if c.vector.len() == index.dim() => {
                            if !index.holds(&c.meta, &c.vector) {
                                self.index_io(index.upsert(c.meta, &c.vector))?;
                                changed = true;
                            }
                        }
                        Some(c) => tracing::warn!(
                            "content {} has a vector of {} values, this model gives {}: not \
                             followed",
                            c.meta.id,
                            c.vector.len(),
                            index.dim()
                        ),
                        None => changed |= self.index_io(index.remove(id))?,
                    }
                }
                if changed {
                    self.index_changed(&index);
                }
            }
            for ch in &batch {
                let by = if self.wrote(ch) {
                    "this_server"
                } else {
                    "others"
                };
                self.metrics.changes_followed.with_label_values(&[by]).inc();
                if self.wrote(ch) {
                    *last = ch.seq;
                    n += 1;
                    continue;
                }
                match ch.kind {
                    ChangeKind::Content => {}
                    ChangeKind::Topic => {
                        if let Some(t) = self.checked(store.topic(&ch.key))? {
                            self.catalog_mut()?.add([t]);
                        }
                    }
                    ChangeKind::Decision => {
                        let (Some(rr), Ok(seq)) = (&self.reranker, ch.key.parse::<i64>()) else {
                            continue;
                        };
                        if let Some(d) = self.checked(store.decision(seq))? {
                            let channel = self
                                .catalog()?
                                .get(&d.topic_id)
                                .map(|t| t.channel.clone())
                                .unwrap_or_default();
                            let mut links =
                                rr.links_mut().map_err(|e| self.broken(&e.to_string()))?;
                            match d.kind {
                                DecisionKind::Accept => {
                                    links.accept(&d.topic_id, &channel, &d.content_id)
                                }
                                DecisionKind::Reject | DecisionKind::Undo => {
                                    links.clear(&d.topic_id, &d.content_id)
                                }
                            }
                        }
                    }
                }
                *last = ch.seq;
                n += 1;
            }
        }
    }
}

fn follow_loop(
    weak: Weak<Engine>,
    store: Store,
    mut listener: Option<Listener>,
    loc: Location,
    mut last: i64,
) {
    let mut pruned = Instant::now();
    loop {
        // Wait for a notification, or poll.
        let waited = match listener.as_mut() {
            Some(l) => l.wait(POLL).map(|_| ()).map_err(|e| e.to_string()),
            None => {
                std::thread::sleep(POLL);
                Err(String::new())
            }
        };
        if waited.is_err() || listener.as_ref().is_some_and(Listener::is_closed) {
            // Lost (the database restarted): listen again when it is back; poll meanwhile.
            listener = Listener::open(&loc).ok().flatten();
        }
        let Some(engine) = weak.upgrade() else {
            return; // the server stopped
        };
        match engine.apply_changes(&store, &mut last) {
            Ok(n) if n > 0 => tracing::debug!("followed {n} change(s) up to {last}"),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("following the store: {e}");
                drop(engine);
                std::thread::sleep(POLL);
                continue;
            }
        }
        if pruned.elapsed() > Duration::from_secs(600) {
            pruned = Instant::now();
            if let Err(e) = store.prune_changes(KEEP_CHANGES) {
                tracing::debug!("pruning the change log: {e}");
            }
        }
    }
}
