//! One bounded queue for all model work, and the one thread that does it (the habit of
//! text-embeddings-inference: refuse work when full instead of queueing without limit).
//!
//! - **Rank** jobs (topic texts of recommend, the page, embed-topics, reranker parents) are
//!   batched: the worker takes every waiting one, up to `max_batch` texts, embeds them in one
//!   call and ranks each against its language with one matrix product per language.
//! - **Cross** jobs (a recommend's (topic, content) pairs for the reranker's cross-encoder)
//!   go first: they finish requests already under way. A batch is at most `max_batch` pairs,
//!   shared fairly among the waiting jobs (each gets an equal slice, the rest fills in order),
//!   so one request of many topics cannot hold back a small one behind all its pairs. They
//!   are never refused: the request was admitted with its rank job.
//! - **Embed** jobs (a slice of an embed-content's texts) run one at a time, when no rank job
//!   waits or after two rank batches in a row: a long publish is cut into slices, so a
//!   recommend waits for at most one slice, and a publish keeps a share of the model under a
//!   steady stream of recommends.
//! - The queue holds at most `max_queue` texts; a job that does not fit is refused at once
//!   with [`ServeError::Overloaded`] and a `Retry-After` from the measured throughput.
//! - A job whose requester has gone (timed out, disconnected) is skipped, not computed.
//! - A panic while computing fails that batch only; if the thread itself ends, every later job
//!   is refused and `/health` says `failed`.

mod rank;

use super::error::{ServeError, ServeResult};
use super::index::{Column, Hit, Index, ServedCandidates};
use crate::serve::embedder::{Embedder, PairScorer, Role};
use rank::rank_batch;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A topic text to embed; with a language, also ranked against that language's contents.
#[derive(Debug, Clone, Default)]
pub struct RankText {
    /// What the encoder gets.
    pub text: String,
    pub language: Option<String>,
    /// What the lexical retriever gets (the whole text; the encoder's may be cut).
    pub lexical: Option<String>,
    /// The topic's parent (for the second stage's parent similarities).
    pub parent: Option<ParentText>,
}

/// A topic's parent: its encoder text and its lexical text.
#[derive(Debug, Clone, Default)]
pub struct ParentText {
    pub text: String,
    pub lexical: Option<String>,
}

/// What ranking gives back for each text with a language.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// The `r` best hits of the ensemble.
    Hits(usize),
    /// The second stage's candidates over these columns (the top `k` of each).
    Candidates { columns: Vec<Column>, k: usize },
}

/// What the worker gives back for a [`RankText`]: its vector, and its best hits or its
/// candidates (empty without a language).
#[derive(Debug)]
pub struct RankedText {
    pub vector: Vec<f32>,
    pub hits: Vec<Hit>,
    pub candidates: Option<ServedCandidates>,
}

type Reply<T> = oneshot::Sender<ServeResult<T>>;

struct RankJob {
    texts: Vec<RankText>,
    want: Want,
    reply: Reply<Vec<RankedText>>,
}

struct CrossJob {
    id: u64,
    pairs: Vec<(String, String)>,
    /// Pairs handed to the worker so far.
    taken: usize,
    /// Their logits, in order.
    logits: Vec<f32>,
    reply: Reply<Vec<f32>>,
}

/// The part of a cross job one batch reads.
struct CrossSlice {
    job: u64,
    pairs: Vec<(String, String)>,
}

struct EmbedJob {
    texts: Vec<String>,
    reply: Reply<Vec<f32>>,
}

#[derive(Default)]
struct Waiting {
    rank: VecDeque<RankJob>,
    /// Until all their logits are back (none is being read between batches).
    cross: VecDeque<CrossJob>,
    next_cross: u64,
    embed: VecDeque<EmbedJob>,
    texts: usize,
    closed: bool,
}

/// What the worker needs: the model, the index it ranks against, and the reranker's
/// cross-encoder once a reranker that reads one is set.
pub struct ModelSide {
    pub embedder: Box<dyn Embedder>,
    pub index: RwLock<Index>,
    pub cross: OnceLock<Box<dyn PairScorer>>,
}

impl ModelSide {
    pub fn new(embedder: Box<dyn Embedder>, index: Index) -> ModelSide {
        ModelSide {
            embedder,
            index: RwLock::new(index),
            cross: OnceLock::new(),
        }
    }
}

struct Shared {
    waiting: Mutex<Waiting>,
    wake: Condvar,
    capacity: usize,
    /// False once the worker thread has ended.
    alive: AtomicBool,
    /// Why it ended (set before `alive` turns false).
    death: Mutex<Option<String>>,
    /// Texts per second the worker achieved (f64 bits), for `Retry-After`.
    rate: AtomicU64,
    /// Batch-size histogram.
    metrics: Arc<super::metrics::Metrics>,
}

