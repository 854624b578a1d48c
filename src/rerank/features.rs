//! Features of each (topic, content) candidate, computed from the candidates' similarities, the
//! two texts, and the tree context of *known* links only: the links of topics outside the set
//! being scored. Topics being scored never see their own links (nor those of the other
//! topics scored with them), so the features a reranker learns from look like those it gets
//! for a new topic. README's "Reranker features" table describes every column.

use super::candidates::TopicCandidates;
use crate::data::schema::{CATEGORIES, KINDS};
use crate::data::tree::Forest;
use crate::data::Dataset;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

/// Links that features may read: those of topics outside the scored set.
pub struct LinkContext {
    pub forest: Forest,
    /// Known linked contents per topic (empty for scored topics).
    links: Vec<HashSet<u32>>,
    /// Known topics linked to each content.
    content_topics: Vec<u32>,
    /// Known topics of the same channel linked to a content: (channel, content) → count.
    channel_links: HashMap<(u32, u32), u32>,
    channel_of: Vec<u32>,
}

impl LinkContext {
    /// The context for scoring `scored` (dataset topic indices): every link of the other
    /// topics is known, none of the scored topics' links is.
    pub fn new(ds: &Dataset, scored: &[usize]) -> LinkContext {
        let forest = Forest::build(&ds.topics, &ds.topic_index);
        let hidden: HashSet<usize> = scored.iter().copied().collect();
        let mut channel_ids: HashMap<&str, u32> = HashMap::new();
        let channel_of: Vec<u32> = ds
            .topics
            .iter()
            .map(|t| {
                let n = channel_ids.len() as u32;
                *channel_ids.entry(t.channel.as_str()).or_insert(n)
            })
            .collect();
        let mut links = vec![HashSet::new(); ds.topics.len()];
        for (t, c) in ds.pairs() {
            if !hidden.contains(&t) {
                links[t].insert(c as u32);
            }
        }
        let mut content_topics = vec![0u32; ds.contents.len()];
        let mut channel_links: HashMap<(u32, u32), u32> = HashMap::new();
        for (t, set) in links.iter().enumerate() {
            for &c in set {
                content_topics[c as usize] += 1;
                *channel_links.entry((channel_of[t], c)).or_insert(0) += 1;
            }
        }
        LinkContext {
            forest,
            links,
            content_topics,
            channel_links,
            channel_of,
        }
    }
}

impl LinkContext {
    /// The known links around (topic, content), both dataset indices.
    pub fn counts(&self, topic: usize, content: u32) -> LinkCounts {
        let parent = self.forest.parent[topic];
        let siblings = parent.map_or(&[][..], |p| self.forest.children[p].as_slice());
        LinkCounts::around(
            self,
            topic,
            parent,
            siblings.iter().copied(),
            Some(self.channel_of[topic]),
            content,
        )
    }
}

/// The known links that tree-context features read, whatever their keys: dataset indices in
/// the batch path ([`LinkContext`]), ids in the service (`serve::rerank::KnownLinks`). Both
/// count with [`LinkCounts::around`], the one rule.
pub trait LinkView<'a> {
    type Topic: Copy + PartialEq + 'a;
    type Content: Copy + 'a;
    type Channel: Copy + 'a;
    /// Whether a known link joins them.
    fn linked(&self, topic: Self::Topic, content: Self::Content) -> bool;
    /// Known topics linked to the content, `except`'s own link left out.
    fn content_topics(&self, content: Self::Content, except: Self::Topic) -> u32;
    /// Known topics of `channel` linked to the content, `except`'s own link left out.
    fn channel_links(
        &self,
        channel: Self::Channel,
        content: Self::Content,
        except: Self::Topic,
    ) -> u32;
}

impl<'a> LinkView<'a> for LinkContext {
    type Topic = usize;
    type Content = u32;
    type Channel = u32;
    fn linked(&self, topic: usize, content: u32) -> bool {
        self.links[topic].contains(&content)
    }
    fn content_topics(&self, content: u32, except: usize) -> u32 {
        self.content_topics[content as usize] - self.linked(except, content) as u32
    }
    fn channel_links(&self, channel: u32, content: u32, except: usize) -> u32 {
        let n = self
            .channel_links
            .get(&(channel, content))
            .copied()
            .unwrap_or(0);
        n - (self.channel_of[except] == channel && self.linked(except, content)) as u32
    }
}

