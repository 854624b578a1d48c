//! A generator of corpora with the shape of the LECR data (method §1), so that every step can be
//! run and measured here, where the real Kaggle files are not available.
//!
//! Meaning is modelled explicitly: subjects hold concepts; every concept has *core* words (used
//! by topic titles) and *synonym* words (used by contents, as paraphrases), rendered in each
//! language's own invented vocabulary and script. Topics and their contents share a concept, with
//! noise: contents from sibling concepts, filler words, shared subject words, empty fields. A text
//! model can learn the concept ↔ synonym links; a lexical matcher only sees the core words, so it
//! lands well below F2 = 1. Translated pools (`--switch`) render the same rows in the swapped
//! language. Everything is deterministic for a seed.

use crate::io::{csv_writer, write_atomic};
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Settings of one generated corpus.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub topics: usize,
    pub contents: usize,
    pub languages: Vec<String>,
    pub seed: u64,
    /// Also write the translated pools `topics_{1,2,3}.csv` / `content_{1,2,3}.csv`.
    pub switch: bool,
    /// Topics listed in `sample_submission.csv`; default: a sixth of the topics with content.
    pub predict: Option<usize>,
    /// Ids as Studio's: topics as dashed UUIDs, contents as 32 hex digits.
    pub studio_ids: bool,
}

/// The languages of the small default corpus (Latin, Arabic, Devanagari and Bengali scripts).
pub const DEFAULT_LANGUAGES: &[&str] = &["en", "es", "pt", "fr", "ar", "hi", "bn", "sw"];

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            topics: 1500,
            contents: 3000,
            languages: DEFAULT_LANGUAGES.iter().map(|s| s.to_string()).collect(),
            seed: 42,
            switch: false,
            predict: None,
            studio_ids: false,
        }
    }
}

impl SynthConfig {
    /// The scale of the real competition data.
    pub fn lecr_scale() -> Self {
        SynthConfig {
            topics: 77_000,
            contents: 154_000,
            ..Default::default()
        }
    }
}

/// What `generate` wrote.
#[derive(Debug, Clone, Default)]
pub struct SynthSummary {
    pub topics: usize,
    pub contents: usize,
    pub channels: usize,
    pub topics_with_content: usize,
    pub pairs: usize,
    pub files: Vec<std::path::PathBuf>,
}

/// Share of each language among channels (rough shape of the real data); others get 0.02.
fn language_weight(lang: &str) -> f64 {
    match lang {
        "en" => 0.40,
        "es" => 0.15,
        "pt" => 0.08,
        "fr" => 0.07,
        "ar" | "hi" | "bn" => 0.06,
        "sw" => 0.05,
        "zh" => 0.04,
        "gu" => 0.03,
        _ => 0.02,
    }
}

const SUBJECTS: usize = 12;
const SUBJECT_WORDS: usize = 8;
const FILLER_WORDS: usize = 150;
const CORE_WORDS: usize = 4;
const SYNONYM_WORDS: usize = 4;
const KINDS: &[(&str, f64)] = &[
    ("video", 0.40),
    ("document", 0.22),
    ("exercise", 0.18),
    ("html5", 0.16),
    ("audio", 0.04),
];
const LICENSES: &[&str] = &[
    "CC BY",
    "CC BY-NC-SA",
    "CC BY-SA",
    "CC BY-NC-ND",
    "Public Domain",
    "",
];

/// How words of a language are spelled.
enum Script {
    Latin {
        cons: Vec<&'static str>,
        vowels: Vec<&'static str>,
        suffixes: Vec<&'static str>,
    },
    /// Consonant letters with optional vowel signs (Devanagari, Bengali, ...).
    Abugida {
        cons: Vec<char>,
        signs: Vec<char>,
    },
    Alphabet(Vec<char>),
    Han,
}