/// The queue's handle; cloning shares it. The worker stops when the last handle is dropped.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// Closes the queue when the last [`Queue`] goes, so the worker thread ends.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        if let Ok(mut w) = self.0.waiting.lock() {
            w.closed = true;
        }
        self.0.wake.notify_all();
    }
}

impl Queue {
    /// Starts the worker thread over `model`.
    pub fn start(
        model: Arc<ModelSide>,
        capacity: usize,
        max_batch: usize,
        metrics: Arc<super::metrics::Metrics>,
    ) -> Queue {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting::default()),
            wake: Condvar::new(),
            capacity: capacity.max(1),
            alive: AtomicBool::new(true),
            death: Mutex::new(None),
            rate: AtomicU64::new(50f64.to_bits()),
            metrics,
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lecr-model".into())
            .spawn(move || {
                let _mark = MarkDead(s.clone());
                work(&s, &model, max_batch.max(1));
            });
        if let Err(e) = spawned {
            *shared.death.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("could not start the model worker: {e}"));
            shared.alive.store(false, Ordering::SeqCst);
        }
        Queue {
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        }
    }

    /// Why the worker is gone, if it is.
    pub fn failure(&self) -> Option<String> {
        if self.shared.alive.load(Ordering::SeqCst) {
            return None;
        }
        Some(
            self.shared
                .death
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "the model worker stopped".into()),
        )
    }

    /// Texts waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.lock().map(|w| w.texts).unwrap_or(0)
    }

    /// Embeds `texts` (and their parents) and ranks those with a language against the index.
    pub async fn rank(&self, texts: Vec<RankText>, want: Want) -> ServeResult<Vec<RankedText>> {
        let n = texts.len() + texts.iter().filter(|t| t.parent.is_some()).count();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.push(n, false, |w| {
            w.rank.push_back(RankJob { texts, want, reply })
        })?;
        self.wait(rx).await
    }

    /// The cross-encoder's logits of (topic text, content text) pairs, in order.
    pub async fn cross(&self, pairs: Vec<(String, String)>) -> ServeResult<Vec<f32>> {
        let n = pairs.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.push(n, true, |w| {
            let id = w.next_cross;
            w.next_cross += 1;
            w.cross.push_back(CrossJob {
                id,
                pairs,
                taken: 0,
                logits: Vec::with_capacity(n),
                reply,
            })
        })?;
        self.wait(rx).await
    }

    /// Embeds content texts (one slice of an embed-content), row-major `n × dim`. The first
    /// slice of a request is admitted like any job; the later ones (`continued`) are never
    /// refused, so a publish once accepted is not lost half-way to a burst of recommends (each
    /// request has at most one slice waiting).
    pub async fn embed(&self, texts: Vec<String>, continued: bool) -> ServeResult<Vec<f32>> {
        let n = texts.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        let job = |w: &mut Waiting| w.embed.push_back(EmbedJob { texts, reply });
        self.push(n, continued, job)?;
        self.wait(rx).await
    }

    /// Queues a job of `n` texts; refused when it does not fit, unless `admitted`.
    fn push(&self, n: usize, admitted: bool, put: impl FnOnce(&mut Waiting)) -> ServeResult<()> {
        if let Some(why) = self.failure() {
            return Err(ServeError::Failed(why));
        }
        let mut w = self
            .shared
            .waiting
            .lock()
            .map_err(|_| ServeError::Failed("the model queue's lock is poisoned".into()))?;
        // A job larger than the whole queue still runs when the queue is empty (the request
        // limits keep it bounded); otherwise it must fit.
        if !admitted && w.texts > 0 && w.texts + n > self.shared.capacity {
            let rate = f64::from_bits(self.shared.rate.load(Ordering::Relaxed)).max(1.0);
            let secs = ((w.texts + n) as f64 / rate).ceil().clamp(1.0, 60.0);
            return Err(ServeError::Overloaded {
                what: format!(
                    "{} texts wait for the model (at most {})",
                    w.texts, self.shared.capacity
                ),
                retry_after: Duration::from_secs(secs as u64),
            });
        }
        w.texts += n;
        put(&mut w);
        drop(w);
        self.shared.wake.notify_one();
        Ok(())
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<ServeResult<T>>) -> ServeResult<T> {
        match rx.await {
            Ok(r) => r,
            Err(_) => {
                Err(ServeError::Failed(self.failure().unwrap_or_else(|| {
                    "the model worker dropped the job".into()
                })))
            }
        }
    }
}

struct MarkDead(Arc<Shared>);