impl LinkCounts {
    /// The known links around `topic` and `content`: the rule the batch path and the service
    /// share. The topic's own links never count (a scored topic's are unknown anyway).
    pub fn around<'a, V: LinkView<'a>>(
        v: &V,
        topic: V::Topic,
        parent: Option<V::Topic>,
        siblings: impl IntoIterator<Item = V::Topic>,
        channel: Option<V::Channel>,
        content: V::Content,
    ) -> LinkCounts {
        LinkCounts {
            content_topics: v.content_topics(content, topic),
            parent_linked: parent.map(|p| v.linked(p, content)),
            sibling_links: siblings
                .into_iter()
                .filter(|&s| s != topic && v.linked(s, content))
                .count() as u32,
            channel_links: channel.map_or(0, |ch| v.channel_links(ch, content, topic)),
        }
    }
}

/// A column-major feature matrix (the layout the booster reads), one row per candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    pub names: Vec<String>,
    pub rows: usize,
    /// `names.len()` columns of `rows` values each.
    pub data: Vec<f64>,
}

impl FeatureMatrix {
    pub fn get(&self, row: usize, name: &str) -> Option<f64> {
        let c = self.names.iter().position(|n| n == name)?;
        Some(self.data[c * self.rows + row])
    }
    /// The rows of `keep`, in that order.
    pub fn select_rows(&self, keep: &[usize]) -> FeatureMatrix {
        let mut data = Vec::with_capacity(keep.len() * self.names.len());
        for c in 0..self.names.len() {
            let col = &self.data[c * self.rows..(c + 1) * self.rows];
            data.extend(keep.iter().map(|&r| col[r]));
        }
        FeatureMatrix {
            names: self.names.clone(),
            rows: keep.len(),
            data,
        }
    }
}

impl FeatureMatrix {
    /// The same rows as a topic of a channel nobody has linked yet sees them (a new Studio
    /// channel): no category, no linked parent, siblings or channel topics, so every known link
    /// of the content is in another channel. Text and similarity features are unchanged.
    pub fn cold(&self) -> FeatureMatrix {
        let mut m = self.clone();
        let col = |name: &str| self.names.iter().position(|n| n == name);
        let rows = self.rows;
        let mut set = |name: &str, f: &dyn Fn(usize, f64) -> f64| {
            if let Some(c) = col(name) {
                for r in 0..rows {
                    m.data[c * rows + r] = f(r, self.data[c * rows + r]);
                }
            }
        };
        set("topic.category", &|_, _| f64::NAN);
        set("ctx.parent_linked", &|_, v| {
            if v.is_nan() {
                v
            } else {
                0.0
            }
        });
        set("ctx.sibling_links", &|_, _| 0.0);
        set("ctx.channel_links", &|_, _| 0.0);
        if let Some(all) = col("ctx.content_topics") {
            set("ctx.other_channel_links", &|r, _| self.data[all * rows + r]);
        }
        m
    }

    /// Appends a column (one value per row; NaN where the feature is missing).
    pub fn push_column(&mut self, name: &str, values: &[f64]) {
        assert_eq!(values.len(), self.rows, "one value per row");
        self.names.push(name.to_string());
        self.data.extend_from_slice(values);
    }

    /// These rows followed by `other`'s (same columns).
    pub fn stacked(&self, other: &FeatureMatrix) -> FeatureMatrix {
        assert_eq!(
            self.names, other.names,
            "stacking matrices of other columns"
        );
        let mut data = Vec::with_capacity(self.data.len() + other.data.len());
        for c in 0..self.names.len() {
            data.extend_from_slice(&self.data[c * self.rows..(c + 1) * self.rows]);
            data.extend_from_slice(&other.data[c * other.rows..(c + 1) * other.rows]);
        }
        FeatureMatrix {
            names: self.names.clone(),
            rows: self.rows + other.rows,
            data,
        }
    }
}

/// Per-column features, prefixed `r1.`, `r2.`, ... for the retrievers and `mean.` for their
/// mean.
const PER_COLUMN: &[&str] = &["sim", "rank", "rel_best", "gap_best", "gap_k", "parent_sim"];

const PER_PAIR: &[&str] = &[
    "cand.proposed_by",
    "cand.count",
    "title.shared_words",
    "title.jaccard",
    "desc.jaccard",
    "text.jaccard",
    "topic.title_len",
    "topic.desc_len",
    "topic.level",
    "topic.category",
    "topic.children",
    "content.kind",
    "content.title_len",
    "content.desc_len",
    "content.text_len",
    "ctx.content_topics",
    "ctx.parent_linked",
    "ctx.sibling_links",
    "ctx.channel_links",
    "ctx.other_channel_links",
];