fn script_for(lang: &str) -> Script {
    let latin = |c: &'static str, v: &'static str, s: &'static [&'static str]| Script::Latin {
        cons: c.split(' ').collect(),
        vowels: v.split(' ').collect(),
        suffixes: s.to_vec(),
    };
    let abugida = |c: &str, s: &str| Script::Abugida {
        cons: c.chars().collect(),
        signs: s.chars().collect(),
    };
    match lang {
        "en" => latin(
            "b c d f g h k l m n p r s t v w th sh",
            "a e i o u ea oo",
            &["", "", "s", "ing", "er", "tion", "ly"],
        ),
        "es" => latin(
            "b c d f g l m n p r s t v z ll ñ",
            "a e i o u ue ie",
            &["", "o", "a", "os", "ción", "dad", "mente"],
        ),
        "pt" => latin(
            "b c d f g l m n p r s t v x lh nh ç",
            "a e i o u ã õ",
            &["", "o", "a", "ão", "ções", "mente", "dade"],
        ),
        "fr" => latin(
            "b c d f g l m n p r s t v qu ch",
            "a e i o u é è ou ai",
            &["", "e", "eau", "ique", "ment", "tion", "eux"],
        ),
        "sw" => latin(
            "b ch d f g h j k l m n ng ny p s t w y z",
            "a e i o u",
            &["", "a", "i", "ni", "wa"],
        ),
        "ar" => Script::Alphabet("ابتثجحخدذرزسشصضطظعغفقكلمنهوي".chars().collect()),
        "hi" | "mr" => abugida("कखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह", "ािीुूेैोौ"),
        "bn" | "as" => abugida("কখগঘচছজঝটঠডঢণতথদধনপফবভমযরলশষসহ", "ািীুূেৈোৌ"),
        "gu" => abugida("કખગઘચછજઝટઠડઢણતથદધનપફબભમયરલવશષસહ", "ાિીુૂેૈોૌ"),
        "ta" => abugida("கஙசஞடணதநபமயரலவழளறன", "ாிீுூெேை"),
        "ru" | "bg" => Script::Alphabet("бвгджзклмнпрстфхцчшщаеиоуыяю".chars().collect()),
        "zh" => Script::Han,
        _ => latin(
            "b d g k l m n p r s t y z",
            "a e i o u",
            &["", "an", "ek", "ul", "is"],
        ),
    }
}

/// One language's words for every meaning item.
struct Vocab {
    words: Vec<String>,
    /// Languages written without spaces between words.
    joiner: &'static str,
}

impl Vocab {
    fn new(lang: &str, items: usize, seed: u64) -> Vocab {
        let lang_seed = lang.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ lang_seed);
        let script = script_for(lang);
        let mut seen = HashSet::with_capacity(items);
        let mut words = Vec::with_capacity(items);
        while words.len() < items {
            let extra = (seen.len() / 20_000) as u32; // longer words once short ones run out
            let w = spell(&script, &mut rng, extra);
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        Vocab {
            words,
            joiner: if matches!(script, Script::Han) {
                ""
            } else {
                " "
            },
        }
    }
}

fn spell(script: &Script, rng: &mut ChaCha8Rng, extra: u32) -> String {
    let syll = rng.gen_range(2..=3) + extra as usize;
    let mut w = String::new();
    match script {
        Script::Latin {
            cons,
            vowels,
            suffixes,
        } => {
            for _ in 0..syll {
                w.push_str(cons.choose(rng).expect("non-empty"));
                w.push_str(vowels.choose(rng).expect("non-empty"));
            }
            w.push_str(suffixes.choose(rng).expect("non-empty"));
        }
        Script::Abugida { cons, signs } => {
            for _ in 0..syll {
                w.push(*cons.choose(rng).expect("non-empty"));
                if rng.gen_bool(0.7) {
                    w.push(*signs.choose(rng).expect("non-empty"));
                }
            }
        }
        Script::Alphabet(letters) => {
            for _ in 0..syll + 1 {
                w.push(*letters.choose(rng).expect("non-empty"));
            }
        }
        Script::Han => {
            for _ in 0..(syll - 1) {
                w.push(char::from_u32(rng.gen_range(0x4E00..0x9FA5)).expect("CJK range"));
            }
        }
    }
    w
}