impl Drop for MarkDead {
    fn drop(&mut self) {
        let closed = self.0.waiting.lock().map(|w| w.closed).unwrap_or(false);
        if !closed {
            let mut d = self.0.death.lock().unwrap_or_else(|p| p.into_inner());
            d.get_or_insert_with(|| "the model worker thread ended".into());
            tracing::error!("{}", d.as_deref().unwrap_or_default());
        }
        self.0.alive.store(false, Ordering::SeqCst);
        // Jobs still waiting: their requesters get the failure (their receivers see the
        // senders dropped with the queue contents).
        if let Ok(mut w) = self.0.waiting.lock() {
            w.rank.clear();
            w.cross.clear();
            w.embed.clear();
            w.texts = 0;
        }
    }
}

enum Batch {
    Rank(Vec<RankJob>),
    Cross(Vec<CrossSlice>),
    Embed(EmbedJob),
}

/// Rank batches run before a waiting content slice gets its turn: recommends go first, yet a
/// publish keeps a share of the model under a steady stream of recommends (without it, 16
/// busy clients starved a publish to 5 resources/s).
const RANK_BATCHES_PER_SLICE: usize = 2;

/// Takes the next batch: every waiting rank job (up to `max_batch` texts, the first always),
/// or one embed job when none waits or the rank jobs have had their turns; jobs whose
/// requester has gone are dropped. `None`: closed. `streak` counts rank batches since the
/// last slice.
fn next_batch(s: &Shared, max_batch: usize, streak: &mut usize) -> Option<Batch> {
    let mut w = s.waiting.lock().ok()?;
    loop {
        if w.closed {
            return None;
        }
        let slice_turn = *streak >= RANK_BATCHES_PER_SLICE && !w.embed.is_empty();
        if !w.cross.is_empty() && !slice_turn {
            if let Some(slices) = cross_slices(&mut w, max_batch) {
                *streak += 1;
                return Some(Batch::Cross(slices));
            }
            continue;
        }
        if !w.rank.is_empty() && !slice_turn {
            let mut jobs = Vec::new();
            let mut n = 0;
            while let Some(j) = w.rank.front() {
                if !jobs.is_empty() && n + j.len() > max_batch {
                    break;
                }
                let j = w.rank.pop_front().expect("front exists");
                w.texts -= j.len();
                if j.reply.is_closed() {
                    continue;
                }
                n += j.len();
                jobs.push(j);
            }
            if !jobs.is_empty() {
                *streak += 1;
                return Some(Batch::Rank(jobs));
            }
            continue;
        }
        if let Some(j) = w.embed.pop_front() {
            w.texts -= j.texts.len();
            *streak = 0;
            if j.reply.is_closed() {
                continue;
            }
            return Some(Batch::Embed(j));
        }
        w = s.wake.wait(w).ok()?;
    }
}

fn work(s: &Shared, model: &ModelSide, max_batch: usize) {
    let mut streak = 0;
    // The index's count of rescored rows when the metric last caught up with it.
    let rescored = || model.index.read().map_or(0, |i| i.rescored());
    let mut counted = rescored();
    while let Some(batch) = next_batch(s, max_batch, &mut streak) {
        let t0 = Instant::now();
        let n = match &batch {
            Batch::Rank(jobs) => jobs.iter().map(RankJob::len).sum(),
            Batch::Cross(slices) => slices.iter().map(|j| j.pairs.len()).sum(),
            Batch::Embed(j) => j.texts.len(),
        };
        match batch {
            Batch::Rank(jobs) => {
                s.metrics.batch_topics.observe(n as f64);
                let result = guarded(|| rank_batch(model, &jobs));
                let now = rescored();
                s.metrics.rescored.inc_by(now.saturating_sub(counted));
                counted = now;
                match result {
                    Ok(all) => {
                        let mut all = all.into_iter();
                        for j in jobs {
                            let mine: Vec<RankedText> = all
                                .by_ref()
                                .take(j.texts.len())
                                .map(|mut t| {
                                    if let Want::Hits(r) = j.want {
                                        t.hits.truncate(r);
                                    }
                                    t
                                })
                                .collect();
                            let _ = j.reply.send(Ok(mine)); // the requester may have gone
                        }
                    }
                    Err(why) => {
                        tracing::error!("ranking a batch of {n} texts failed: {why}");
                        for j in jobs {
                            let _ = j.reply.send(Err(why.to_error()));
                        }
                    }
                }
            }
            Batch::Cross(slices) => {
                let result = guarded(|| cross_batch(model, &slices));
                s.metrics.cross_pairs.inc_by(n as u64);
                s.metrics.cross_seconds.observe(t0.elapsed().as_secs_f64());
                if let Err(why) = &result {
                    tracing::error!("the cross-encoder failed on {n} pairs: {why}");
                }
                deliver_cross(s, &slices, result);
            }
            Batch::Embed(j) => {
                let result = guarded(|| {
                    model
                        .embedder
                        .embed(Role::Content, &j.texts)
                        .map_err(|e| format!("{e:#}"))
                });
                let _ = j.reply.send(result.map_err(|why| {
                    tracing::error!("embedding {n} content texts failed: {why}");
                    ServeError::Internal(anyhow::anyhow!("embedding failed: {why}"))
                }));
            }
        }
        let secs = t0.elapsed().as_secs_f64().max(1e-6);
        let old = f64::from_bits(s.rate.load(Ordering::Relaxed));
        let rate = 0.8 * old + 0.2 * (n as f64 / secs);
        s.rate.store(rate.to_bits(), Ordering::Relaxed);
    }
}

