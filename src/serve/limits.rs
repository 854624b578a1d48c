//! How much one request may ask of the service, and how much work may wait: every default in
//! one place (`lecr serve --help` shows them; README's "Limits" table explains them).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Topics per recommend / embed-topics request.
    pub max_topics: usize,
    /// Ancestors per topic.
    pub max_ancestors: usize,
    /// Resources per embed-content request, ids per remove-content request.
    pub max_resources: usize,
    /// Characters of a title, description or text field. An embed-content resource over it is
    /// skipped with the reason (Studio's batch goes on); a topic over it is refused (422).
    pub max_text_chars: usize,
    /// Characters of an id, a language code or a channel id.
    pub max_id_chars: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Texts waiting for the model (topic texts and content slices) before new work gets 503.
    pub max_queue: usize,
    /// Requests handled at once before new ones get 503.
    pub max_inflight: usize,
    /// Content texts embedded per model job: a long embed-content lets recommends in between.
    pub embed_slice: usize,
    /// A request answered later gets 408 (a write that has not begun to commit is cancelled).
    pub timeout: Duration,
    /// A connection that has not sent its request headers by then is closed.
    pub header_timeout: Duration,
    /// After SIGTERM, in-flight requests get this long to finish.
    pub shutdown_timeout: Duration,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_topics: 100,
        max_ancestors: 64,
        max_resources: 1000,
        max_text_chars: 16_384,
        max_id_chars: 128,
        max_body_bytes: 16 << 20,
        max_queue: 1024,
        max_inflight: 256,
        embed_slice: 8,
        timeout: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(10),
    };

    /// Characters of a text given to the tokenizer: the encoder keeps at most `max_len`
    /// tokens, and no tokenizer makes a token of more than a few characters, so cutting at 32
    /// characters per token changes no vector while bounding the tokenizer's work.
    pub fn encoder_chars(max_len: usize) -> usize {
        max_len.max(1) * 32
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}