/// Meaning items: filler words, then subject words, then per concept core and synonym words.
struct Meanings {
    concepts: usize,
}

impl Meanings {
    fn items(&self) -> usize {
        FILLER_WORDS + SUBJECTS * SUBJECT_WORDS + self.concepts * (CORE_WORDS + SYNONYM_WORDS)
    }
    fn filler(&self, rng: &mut ChaCha8Rng) -> usize {
        // Zipf-like: a few function words are very common.
        let u: f64 = rng.gen();
        ((u * u) * FILLER_WORDS as f64) as usize
    }
    fn subject(&self, s: usize, rng: &mut ChaCha8Rng) -> usize {
        FILLER_WORDS + s * SUBJECT_WORDS + rng.gen_range(0..SUBJECT_WORDS)
    }
    fn core(&self, c: usize, rng: &mut ChaCha8Rng) -> usize {
        let base = FILLER_WORDS + SUBJECTS * SUBJECT_WORDS + c * (CORE_WORDS + SYNONYM_WORDS);
        base + rng.gen_range(0..CORE_WORDS)
    }
    fn synonym(&self, c: usize, rng: &mut ChaCha8Rng) -> usize {
        let base = FILLER_WORDS + SUBJECTS * SUBJECT_WORDS + c * (CORE_WORDS + SYNONYM_WORDS);
        base + CORE_WORDS + rng.gen_range(0..SYNONYM_WORDS)
    }
    fn subject_of(&self, c: usize) -> usize {
        c % SUBJECTS
    }
    fn random_concept(&self, s: usize, rng: &mut ChaCha8Rng) -> usize {
        s + SUBJECTS * rng.gen_range(0..self.concepts / SUBJECTS)
    }
}

/// Word mix of a generated field: weights of core, synonym, subject and filler words.
#[derive(Clone, Copy)]
struct Mix(f64, f64, f64);

/// The meaning of one generated row: enough to render it in any language.
#[derive(Clone, Copy)]
enum TopicKind {
    Root,
    Subject(usize),
    Concept(usize),
}

#[derive(Clone)]
struct TopicSpec {
    id: String,
    channel: usize,
    parent: Option<usize>,
    level: u32,
    kind: TopicKind,
    seed: u64,
    has_content: bool,
}

#[derive(Clone)]
struct ContentSpec {
    id: String,
    concept: usize,
    language: usize,
    seed: u64,
}

struct Channel {
    id: String,
    language: usize,
    category: &'static str,
}

struct Renderer<'a> {
    m: &'a Meanings,
    vocab: &'a Vocab,
}

