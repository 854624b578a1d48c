//! Prometheus metrics of the service (`GET /metrics`, text format).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub batch_topics: Histogram,
    /// (topic, content) pairs the reranker's cross-encoder read.
    pub cross_pairs: IntCounter,
    /// Pairs whose logit came from the cross-encoder's cache (`--cross-cache`).
    pub cross_cache_hits: IntCounter,
    /// Seconds of each cross-encoder batch.
    pub cross_seconds: Histogram,
    pub index_contents: IntGaugeVec,
    pub without_language: IntGauge,
    pub lexical_stale: IntGauge,
    pub lexical_bytes: IntGauge,
    /// Bytes of the lexical indexes used in place from their saved files (page cache).
    pub lexical_mapped_bytes: IntGauge,
    /// Bytes of the metadata's texts file (on disk, read through the page cache).
    pub metadata_file_bytes: IntGauge,
    pub index_bytes: IntGaugeVec,
    /// Bytes of the exact vectors' files (on disk, read through the page cache).
    pub exact_file_bytes: IntGauge,
    /// Changes of the store's log this server followed, by who wrote them: `this_server`
    /// (skipped: applied as written) or `others` (read and applied).
    pub changes_followed: IntCounterVec,
    /// The PostgreSQL index mode with lexical retrieval: answers given at the lexical list's
    /// cap without certainty that their top is the language's ([`super::remote`]).
    pub search_uncertain: IntCounter,
    /// Exact content vectors read back to make the top of rankings exact (the int8 scores'
    /// bounds decide which: `kernels::quantized`).
    pub rescored: IntCounter,
    /// Always 1; its labels name the instruction-set level the kernels run at, the int8 and bf16
    /// kernels, the level `LECR_ISA` asked for and the CPU's features (set once at start).
    pub kernels: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "lecr_requests_total",
                "HTTP requests by endpoint and status",
            ),
            &["endpoint", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("lecr_request_seconds", "Request latency by endpoint").buckets(
                vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
            &["endpoint"],
        )
        .expect("valid metric");
        let batch_topics = Histogram::with_opts(
            HistogramOpts::new(
                "lecr_batch_topics",
                "Topic texts embedded together by the dynamic batcher",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric");
        let cross_pairs = IntCounter::new(
            "lecr_cross_pairs_total",
            "(topic, content) pairs read by the reranker's cross-encoder",
        )
        .expect("valid metric");
        let cross_cache_hits = IntCounter::new(
            "lecr_cross_cache_hits_total",
            "(topic, content) pairs whose cross-encoder logit was kept from an earlier request",
        )
        .expect("valid metric");
        let cross_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "lecr_cross_batch_seconds",
                "Seconds of each cross-encoder batch (the pairs of every waiting request)",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
        )
        .expect("valid metric");
        let index_contents = IntGaugeVec::new(
            Opts::new(
                "lecr_index_contents",
                "Recommendable contents in the index by language",
            ),
            &["language"],
        )
        .expect("valid metric");
        let without_language = IntGauge::new(
            "lecr_contents_without_language",
            "Stored contents that cannot be recommended until they are sent with a language",
        )
        .expect("valid metric");
        let lexical_stale = IntGauge::new(
            "lecr_lexical_stale_languages",
            "Languages whose lexical index misses writes (refitted once writes pause)",
        )
        .expect("valid metric");
        let lexical_bytes = IntGauge::new(
            "lecr_lexical_index_bytes",
            "Memory held by the lexical indexes",
        )
        .expect("valid metric");
        let metadata_file_bytes = IntGauge::new(
            "lecr_index_metadata_file_bytes",
            "Bytes of the file on disk that holds the contents' titles, descriptions and short \
             texts (read back for what a response returns; the index keeps the rest in memory)",
        )
        .expect("valid metric");
        let lexical_mapped_bytes = IntGauge::new(
            "lecr_lexical_mapped_bytes",
            "Bytes of the lexical indexes used in place from their saved files beside the store \
             (read through the page cache, which the system can reclaim; not in the heap)",
        )
        .expect("valid metric");
        let index_bytes = IntGaugeVec::new(
            Opts::new(
                "lecr_index_bytes",
                "Memory held by the content index by part (vectors: int8, lexical, metadata)",
            ),
            &["part"],
        )
        .expect("valid metric");
        let exact_file_bytes = IntGauge::new(
            "lecr_index_exact_vectors_file_bytes",
            "Bytes of the exact (f32) content vectors' files on disk, from which the top of \
             each ranking is rescored (the index holds the vectors as int8 in memory)",
        )
        .expect("valid metric");
        let changes_followed = IntCounterVec::new(
            Opts::new(
                "lecr_changes_followed_total",
                "Changes of the store's log followed, by writer (this_server: skipped, \
                 already applied; others: read and applied)",
            ),
            &["writer"],
        )
        .expect("valid metric");
        let search_uncertain = IntCounter::new(
            "lecr_search_uncertain_total",
            "With --index postgres and --model lexical: rankings answered at the lexical list's \
             deepest without certainty that no content outside the pool belongs in their top",
        )
        .expect("valid metric");
        let rescored = IntCounter::new(
            "lecr_index_rescored_rows_total",
            "Exact (f32) content vectors read back to make the top of rankings exact (those \
             whose int8 score's bound could still reach it)",
        )
        .expect("valid metric");
        let kernels = IntGaugeVec::new(
            Opts::new(
                "lecr_kernels_info",
                "The kernels this server runs (always 1): instruction-set level, int8 kernel, \
                 bf16 kernel, the level LECR_ISA asked for (none: the CPU's best) and the CPU's features",
            ),
            &["isa", "int8_kernel", "bf16_kernel", "requested", "cpu"],
        )
        .expect("valid metric");
        {
            use crate::kernels::{bf16::Bf16Kernel, int8::Int8Kernel, isa};
            let requested = match isa::requested() {
                Ok(Some(i)) => i.name(),
                _ => "none",
            };
            kernels
                .with_label_values(&[
                    isa::active().name(),
                    Int8Kernel::detect().name(),
                    Bf16Kernel::detect().name(),
                    requested,
                    &isa::CpuFeatures::detect().names().join(" "),
                ])
                .set(1);
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(kernels.clone()),
            Box::new(changes_followed.clone()),
            Box::new(search_uncertain.clone()),
            Box::new(rescored.clone()),
            Box::new(latency.clone()),
            Box::new(batch_topics.clone()),
            Box::new(cross_pairs.clone()),
            Box::new(cross_cache_hits.clone()),
            Box::new(cross_seconds.clone()),
            Box::new(index_contents.clone()),
            Box::new(without_language.clone()),
            Box::new(lexical_stale.clone()),
            Box::new(lexical_bytes.clone()),
            Box::new(lexical_mapped_bytes.clone()),
            Box::new(metadata_file_bytes.clone()),
            Box::new(index_bytes.clone()),
            Box::new(exact_file_bytes.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            batch_topics,
            cross_pairs,
            cross_cache_hits,
            cross_seconds,
            index_contents,
            without_language,
            lexical_stale,
            lexical_bytes,
            lexical_mapped_bytes,
            metadata_file_bytes,
            index_bytes,
            exact_file_bytes,
            changes_followed,
            search_uncertain,
            rescored,
            kernels,
        }
    }

    /// The index gauges from its current sizes.
    pub fn set_index(&self, index: &super::index::Index) {
        self.index_contents.reset();
        for (lang, n) in index.sizes() {
            self.index_contents
                .with_label_values(&[&lang])
                .set(n as i64);
        }
        self.without_language.set(index.without_language() as i64);
        self.set_memory(index);
    }

    /// The memory gauges from the index.
    fn set_memory(&self, index: &super::index::Index) {
        let m = index.memory();
        for (part, bytes) in [
            ("vectors", m.vectors),
            ("lexical", m.lexical),
            ("metadata", m.metadata),
        ] {
            self.index_bytes
                .with_label_values(&[part])
                .set(bytes as i64);
        }
        self.exact_file_bytes.set(m.exact_on_disk as i64);
        self.lexical_mapped_bytes.set(m.lexical_mapped as i64);
        self.metadata_file_bytes.set(m.metadata_on_disk as i64);
    }

    /// The lexical gauges from the index.
    pub fn set_lexical(&self, index: &super::index::Index) {
        self.lexical_stale.set(index.stale_languages().len() as i64);
        self.lexical_bytes.set(index.lexical_bytes() as i64);
        self.set_memory(index);
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
