//! One bounded queue for all model work, and the one thread that does it (the habit of
//! text-embeddings-inference: refuse work when full instead of queueing without limit).
//!
//! - **Rank** jobs (topic texts of recommend, the page, embed-topics, reranker parents) are
//!   batched: the worker takes every waiting one, up to `max_batch` texts, embeds them in one
//!   call and ranks each against its language with one matrix product per language.
//! - **Embed** jobs (a slice of an embed-content's texts) run one at a time, when no rank job
//!   waits or after two rank batches in a row: a long publish is cut into slices, so a
//!   recommend waits for at most one slice, and a publish keeps a share of the model under a
//!   steady stream of recommends.
//! - The queue holds at most `max_queue` texts; a job that does not fit is refused at once
//!   with [`ServeError::Overloaded`] and a `Retry-After` from the measured throughput.
//! - A job whose requester has gone (timed out, disconnected) is skipped, not computed.
//! - A panic while computing fails that batch only; if the thread itself ends, every later job
//!   is refused and `/health` says `failed`.

use super::error::{ServeError, ServeResult};
use super::index::{Column, Hit, Index, Parent, ServedCandidates};
use crate::serve::embedder::{Embedder, Role};
use rayon::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
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

struct EmbedJob {
    texts: Vec<String>,
    reply: Reply<Vec<f32>>,
}

#[derive(Default)]
struct Waiting {
    rank: VecDeque<RankJob>,
    embed: VecDeque<EmbedJob>,
    texts: usize,
    closed: bool,
}

/// What the worker needs: the model and the index it ranks against.
pub struct ModelSide {
    pub embedder: Box<dyn Embedder>,
    pub index: RwLock<Index>,
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
            w.embed.clear();
            w.texts = 0;
        }
    }
}

enum Batch {
    Rank(Vec<RankJob>),
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

/// Why a rank batch failed.
#[derive(Debug, Clone, PartialEq)]
enum RankFailure {
    /// The PostgreSQL index mode's search could not reach the store, or the store gave way
    /// (a query cancelled by its timeout): 503 with `Retry-After`; the next batch tries again.
    StoreUnavailable(String),
    /// Anything else (the model, the exact vectors' file, a panic): 500.
    Other(String),
}

impl From<String> for RankFailure {
    fn from(why: String) -> Self {
        RankFailure::Other(why)
    }
}

impl std::fmt::Display for RankFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RankFailure::StoreUnavailable(why) | RankFailure::Other(why) => f.write_str(why),
        }
    }
}