impl Renderer<'_> {
    fn words(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|&i| self.vocab.words[i].as_str())
            .collect::<Vec<_>>()
            .join(self.vocab.joiner)
    }

    /// `n` words about concept `c` (or subject `s` only when `c` is None) drawn from `mix`.
    fn field(
        &self,
        rng: &mut ChaCha8Rng,
        n: usize,
        c: Option<usize>,
        s: usize,
        mix: Mix,
    ) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let u: f64 = rng.gen();
                match c {
                    Some(c) if u < mix.0 => self.m.core(c, rng),
                    Some(c) if u < mix.0 + mix.1 => self.m.synonym(c, rng),
                    _ if u < mix.0 + mix.1 + mix.2 => self.m.subject(s, rng),
                    _ => self.m.filler(rng),
                }
            })
            .collect()
    }

    /// A sentence with punctuation that needs CSV quoting now and then.
    fn sentence(&self, rng: &mut ChaCha8Rng, ids: &[usize]) -> String {
        let mut s = String::new();
        for (k, &i) in ids.iter().enumerate() {
            if k > 0 {
                let u: f64 = rng.gen();
                s.push_str(if u < 0.06 {
                    ", "
                } else if u < 0.08 {
                    ".\n"
                } else {
                    self.vocab.joiner
                });
            }
            let w = &self.vocab.words[i];
            if rng.gen_bool(0.02) {
                s.push('"');
                s.push_str(w);
                s.push('"');
            } else {
                s.push_str(w);
            }
        }
        s
    }

    fn topic(&self, spec: &TopicSpec, channel_title: &str) -> (String, String) {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let (c, s) = match spec.kind {
            TopicKind::Root => return (channel_title.to_string(), self.root_desc(&mut rng)),
            TopicKind::Subject(s) => (None, s),
            TopicKind::Concept(c) => (Some(c), self.m.subject_of(c)),
        };
        let title = match c {
            None => {
                let n = rng.gen_range(1..=2);
                let ids = self.field(&mut rng, n, None, s, Mix(0.0, 0.0, 1.0));
                let mut t = capitalize(&self.words(&ids));
                if rng.gen_bool(0.5) {
                    t.push_str(&format!(" {}", rng.gen_range(1..=12)));
                }
                t
            }
            Some(_) => {
                let n = rng.gen_range(1..=3);
                let ids = self.field(&mut rng, n, c, s, Mix(0.85, 0.0, 0.1));
                let mut t = capitalize(&self.words(&ids));
                if rng.gen_bool(0.15) {
                    t = format!("{}. {t}", rng.gen_range(1..=20));
                }
                t
            }
        };
        let desc = if rng.gen_bool(0.55) {
            String::new()
        } else {
            let n = rng.gen_range(4..=16);
            let ids = self.field(&mut rng, n, c, s, Mix(0.25, 0.1, 0.2));
            capitalize(&self.sentence(&mut rng, &ids)) + "."
        };
        (title, desc)
    }

    fn root_desc(&self, rng: &mut ChaCha8Rng) -> String {
        if rng.gen_bool(0.5) {
            return String::new();
        }
        let n = rng.gen_range(5..=12);
        let ids: Vec<usize> = (0..n).map(|_| self.m.filler(rng)).collect();
        capitalize(&self.sentence(rng, &ids))
    }

    /// Title, description, text of a content item.
    fn content(&self, spec: &ContentSpec) -> (String, String, String) {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let c = Some(spec.concept);
        let s = self.m.subject_of(spec.concept);
        let n = rng.gen_range(2..=4);
        let ids = self.field(&mut rng, n, c, s, Mix(0.35, 0.45, 0.1));
        let title = capitalize(&self.words(&ids));
        let desc = if rng.gen_bool(0.45) {
            String::new()
        } else {
            let n = rng.gen_range(5..=20);
            let ids = self.field(&mut rng, n, c, s, Mix(0.12, 0.28, 0.15));
            capitalize(&self.sentence(&mut rng, &ids)) + "."
        };
        let text = if rng.gen_bool(0.5) {
            String::new()
        } else {
            let n = rng.gen_range(20..=90);
            let ids = self.field(&mut rng, n, c, s, Mix(0.08, 0.2, 0.12));
            let mut t = capitalize(&self.sentence(&mut rng, &ids));
            if rng.gen_bool(0.3) {
                let at = t.find(' ').unwrap_or(t.len());
                t.insert_str(
                    at,
                    &format!(
                        " https://example.org/r/{}?id={} ",
                        spec.id,
                        rng.gen::<u16>()
                    ),
                );
            }
            t + "."
        };
        (title, desc, text)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// A unique, random-looking hex id for index `i` (a bijection on 48 bits, salted by `seed`).
fn hex_id(prefix: &str, i: u64, seed: u64, width: usize) -> String {
    let bits = (width * 4) as u32;
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    // Multiply by an odd constant and add a salt: a bijection modulo 2^bits.
    let v =
        (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed.wrapping_mul(0x2545_F491_4F6C_DD1D))) & mask;
    let v = v.wrapping_mul(0xD6E8_FEB8_6659_FD93) & mask;
    format!("{prefix}{v:0width$x}")
}

