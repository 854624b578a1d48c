//! The queue's order, admission and failure handling, with a slow fake model.

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
    let model = Arc::new(ModelSide::new(
        Box::new(Slow { seen: seen.clone() }),
        Index::new(2),
    ));
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
                tokio::spawn(
                    async move { q.rank(vec![topic(&format!("r{i}"))], Want::Hits(1)).await },
                )
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

/// A cross-encoder whose logit of a pair is its content text parsed as a number; it records
/// each call's pairs and sleeps per pair.
struct Numbers {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
}

impl PairScorer for Numbers {
    fn id(&self) -> &str {
        "numbers"
    }
    fn logits(&self, pairs: &[(String, String)]) -> anyhow::Result<Vec<f32>> {
        self.calls
            .lock()
            .unwrap()
            .push(pairs.iter().map(|p| p.1.clone()).collect());
        std::thread::sleep(Duration::from_millis(2 * pairs.len() as u64));
        pairs
            .iter()
            .map(|p| Ok(p.1.parse::<f32>()?))
            .collect::<anyhow::Result<_>>()
    }
}

#[test]
fn cross_jobs_share_each_batch_fairly_and_get_their_own_logits_in_order() {
    let calls: Arc<Mutex<Vec<Vec<String>>>> = Default::default();
    let model = Arc::new(ModelSide::new(
        Box::new(Slow {
            seen: Default::default(),
        }),
        Index::new(2),
    ));
    assert!(model
        .cross
        .set(Box::new(Numbers {
            calls: calls.clone()
        }))
        .is_ok());
    let q = Queue::start(
        model,
        10,
        8,
        Arc::new(super::super::metrics::Metrics::new()),
    );
    let pairs = |from: usize, n: usize| -> Vec<(String, String)> {
        (from..from + n)
            .map(|i| ("topic".to_string(), i.to_string()))
            .collect()
    };
    rt().block_on(async {
        // A big job (40 pairs, past the queue's 10: admitted all the same) and, just after,
        // a small one of 3: the small one is read in the big one's second batch, not after
        // all 40.
        let big = {
            let q = q.clone();
            let p = pairs(0, 40);
            tokio::spawn(async move { q.cross(p).await })
        };
        tokio::time::sleep(Duration::from_millis(3)).await;
        let small = q.cross(pairs(1000, 3)).await.unwrap();
        assert_eq!(small, vec![1000.0, 1001.0, 1002.0]);
        let big = big.await.unwrap().unwrap();
        assert_eq!(big, (0..40).map(|i| i as f32).collect::<Vec<_>>());
        // A failing pair fails its own job only; the queue reads the next one.
        let bad = q
            .cross(vec![("t".into(), "not a number".into())])
            .await
            .unwrap_err();
        assert!(matches!(bad, ServeError::Internal(_)), "{bad:?}");
        assert_eq!(q.cross(pairs(7, 1)).await.unwrap(), vec![7.0]);
        assert_eq!(q.waiting(), 0, "every pair taken is accounted for");
    });
    let calls = calls.lock().unwrap();
    assert!(calls.iter().all(|c| c.len() <= 8), "{calls:?}");
    let small_at = calls
        .iter()
        .position(|c| c.contains(&"1000".to_string()))
        .unwrap();
    assert!(small_at <= 1, "{calls:?}");
    let small_batch = &calls[small_at];
    assert!(
        small_batch.iter().any(|p| p.parse::<usize>().unwrap() < 40),
        "shared with the big job: {small_batch:?}"
    );
}