/// The prefix of column `c` of `n_columns` (retrievers, then their mean).
pub fn column_prefix(c: usize, n_columns: usize) -> String {
    if n_columns > 1 && c == n_columns - 1 {
        "mean".into()
    } else {
        format!("r{}", c + 1)
    }
}

/// Feature names for `n_columns` similarity columns.
pub fn names(n_columns: usize) -> Vec<String> {
    let mut v = Vec::new();
    for c in 0..n_columns {
        let p = column_prefix(c, n_columns);
        v.extend(PER_COLUMN.iter().map(|f| format!("{p}.{f}")));
    }
    v.extend(PER_PAIR.iter().map(|s| s.to_string()));
    v
}

/// Lower-cased words of a text.
fn words(s: &str) -> HashSet<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

fn chars(s: &str) -> f64 {
    s.chars().count() as f64
}

fn index_of(list: &[&str], v: &str) -> f64 {
    list.iter()
        .position(|x| *x == v)
        .map_or(list.len() as f64, |i| i as f64)
}

/// What the features read of a topic (its word sets made once, for all its candidates).
pub struct TopicView<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub level: Option<u32>,
    /// `None` where unknown (a topic the service has not seen in its data folder).
    pub category: Option<&'a str>,
    pub children: usize,
    title_words: HashSet<String>,
    desc_words: HashSet<String>,
    all_words: HashSet<String>,
}

impl<'a> TopicView<'a> {
    pub fn new(
        title: &'a str,
        description: &'a str,
        level: Option<u32>,
        category: Option<&'a str>,
        children: usize,
    ) -> TopicView<'a> {
        let title_words = words(title);
        let desc_words = words(description);
        let all_words = title_words.union(&desc_words).cloned().collect();
        TopicView {
            title,
            description,
            level,
            category,
            children,
            title_words,
            desc_words,
            all_words,
        }
    }
}

/// What the features read of a content: its words (title, description, and all of title,
/// description and the encoder's short text), lengths and kind.
#[derive(Debug, Clone, Default)]
pub struct ContentView {
    title: HashSet<String>,
    desc: HashSet<String>,
    all: HashSet<String>,
    title_len: f64,
    desc_len: f64,
    text_len: f64,
    kind: f64,
}

impl ContentView {
    /// `short_text` is the text field as the encoder sees it ([`crate::text::short_text`]).
    pub fn new(title: &str, description: &str, short_text: &str, kind: &str) -> ContentView {
        let t = words(title);
        let d = words(description);
        let mut all: HashSet<String> = t.union(&d).cloned().collect();
        all.extend(words(short_text));
        ContentView {
            title: t,
            desc: d,
            all,
            title_len: chars(title),
            desc_len: chars(description),
            text_len: chars(short_text),
            kind: index_of(KINDS, kind),
        }
    }
}

/// The known links around one (topic, content) pair.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkCounts {
    /// Known topics linked to the content.
    pub content_topics: u32,
    /// Whether the topic's parent is linked to it (`None`: no parent).
    pub parent_linked: Option<bool>,
    /// The topic's siblings linked to it.
    pub sibling_links: u32,
    /// Known topics of the topic's channel linked to it.
    pub channel_links: u32,
}

/// Appends the feature row of one candidate (the order of [`names`]).
pub fn push_row(
    out: &mut Vec<f64>,
    tc: &TopicCandidates,
    cand: &super::candidates::Candidate,
    topic: &TopicView,
    content: &ContentView,
    links: &LinkCounts,
) {
    let (title, desc, text) = (&topic.title_words, &topic.desc_words, &topic.all_words);
    for c in 0..tc.best.len() {
        let s = cand.sims[c] as f64;
        let best = tc.best[c] as f64;
        out.push(s);
        out.push(cand.ranks[c] as f64);
        out.push(if best.abs() > 1e-12 { s / best } else { 0.0 });
        out.push(best - s);
        out.push(s - tc.kth[c] as f64);
        out.push(cand.parent_sims[c] as f64);
    }
    out.extend([
        cand.proposed_by as f64,
        tc.candidates.len() as f64,
        title.intersection(&content.title).count() as f64,
        jaccard(title, &content.title),
        jaccard(desc, &content.desc),
        jaccard(text, &content.all),
        chars(topic.title),
        chars(topic.description),
        topic.level.map_or(f64::NAN, |l| l as f64),
        topic.category.map_or(f64::NAN, |c| index_of(CATEGORIES, c)),
        topic.children as f64,
        content.kind,
        content.title_len,
        content.desc_len,
        content.text_len,
        links.content_topics as f64,
        links.parent_linked.map_or(f64::NAN, |l| l as u8 as f64),
        links.sibling_links as f64,
        links.channel_links as f64,
        (links.content_topics - links.channel_links) as f64,
    ]);
}