impl RankFailure {
    /// A searching error: the store's own unavailability is told apart from the rest.
    fn searching(e: std::io::Error) -> Self {
        let unavailable = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::store::StoreError>())
            .is_some_and(crate::store::StoreError::is_unavailable);
        if unavailable {
            RankFailure::StoreUnavailable(format!("searching the store: {e}"))
        } else {
            RankFailure::Other(format!("searching the index: {e}"))
        }
    }

    fn to_error(&self) -> ServeError {
        match self {
            RankFailure::StoreUnavailable(why) => ServeError::StoreUnavailable(why.clone()),
            RankFailure::Other(why) => {
                ServeError::Internal(anyhow::anyhow!("ranking failed: {why}"))
            }
        }
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

impl RankJob {
    /// Texts it embeds (its topics and their parents).
    fn len(&self) -> usize {
        self.texts.len() + self.texts.iter().filter(|t| t.parent.is_some()).count()
    }
}

/// What one group (a language and a kind of answer) found, for the texts at `rows`.
enum Found {
    Hits(Vec<usize>, Vec<Vec<Hit>>),
    Candidates(Vec<usize>, Vec<ServedCandidates>),
}

/// One embedding call for every text of the batch (parents after the topics), then per
/// language and per kind of answer one matrix product (the groups in parallel).
fn rank_batch(model: &ModelSide, jobs: &[RankJob]) -> Result<Vec<RankedText>, RankFailure> {
    let items: Vec<(&RankText, &Want)> = jobs
        .iter()
        .flat_map(|j| j.texts.iter().map(move |t| (t, &j.want)))
        .collect();
    let mut texts: Vec<String> = items.iter().map(|(t, _)| t.text.clone()).collect();
    let mut parent_row = vec![None; items.len()];
    for (i, (t, _)) in items.iter().enumerate() {
        if let Some(p) = &t.parent {
            parent_row[i] = Some(texts.len());
            texts.push(p.text.clone());
        }
    }
    let d = model.embedder.dim();
    let vectors = model
        .embedder
        .embed(Role::Topic, &texts)
        .map_err(|e| RankFailure::Other(format!("{e:#}")))?;
    let vector = |i: usize| &vectors[i * d..(i + 1) * d];
    // Texts grouped by language and by what they want.
    let mut groups: Vec<(&str, &Want, Vec<usize>)> = Vec::new();
    for (i, (t, want)) in items.iter().enumerate() {
        let Some(lang) = t.language.as_deref() else {
            continue;
        };
        if matches!(want, Want::Hits(0)) {
            continue;
        }
        match groups.iter_mut().find(|g| g.0 == lang && g.1 == *want) {
            Some(g) => g.2.push(i),
            None => groups.push((lang, want, vec![i])),
        }
    }
    let mut hits: Vec<Vec<Hit>> = vec![Vec::new(); items.len()];
    let mut candidates: Vec<Option<ServedCandidates>> = (0..items.len()).map(|_| None).collect();
    if !groups.is_empty() {
        let index = model
            .index
            .read()
            .map_err(|_| RankFailure::Other("the index lock is poisoned".into()))?;
        // The groups side by side: a batch of a few topics per language would otherwise leave
        // a core idle through each language's lexical rows and rescoring (each group's own
        // work is parallel too; rayon shares the pool between them).
        let found: Vec<Result<Found, RankFailure>> = groups
            .into_par_iter()
            .map(|(lang, want, rows)| {
                let mut block = Vec::with_capacity(rows.len() * d);
                for &i in &rows {
                    block.extend_from_slice(vector(i));
                }
                let lexical: Option<Vec<&str>> = index.lexical().then(|| {
                    rows.iter()
                        .map(|&i| items[i].0.lexical.as_deref().unwrap_or(&items[i].0.text))
                        .collect()
                });
                Ok(match want {
                    Want::Hits(r) => Found::Hits(
                        rows.clone(),
                        index
                            .search(lang, &block, lexical.as_deref(), *r)
                            .map_err(RankFailure::searching)?,
                    ),
                    Want::Candidates { columns, k } => {
                        let parents: Vec<Option<Parent>> = rows
                            .iter()
                            .map(|&i| {
                                let p = items[i].0.parent.as_ref()?;
                                Some(Parent {
                                    vector: vector(parent_row[i]?),
                                    lexical: Some(p.lexical.as_deref().unwrap_or(&p.text)),
                                })
                            })
                            .collect();
                        Found::Candidates(
                            rows.clone(),
                            index
                                .candidates(lang, &block, lexical.as_deref(), &parents, columns, *k)
                                .map_err(RankFailure::searching)?,
                        )
                    }
                })
            })
            .collect();
        for f in found {
            match f? {
                Found::Hits(rows, found) => {
                    for (i, h) in rows.into_iter().zip(found) {
                        hits[i] = h;
                    }
                }
                Found::Candidates(rows, found) => {
                    for (i, c) in rows.into_iter().zip(found) {
                        candidates[i] = Some(c);
                    }
                }
            }
        }
    }
    Ok(hits
        .into_iter()
        .zip(candidates)
        .enumerate()
        .map(|(i, (hits, candidates))| RankedText {
            vector: vector(i).to_vec(),
            hits,
            candidates,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose `embed` sleeps per text, panics on the text "panic", and records the
    /// order in which it saw texts.
    struct Slow {
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Embedder for Slow {
        fn id(&self) -> &str {
            "slow"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed(&self, _: Role, texts: &[String]) -> anyhow::Result<Vec<f32>> {
            assert!(!texts.iter().any(|t| t == "panic"), "asked to panic");
            self.seen.lock().unwrap().extend(texts.iter().cloned());
            std::thread::sleep(Duration::from_millis(20 * texts.len() as u64));
            Ok(texts.iter().flat_map(|_| [1.0, 0.0]).collect())
        }
    }

    type Seen = Arc<Mutex<Vec<String>>>;

    fn queue(capacity: usize) -> (Queue, Seen) {
        queue_with(capacity, 64)
    }

    fn queue_with(capacity: usize, max_batch: usize) -> (Queue, Seen) {
        let seen = Seen::default();
        let model = Arc::new(ModelSide {
            embedder: Box::new(Slow { seen: seen.clone() }),
            index: RwLock::new(Index::new(2)),
        });
        let q = Queue::start(
            model,
            capacity,
            max_batch,
            Arc::new(super::super::metrics::Metrics::new()),
        );
        (q, seen)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    fn topic(t: &str) -> RankText {
        RankText {
            text: t.into(),
            language: Some("en".into()),
            ..Default::default()
        }
    }

    #[test]
    fn rank_jobs_go_before_waiting_content_slices_and_a_full_queue_refuses() {
        let (q, seen) = queue(6);
        rt().block_on(async {
            // Three slices of two content texts queue up; a topic sent after them is served
            // before the slices that were still waiting.
            let mut slices = Vec::new();
            for k in 0..3 {
                let q = q.clone();
                slices.push(tokio::spawn(async move {
                    q.embed(vec![format!("c{k}a"), format!("c{k}b")], false)
                        .await
                }));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // The queue is full (6 texts, or 4 once the worker took the first slice): one more
            // slice of three is refused with a retry delay.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let full = q
                .embed(vec!["x".into(), "y".into(), "z".into()], false)
                .await;
            match full {
                Err(ServeError::Overloaded { retry_after, .. }) => {
                    assert!(retry_after >= Duration::from_secs(1))
                }
                other => panic!("expected Overloaded, got {other:?}"),
            }
            let t = q.rank(vec![topic("topic")], Want::Hits(5)).await.unwrap();
            assert_eq!(t.len(), 1);
            assert_eq!(t[0].vector, vec![1.0, 0.0]);
            for s in slices {
                assert_eq!(s.await.unwrap().unwrap().len(), 4);
            }
            // After the burst the queue takes work again.
            assert!(q.embed(vec!["after".into()], false).await.is_ok());
        });
        let seen = seen.lock().unwrap().clone();
        let topic_at = seen.iter().position(|t| t == "topic").unwrap();
        let last_slice = seen.iter().position(|t| t == "c2a").unwrap();
        assert!(topic_at < last_slice, "{seen:?}");
    }

    #[test]
    fn a_stream_of_rank_jobs_does_not_starve_a_content_slice() {
        // One text per batch, so 30 waiting rank jobs are 30 batches.
        let (q, seen) = queue_with(1000, 1);
        rt().block_on(async {
            let ranks: Vec<_> = (0..30)
                .map(|i| {
                    let q = q.clone();
                    tokio::spawn(async move {
                        q.rank(vec![topic(&format!("r{i}"))], Want::Hits(1)).await
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(q.waiting() >= 25, "the rank jobs are queued");
            q.embed(vec!["content".into()], false).await.unwrap();
            for r in ranks {
                r.await.unwrap().unwrap();
            }
        });
        let seen = seen.lock().unwrap();
        let at = seen.iter().position(|t| t == "content").unwrap();
        // It waited for the batch under way and its share of rank batches (two), not for all 30.
        assert!(at <= 3, "{seen:?}");
    }

    #[test]
    fn a_panic_fails_its_batch_only_and_abandoned_jobs_are_skipped() {
        let (q, seen) = queue(100);
        rt().block_on(async {
            let e = q
                .rank(vec![topic("panic")], Want::Hits(3))
                .await
                .unwrap_err();
            assert!(matches!(e, ServeError::Internal(_)), "{e:?}");
            assert!(q.failure().is_none(), "the worker lives on");
            assert_eq!(
                q.rank(vec![topic("fine")], Want::Hits(3))
                    .await
                    .unwrap()
                    .len(),
                1
            );
            // A requester that gives up: its job is not computed.
            let slow = q.embed(vec!["a".into(); 5], false);
            let _ = tokio::time::timeout(Duration::from_millis(1), slow).await;
            let abandoned = q.embed(vec!["abandoned".into()], false);
            let _ = tokio::time::timeout(Duration::from_millis(1), abandoned).await;
            assert!(q.embed(vec!["b".into()], false).await.is_ok());
        });
        let seen = seen.lock().unwrap();
        assert!(seen.contains(&"b".to_string()));
        assert!(!seen.contains(&"abandoned".to_string()), "{seen:?}");
    }
}