/// A unique UUID-shaped id for index `i`: dashed for topics (as Studio sends a folder's
/// `ContentNode.id`), 32 hex digits for contents (a `node_id`). The first 12 digits are
/// [`hex_id`]'s bijection, so ids never collide; topics and contents differ in the rest.
fn studio_id(i: u64, seed: u64, topic: bool) -> String {
    let head = hex_id("", i, seed, 12);
    let tail = hex_id(
        "",
        i ^ if topic { 0x5a5a } else { 0xa5a5 },
        seed ^ 0x51ed,
        16,
    );
    // Version 4 and the RFC 4122 variant, as Studio's uuid4 ids (its schemas check both).
    let variant = ['8', '9', 'a', 'b'][(i % 4) as usize];
    let hex = format!(
        "{head}4{}{variant}{}{}",
        &tail[..3],
        &tail[3..15],
        hex_id("", i, seed ^ 0x77, 3)
    );
    if topic {
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    } else {
        hex
    }
}

/// Draws an index with probability proportional to `w`.
fn weighted(rng: &mut ChaCha8Rng, w: &[f64]) -> usize {
    let total: f64 = w.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, &x) in w.iter().enumerate() {
        if u < x {
            return i;
        }
        u -= x;
    }
    w.len() - 1
}

/// The language pools of method §6: pool k swaps these pairs.
pub fn pool_swaps(k: usize) -> &'static [(&'static str, &'static str)] {
    match k {
        1 => &[("en", "fr"), ("es", "pt")],
        2 => &[("en", "es"), ("fr", "pt")],
        3 => &[("en", "pt"), ("fr", "es")],
        _ => &[],
    }
}

/// The language a row in `lang` is translated into in pool `k` (itself when not swapped).
pub fn pool_language(k: usize, lang: &str) -> &str {
    for &(a, b) in pool_swaps(k) {
        if lang == a {
            return b;
        }
        if lang == b {
            return a;
        }
    }
    lang
}