/// Row-major rows (`width` values each) as a column-major matrix.
pub fn from_rows(names: Vec<String>, row_major: &[f64]) -> FeatureMatrix {
    let width = names.len();
    let rows = row_major.len() / width.max(1);
    let mut data = vec![0f64; rows * width];
    for (r, row) in row_major.chunks(width).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            data[c * rows + r] = v;
        }
    }
    FeatureMatrix { names, rows, data }
}

/// The features of every candidate of `cands`, rows in topic order then candidate order.
pub fn compute(ds: &Dataset, ctx: &LinkContext, cands: &[TopicCandidates]) -> FeatureMatrix {
    let n_columns = cands
        .iter()
        .find(|t| !t.best.is_empty())
        .map_or(0, |t| t.best.len());
    let names = names(n_columns);
    let content_views: Vec<ContentView> = {
        let used: HashSet<u32> = cands
            .iter()
            .flat_map(|t| t.candidates.iter().map(|c| c.content))
            .collect();
        let mut v = vec![ContentView::default(); ds.contents.len()];
        let filled: Vec<(u32, ContentView)> = used
            .into_par_iter()
            .map(|c| {
                let x = &ds.contents[c as usize];
                let short = crate::text::short_text(&x.text);
                (
                    c,
                    ContentView::new(&x.title, &x.description, &short, &x.kind),
                )
            })
            .collect();
        for (c, w) in filled {
            v[c as usize] = w;
        }
        v
    };
    let per_topic: Vec<Vec<f64>> = cands
        .par_iter()
        .map(|tc| {
            let t = &ds.topics[tc.topic];
            let view = TopicView::new(
                &t.title,
                &t.description,
                t.level,
                Some(&t.category),
                ctx.forest.children[tc.topic].len(),
            );
            let mut rows = Vec::with_capacity(tc.candidates.len() * names.len());
            for cand in &tc.candidates {
                let ci = cand.content;
                let links = ctx.counts(tc.topic, ci);
                push_row(
                    &mut rows,
                    tc,
                    cand,
                    &view,
                    &content_views[ci as usize],
                    &links,
                );
            }
            rows
        })
        .collect();
    from_rows(names, &per_topic.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[Vec<f64>]) -> FeatureMatrix {
        from_rows(names(1), &rows.concat())
    }

    #[test]
    fn cold_rows_lose_tree_context_and_keep_the_rest() {
        let width = names(1).len();
        let row = |seed: f64| (0..width).map(|c| seed + c as f64).collect::<Vec<f64>>();
        let mut second = row(100.0);
        let parent = names(1)
            .iter()
            .position(|n| n == "ctx.parent_linked")
            .unwrap();
        second[parent] = f64::NAN; // a root topic: no parent
        let m = matrix(&[row(0.0), second]);
        let cold = m.cold();
        for r in 0..2 {
            for n in names(1) {
                let (was, now) = (m.get(r, &n).unwrap(), cold.get(r, &n).unwrap());
                match n.as_str() {
                    "topic.category" => assert!(now.is_nan()),
                    "ctx.parent_linked" if was.is_nan() => assert!(now.is_nan()),
                    "ctx.parent_linked" | "ctx.sibling_links" | "ctx.channel_links" => {
                        assert_eq!(now, 0.0, "{n}")
                    }
                    "ctx.other_channel_links" => {
                        assert_eq!(now, m.get(r, "ctx.content_topics").unwrap())
                    }
                    _ => assert_eq!(now.to_bits(), was.to_bits(), "{n}"),
                }
            }
        }
        // Stacking keeps each column's rows in order.
        let s = m.stacked(&cold);
        assert_eq!(s.rows, 4);
        assert_eq!(s.get(1, "r1.sim"), m.get(1, "r1.sim"));
        assert_eq!(s.get(2, "ctx.sibling_links"), Some(0.0));
        assert_eq!(s.get(3, "cand.count"), m.get(1, "cand.count"));
    }
}