/// Runs `f`, turning an error or a panic into a message (the worker lives on).
fn guarded<T, E: From<String>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(E::from(format!(
            "panicked: {}",
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        ))),
    }
}

/// The next cross batch: abandoned jobs dropped, then an equal share of `max_batch` pairs
/// for each waiting job, the rest of the budget filled in order. `None`: none is left.
fn cross_slices(w: &mut Waiting, max_batch: usize) -> Option<Vec<CrossSlice>> {
    let mut dropped = 0;
    w.cross.retain(|j| {
        let keep = !j.reply.is_closed();
        if !keep {
            dropped += j.pairs.len() - j.taken;
        }
        keep
    });
    w.texts -= dropped;
    if w.cross.is_empty() {
        return None;
    }
    let share = (max_batch / w.cross.len()).max(1);
    let mut budget = max_batch.max(1);
    let mut counts = vec![0usize; w.cross.len()];
    for pass_share in [share, usize::MAX] {
        for (j, count) in w.cross.iter().zip(counts.iter_mut()) {
            let k = (j.pairs.len() - j.taken - *count)
                .min(pass_share.saturating_sub(*count))
                .min(budget);
            *count += k;
            budget -= k;
        }
    }
    let mut slices = Vec::new();
    for (j, k) in w.cross.iter_mut().zip(counts) {
        if k > 0 {
            slices.push(CrossSlice {
                job: j.id,
                pairs: j.pairs[j.taken..j.taken + k].to_vec(),
            });
            j.taken += k;
        }
    }
    w.texts -= slices.iter().map(|s| s.pairs.len()).sum::<usize>();
    Some(slices)
}

/// Every pair of the batch in one call of the cross-encoder.
fn cross_batch(model: &ModelSide, slices: &[CrossSlice]) -> Result<Vec<f32>, String> {
    let scorer = model
        .cross
        .get()
        .ok_or_else(|| "no cross-encoder is loaded".to_string())?;
    let pairs: Vec<(String, String)> = slices.iter().flat_map(|j| j.pairs.clone()).collect();
    let out = scorer.logits(&pairs).map_err(|e| format!("{e:#}"))?;
    if out.len() != pairs.len() {
        return Err(format!(
            "{} gave {} logits for {} pairs",
            scorer.id(),
            out.len(),
            pairs.len()
        ));
    }
    Ok(out)
}

/// Hands a cross batch's logits to their jobs; a job whose pairs are all read gets its answer
/// (a failure: at once, the rest of its pairs not read).
fn deliver_cross(s: &Shared, slices: &[CrossSlice], result: Result<Vec<f32>, String>) {
    let Ok(mut w) = s.waiting.lock() else {
        return;
    };
    let mut logits = result.as_deref().unwrap_or_default().iter().copied();
    for slice in slices {
        // Not found: dropped as abandoned meanwhile.
        let Some(at) = w.cross.iter().position(|j| j.id == slice.job) else {
            continue;
        };
        if let Err(why) = &result {
            let j = w.cross.remove(at).expect("found above");
            w.texts -= j.pairs.len() - j.taken;
            let _ = j.reply.send(Err(ServeError::Internal(anyhow::anyhow!(
                "the cross-encoder failed: {why}"
            ))));
            continue;
        }
        let j = &mut w.cross[at];
        j.logits.extend(logits.by_ref().take(slice.pairs.len()));
        if j.logits.len() == j.pairs.len() {
            let j = w.cross.remove(at).expect("found above");
            let _ = j.reply.send(Ok(j.logits)); // the requester may have gone
        }
    }
}

impl RankJob {
    /// Texts it embeds (its topics and their parents).
    fn len(&self) -> usize {
        self.texts.len() + self.texts.iter().filter(|t| t.parent.is_some()).count()
    }
}

#[cfg(test)]
mod tests;