/// Generates a corpus and writes it to `out`.
pub fn generate(cfg: &SynthConfig, out: &Path) -> Result<SynthSummary> {
    anyhow::ensure!(cfg.topics >= 2, "--topics must be at least 2");
    anyhow::ensure!(
        !cfg.languages.is_empty(),
        "--languages must name a language"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let langs = &cfg.languages;
    let m = Meanings {
        concepts: (cfg.topics / 6).max(SUBJECTS * 2),
    };
    let lang_w: Vec<f64> = langs.iter().map(|l| language_weight(l)).collect();

    // 1. Channels and their trees, breadth first, until the topic budget is spent.
    let mut channels: Vec<Channel> = Vec::new();
    let mut topics: Vec<TopicSpec> = Vec::new();
    while topics.len() < cfg.topics {
        let ch = channels.len();
        // Every language gets a channel first, then they come by weight.
        let language = if ch < langs.len() {
            ch
        } else {
            weighted(&mut rng, &lang_w)
        };
        let category =
            ["source", "aligned", "supplemental"][weighted(&mut rng, &[0.35, 0.35, 0.3])];
        channels.push(Channel {
            id: if cfg.studio_ids {
                studio_id(ch as u64, cfg.seed ^ 0xc4a1, true)
            } else {
                hex_id("", ch as u64, cfg.seed, 6)
            },
            language,
            category,
        });
        // Log-uniform sizes (the real channels are skewed), smaller for small corpora.
        let largest = (cfg.topics / 10).clamp(30, 2500) as f64;
        let size = (rng.gen_range((15f64).ln()..largest.ln())).exp() as usize;
        let size = size.min(cfg.topics - topics.len()).max(1);
        let max_depth = rng.gen_range(3..=6u32);
        let first = topics.len();
        topics.push(TopicSpec {
            id: String::new(),
            channel: ch,
            parent: None,
            level: 0,
            kind: TopicKind::Root,
            seed: rng.gen(),
            has_content: false,
        });
        let mut q = std::collections::VecDeque::from([first]);
        'grow: while let Some(p) = q.pop_front() {
            if topics[p].level >= max_depth {
                continue;
            }
            let branching = rng.gen_range(2..=8);
            for _ in 0..branching {
                if topics.len() - first >= size {
                    break 'grow;
                }
                let level = topics[p].level + 1;
                let kind = match topics[p].kind {
                    TopicKind::Root => TopicKind::Subject(rng.gen_range(0..SUBJECTS)),
                    TopicKind::Subject(s) => TopicKind::Concept(m.random_concept(s, &mut rng)),
                    // Deeper topics: the same concept or a neighbour of the same subject.
                    TopicKind::Concept(c) if rng.gen_bool(0.5) => TopicKind::Concept(c),
                    TopicKind::Concept(c) => {
                        TopicKind::Concept(m.random_concept(m.subject_of(c), &mut rng))
                    }
                };
                let idx = topics.len();
                topics.push(TopicSpec {
                    id: String::new(),
                    channel: ch,
                    parent: Some(p),
                    level,
                    kind,
                    seed: rng.gen(),
                    has_content: false,
                });
                q.push_back(idx);
            }
        }
    }
    for (i, t) in topics.iter_mut().enumerate() {
        t.id = if cfg.studio_ids {
            studio_id(i as u64, cfg.seed, true)
        } else {
            hex_id("t_", i as u64, cfg.seed, 12)
        };
    }
    let mut is_leaf = vec![true; topics.len()];
    for t in &topics {
        if let Some(p) = t.parent {
            is_leaf[p] = false;
        }
    }
    for (i, t) in topics.iter_mut().enumerate() {
        let p = match t.kind {
            TopicKind::Root => 0.0,
            TopicKind::Subject(_) => 0.1,
            TopicKind::Concept(_) if is_leaf[i] => 0.92,
            TopicKind::Concept(_) => 0.35,
        };
        t.has_content = rng.gen_bool(p);
    }

    // 2. Contents, created on demand per (concept, language) and shared between topics.
    let with_content: Vec<usize> = (0..topics.len())
        .filter(|&i| topics[i].has_content)
        .collect();
    let counts: Vec<usize> = with_content
        .iter()
        .map(|_| 1 + (-(rng.gen::<f64>().max(1e-12)).ln() * 4.5) as usize)
        .map(|k| k.min(40))
        .collect();
    let planned: usize = counts.iter().sum();
    let p_new = (0.85 * cfg.contents as f64 / planned.max(1) as f64).min(1.0);
    let mut contents: Vec<ContentSpec> = Vec::new();
    let mut cell: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    let mut correlations: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut order: Vec<usize> = (0..with_content.len()).collect();
    order.shuffle(&mut rng);
    let new_content =
        |contents: &mut Vec<ContentSpec>, rng: &mut ChaCha8Rng, c: usize, l: usize| {
            let i = contents.len();
            contents.push(ContentSpec {
                id: String::new(),
                concept: c,
                language: l,
                seed: rng.gen(),
            });
            i
        };
    for &o in &order {
        let t = with_content[o];
        let TopicKind::Concept(concept) = (match topics[t].kind {
            TopicKind::Subject(s) => TopicKind::Concept(m.random_concept(s, &mut rng)),
            k => k,
        }) else {
            continue;
        };
        let lang = channels[topics[t].channel].language;
        let mut chosen: Vec<usize> = Vec::new();
        for _ in 0..counts[o] {
            // Label noise: now and then a content of a sibling concept.
            let c = if rng.gen_bool(0.12) {
                m.random_concept(m.subject_of(concept), &mut rng)
            } else {
                concept
            };
            let pool = cell.entry((c, lang)).or_default();
            let budget_left = contents.len() < cfg.contents;
            let pick = if pool.is_empty() || (budget_left && rng.gen_bool(p_new)) {
                if !budget_left && !chosen.is_empty() {
                    continue;
                }
                let i = new_content(&mut contents, &mut rng, c, lang);
                pool.push(i);
                i
            } else {
                *pool.choose(&mut rng).expect("non-empty")
            };
            if !chosen.contains(&pick) {
                chosen.push(pick);
            }
        }
        correlations.push((t, chosen));
    }
    // Contents in no topic, up to the requested count.
    while contents.len() < cfg.contents {
        let c = rng.gen_range(0..m.concepts);
        let l = weighted(&mut rng, &lang_w);
        new_content(&mut contents, &mut rng, c, l);
    }
    for (i, c) in contents.iter_mut().enumerate() {
        c.id = if cfg.studio_ids {
            studio_id(i as u64, cfg.seed, false)
        } else {
            hex_id("c_", i as u64, cfg.seed, 12)
        };
    }

    // 3. Render and write.
    let mut vocabs: HashMap<String, Vocab> = HashMap::new();
    let mut needed: Vec<String> = langs.clone();
    if cfg.switch {
        for k in 1..=3 {
            for l in langs {
                let t = pool_language(k, l).to_string();
                if !needed.contains(&t) {
                    needed.push(t);
                }
            }
        }
    }
    for l in &needed {
        vocabs.insert(l.clone(), Vocab::new(l, m.items(), cfg.seed));
    }
    let channel_titles: Vec<String> = channels
        .iter()
        .map(|ch| {
            let v = &vocabs[&langs[ch.language]];
            let mut r =
                ChaCha8Rng::seed_from_u64(cfg.seed ^ u64::from_str_radix(&ch.id, 16).unwrap_or(0));
            let a = &v.words[m.filler(&mut r)];
            let b = &v.words[FILLER_WORDS + rng.gen_range(0..SUBJECTS * SUBJECT_WORDS)];
            capitalize(&format!("{a}{}{b}", v.joiner))
        })
        .collect();

    let mut summary = SynthSummary {
        topics: topics.len(),
        contents: contents.len(),
        channels: channels.len(),
        topics_with_content: correlations.len(),
        pairs: correlations.iter().map(|(_, c)| c.len()).sum(),
        files: Vec::new(),
    };
    // Kaggle's files are sorted by id, which puts children before parents now and then.
    let mut topic_order: Vec<usize> = (0..topics.len()).collect();
    topic_order.sort_by(|&a, &b| topics[a].id.cmp(&topics[b].id));
    let mut content_order: Vec<usize> = (0..contents.len()).collect();
    content_order.sort_by(|&a, &b| contents[a].id.cmp(&contents[b].id));
    correlations.sort_by(|a, b| topics[a.0].id.cmp(&topics[b.0].id));
    let has_row: HashSet<usize> = correlations.iter().map(|(t, _)| *t).collect();

    let pools: Vec<usize> = if cfg.switch {
        vec![0, 1, 2, 3]
    } else {
        vec![0]
    };
    for &k in &pools {
        let suffix = if k == 0 {
            String::new()
        } else {
            format!("_{k}")
        };
        let path = out.join(format!("topics{suffix}.csv"));
        write_atomic(&path, |w| {
            let mut w = csv_writer(w);
            let mut header = vec![
                "id",
                "title",
                "description",
                "channel",
                "category",
                "level",
                "language",
                "parent",
                "has_content",
            ];
            if k > 0 {
                header.push("language_t");
            }
            w.write_record(&header)?;
            for &i in &topic_order {
                let t = &topics[i];
                let ch = &channels[t.channel];
                let lang = &langs[ch.language];
                let lang_t = pool_language(k, lang);
                let r = Renderer {
                    m: &m,
                    vocab: &vocabs[lang_t],
                };
                let ch_title = if lang_t == lang {
                    channel_titles[t.channel].clone()
                } else {
                    r.topic(
                        &TopicSpec {
                            kind: TopicKind::Subject(t.channel % SUBJECTS),
                            ..t.clone()
                        },
                        "",
                    )
                    .0
                };
                let (title, desc) = r.topic(t, &ch_title);
                let parent = t.parent.map(|p| topics[p].id.as_str()).unwrap_or("");
                let has = if has_row.contains(&i) {
                    "True"
                } else {
                    "False"
                };
                let level = t.level.to_string();
                let mut rec = vec![
                    t.id.as_str(),
                    &title,
                    &desc,
                    &ch.id,
                    ch.category,
                    &level,
                    lang,
                    parent,
                    has,
                ];
                if k > 0 {
                    rec.push(lang_t);
                }
                w.write_record(&rec)?;
            }
            w.flush()?;
            Ok(())
        })?;
        summary.files.push(path);

        let path = out.join(format!("content{suffix}.csv"));
        write_atomic(&path, |w| {
            let mut w = csv_writer(w);
            let mut header = vec![
                "id",
                "title",
                "description",
                "kind",
                "text",
                "language",
                "copyright_holder",
                "license",
            ];
            if k > 0 {
                header.push("language_t");
            }
            w.write_record(&header)?;
            for &i in &content_order {
                let c = &contents[i];
                let lang = &langs[c.language];
                let lang_t = pool_language(k, lang);
                let r = Renderer {
                    m: &m,
                    vocab: &vocabs[lang_t],
                };
                let (title, desc, text) = r.content(c);
                let mut rr = ChaCha8Rng::seed_from_u64(c.seed ^ 0x5eed);
                let kind =
                    KINDS[weighted(&mut rr, &KINDS.iter().map(|k| k.1).collect::<Vec<_>>())].0;
                let holder = if rr.gen_bool(0.4) {
                    String::new()
                } else {
                    format!(
                        "Org, {}",
                        capitalize(&vocabs[lang].words[m.filler(&mut rr)])
                    )
                };
                let license = LICENSES.choose(&mut rr).expect("non-empty");
                let mut rec = vec![
                    c.id.as_str(),
                    &title,
                    &desc,
                    kind,
                    &text,
                    lang,
                    &holder,
                    license,
                ];
                if k > 0 {
                    rec.push(lang_t);
                }
                w.write_record(&rec)?;
            }
            w.flush()?;
            Ok(())
        })?;
        summary.files.push(path);
    }

    let path = out.join("correlations.csv");
    write_atomic(&path, |w| {
        let mut w = csv_writer(w);
        w.write_record(["topic_id", "content_ids"])?;
        for (t, cs) in &correlations {
            let ids: Vec<&str> = cs.iter().map(|&c| contents[c].id.as_str()).collect();
            w.write_record([topics[*t].id.as_str(), &ids.join(" ")])?;
        }
        w.flush()?;
        Ok(())
    })?;
    summary.files.push(path);

    let n_predict = cfg
        .predict
        .unwrap_or(correlations.len() / 6)
        .clamp(1.min(correlations.len()), correlations.len());
    let mut predict: Vec<usize> = correlations.iter().map(|(t, _)| *t).collect();
    predict.shuffle(&mut rng);
    predict.truncate(n_predict);
    predict.sort_by(|&a, &b| topics[a].id.cmp(&topics[b].id));
    let path = out.join("sample_submission.csv");
    write_atomic(&path, |w| {
        let mut w = csv_writer(w);
        w.write_record(["topic_id", "content_ids"])?;
        for t in &predict {
            w.write_record([topics[*t].id.as_str(), ""])?;
        }
        w.flush()?;
        Ok(())
    })?;
    summary.files.push(path);
    Ok(summary)
}
