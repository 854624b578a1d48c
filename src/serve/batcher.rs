//! Dynamic batching (as text-embeddings-inference does it): requests queue their topic texts;
//! one worker thread takes everything waiting (up to `max_batch` texts), embeds it in one call
//! and ranks it with one matrix product per language, then answers each request. Under load
//! the batches grow by themselves; alone, a request waits for nobody.

use super::engine::Engine;
use super::index::Hit;
use anyhow::Result;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

struct Job {
    texts: Vec<String>,
    langs: Vec<String>,
    r: usize,
    reply: oneshot::Sender<Result<Vec<Vec<Hit>>, String>>,
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the worker thread; it ends when every `Batcher` clone is dropped.
    pub fn start(engine: Arc<Engine>, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("lecr-batcher".into())
            .spawn(move || work(&engine, &rx, max_batch.max(1)))
            .expect("spawning the batcher thread");
        Batcher { tx }
    }

    /// The `r` best contents of each text's language (waits for the worker).
    pub async fn rank(
        &self,
        texts: Vec<String>,
        langs: Vec<String>,
        r: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                texts,
                langs,
                r,
                reply,
            })
            .map_err(|_| anyhow::anyhow!("the batcher has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the batcher dropped the request"))?
            .map_err(anyhow::Error::msg)
    }
}

fn work(engine: &Engine, rx: &mpsc::Receiver<Job>, max_batch: usize) {
    while let Ok(first) = rx.recv() {
        let mut n = first.texts.len();
        let mut jobs = vec![first];
        while n < max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.texts.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        engine.metrics.batch_topics.observe(n as f64);
        let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        let langs: Vec<String> = jobs.iter().flat_map(|j| j.langs.iter().cloned()).collect();
        let r = jobs.iter().map(|j| j.r).max().unwrap_or(0);
        match engine.rank(&texts, &langs, r) {
            Ok(all) => {
                let mut all = all.into_iter();
                for j in jobs {
                    let mine: Vec<Vec<Hit>> = all
                        .by_ref()
                        .take(j.texts.len())
                        .map(|mut hits| {
                            hits.truncate(j.r);
                            hits
                        })
                        .collect();
                    let _ = j.reply.send(Ok(mine)); // the client may have gone
                }
            }
            Err(e) => {
                tracing::error!("ranking a batch of {n} topics failed: {e:#}");
                for j in jobs {
                    let _ = j.reply.send(Err(format!("{e:#}")));
                }
            }
        }
    }
}
