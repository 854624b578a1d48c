//! `lecr feedback import`: what curators did with Studio's recommendations, as training labels.
//!
//! Kolibri Studio records a `RecommendationsEvent` per list of recommendations it shows and a
//! `RecommendationsInteractionEvent` per curator action (IMPORTED, REJECTED with reasons,
//! PREVIEWED, SHOWMORE, IGNORED). An operator dumps those tables with `psql`
//! (`docs/studio-feedback.md`); this module reads the dump ([`events`], [`nodes`]), maps each
//! action to a label, keeps one label per (topic, content) pair, and writes the folder
//! `lecr feedback export` writes ([`output`]) with a report of the deployed recommender's
//! online quality ([`report`]).
//!
//! Ids as the service sees them: topic = the folder's Studio `ContentNode.id`, dashed (what
//! Studio sends to `recommend`); content = `ContentNode.node_id`, 32 lowercase hex (what Studio
//! sends to `embed-content`), reached through `nodes.csv`.

pub mod events;
pub mod nodes;
pub mod output;
pub mod read;
pub mod reasons;
pub mod report;
pub mod simulate;

use chrono::{DateTime, Utc};
use events::{Event, FeedbackType, Interaction};
use nodes::{Nodes, Resolved};
use reasons::{Labels, Parsed, Reason};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

pub use read::ExportError;

/// How many items Studio shows on its first page (the rest only after "View more", which logs
/// nothing): an IGNORED item further down was probably never seen.
pub const FIRST_PAGE: usize = 10;

/// What an import keeps and how it labels.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave out events (and their interactions) from before this time.
    pub since: Option<DateTime<Utc>>,
    /// Leave out events of Studio admins (internal testers).
    pub skip_admins: bool,
    /// Also train on weak negatives (they go to `rejected.csv` and, with a store, are recorded
    /// as rejections); `weak.csv` always has them.
    pub weak: bool,
    /// The rejection labels the reasons are parsed with.
    pub labels: Labels,
}

/// The training label of an action or a pair; a pair keeps the strongest of its actions'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Not a verdict on relevance (kept in `decisions.csv` only).
    Ignore,
    /// The topic may fit; format, audience or "not seen" (IGNORED on the first page).
    Weak,
    /// "Not relevant here".
    Hard,
    /// The curator imported it.
    Positive,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "ignore",
            Self::Weak => "weak",
            Self::Hard => "hard",
            Self::Positive => "positive",
        }
    }
}

/// One kept interaction, resolved.
#[derive(Debug, Clone)]
pub struct Decision {
    pub interaction: Interaction,
    /// The event's index in [`Import::events`].
    pub event: usize,
    /// The service's topic id (dashed).
    pub topic: String,
    /// The service's content id; `None` when neither `nodes.csv` nor the fallback found it.
    pub content: Option<String>,
    pub parsed: Parsed,
    pub label: Label,
    /// 0-based index in the event's list; `None` when the item is not in it.
    pub position: Option<usize>,
    /// The service's rank, from `rec_cache.csv`.
    pub rank: Option<i64>,
    /// IMPORTED only: whether a copy sits in the folder (`topic_children.csv`).
    pub verified: Option<bool>,
}

/// One (topic, content) pair's label.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub label: Label,
    /// Imported and also rejected with a hard reason.
    pub conflict: bool,
    /// Labelled positive because a copy sits in the folder, without an IMPORTED row.
    pub from_folder: bool,
}

/// Counts for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub events_read: usize,
    pub events_repeated_id: usize,
    pub events_before_since: usize,
    pub events_of_admins: usize,
    pub interactions_read: usize,
    /// Their event is missing (user deleted; no foreign key): dropped, topic unknown.
    pub orphans: usize,
    /// Their event was left out (`--since`, `--skip-admins`).
    pub left_out_with_event: usize,
    /// The item was not found in `nodes.csv` (nor by the fallback): kept in decisions.csv only.
    pub unresolved_content: usize,
    pub resolved_by_fallback: usize,
    /// The item is not in its event's `content` list (pitfall 7: a PATCH re-pointed the row).
    pub not_in_list: usize,
    pub by_type: BTreeMap<String, usize>,
    pub reasons: BTreeMap<String, usize>,
    pub unknown_reasons: BTreeMap<String, usize>,
    pub imported_not_in_folder: usize,
    pub contents_without_text: usize,
}

/// A whole import, ready to write.
pub struct Import {
    pub events: Vec<Event>,
    /// Per kept event, the service's content id of each item (`None` when unresolved).
    pub item_ids: Vec<Vec<Option<String>>>,
    pub decisions: Vec<Decision>,
    /// (topic, content) → label, sorted.
    pub pairs: BTreeMap<(String, String), Pair>,
    pub counts: Counts,
    pub nodes: Nodes,
    pub options: Options,
}

impl Import {
    /// Content ids per topic id of the pairs with label `l`, both sorted.
    pub fn side(&self, l: Label) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for ((t, c), p) in &self.pairs {
            if p.label == l {
                m.entry(t.clone()).or_default().push(c.clone());
            }
        }
        m
    }

    /// Pairs that training uses as negatives: hard ones, and weak ones with `--weak`.
    pub fn negatives(&self) -> BTreeMap<String, Vec<String>> {
        let mut m = self.side(Label::Hard);
        if self.options.weak {
            for (t, cs) in self.side(Label::Weak) {
                let v = m.entry(t).or_default();
                v.extend(cs);
                v.sort();
            }
        }
        m
    }
}

/// The label of one action (the default mapping; `docs/studio-feedback.md` §6).
pub fn label_of(kind: &FeedbackType, parsed: &Parsed, position: Option<usize>) -> Label {
    use Reason::*;
    match kind {
        FeedbackType::Imported => Label::Positive,
        FeedbackType::Rejected => {
            let r = &parsed.reasons;
            let hard = [
                NotRelated,
                NotSuitableForCurriculum,
                TooAdvanced,
                TooBasic,
                Other,
                Unknown,
            ];
            if r.is_empty() || r.iter().any(|x| hard.contains(x)) {
                Label::Hard
            } else if r
                .iter()
                .any(|x| matches!(x, NotSpecific | NotSuitableForCulture))
            {
                Label::Weak
            } else {
                Label::Ignore
            }
        }
        FeedbackType::Ignored => match position {
            Some(p) if p < FIRST_PAGE => Label::Weak,
            _ => Label::Ignore,
        },
        _ => Label::Ignore,
    }
}

/// Reads the export in `dir` and labels it.
pub fn import(dir: &Path, options: Options) -> Result<Import, ExportError> {
    let (all_events, repeated) = events::read_events(dir, options.skip_admins)?;
    let interactions = events::read_interactions(dir)?;
    let nodes = Nodes::read(dir)?;
    let mut counts = Counts {
        events_read: all_events.len() + repeated,
        events_repeated_id: repeated,
        interactions_read: interactions.len(),
        ..Counts::default()
    };
    let mut left_out: HashSet<String> = HashSet::new();
    let mut events = Vec::with_capacity(all_events.len());
    for e in all_events {
        if options.since.is_some_and(|s| e.time < s) {
            counts.events_before_since += 1;
            left_out.insert(e.id);
        } else if options.skip_admins && e.admin == Some(true) {
            counts.events_of_admins += 1;
            left_out.insert(e.id);
        } else {
            events.push(e);
        }
    }
    let by_id: HashMap<&str, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    let item_ids: Vec<Vec<Option<String>>> = events
        .iter()
        .map(|e| {
            e.items
                .iter()
                .map(|it| nodes.resolve(it).map(|(id, _)| id))
                .collect()
        })
        .collect();

    let mut decisions = Vec::new();
    for i in interactions {
        *counts
            .by_type
            .entry(i.kind.as_str().to_string())
            .or_default() += 1;
        let Some(&ei) = by_id.get(i.event.as_str()) else {
            if left_out.contains(&i.event) {
                counts.left_out_with_event += 1;
            } else {
                counts.orphans += 1;
            }
            continue;
        };
        let e = &events[ei];
        let position = e.items.iter().position(|it| it.node == i.node);
        if position.is_none() {
            counts.not_in_list += 1;
        }
        let content = match position {
            Some(p) => nodes.resolve(&e.items[p]),
            None => nodes
                .node_id(&i.node)
                .map(|n| (n.to_string(), Resolved::Node)),
        };
        let content = match content {
            Some((id, how)) => {
                if how == Resolved::Fallback {
                    counts.resolved_by_fallback += 1;
                }
                Some(id)
            }
            None => {
                counts.unresolved_content += 1;
                None
            }
        };
        let parsed = if i.kind == FeedbackType::Rejected {
            let p = options.labels.parse(&i.reason);
            for r in &p.reasons {
                *counts.reasons.entry(r.as_str().to_string()).or_default() += 1;
            }
            if p.reasons.is_empty() {
                *counts.reasons.entry("(none given)".into()).or_default() += 1;
            }
            if let Some(u) = &p.unknown {
                *counts.unknown_reasons.entry(u.clone()).or_default() += 1;
            }
            p
        } else {
            Parsed::default()
        };
        let label = label_of(&i.kind, &parsed, position);
        let rank = content
            .as_deref()
            .and_then(|c| nodes.rank(&e.topic, c, e.override_threshold, e.time));
        let verified = match (&i.kind, content.as_deref()) {
            (FeedbackType::Imported, Some(c)) => nodes.in_folder(&e.topic, c),
            _ => None,
        };
        if verified == Some(false) {
            counts.imported_not_in_folder += 1;
        }
        decisions.push(Decision {
            topic: e.request.id.clone(),
            event: ei,
            interaction: i,
            content,
            parsed,
            label,
            position,
            rank,
            verified,
        });
    }

    // One label per pair: positive > hard > weak > ignore; positive with hard is a conflict.
    let mut pairs: BTreeMap<(String, String), Pair> = BTreeMap::new();
    for d in &decisions {
        let Some(c) = &d.content else { continue };
        if d.label == Label::Ignore {
            continue;
        }
        let p = pairs.entry((d.topic.clone(), c.clone())).or_insert(Pair {
            label: d.label,
            conflict: false,
            from_folder: false,
        });
        let hard_and_positive = |a: Label, b: Label| {
            matches!(
                (a, b),
                (Label::Positive, Label::Hard) | (Label::Hard, Label::Positive)
            )
        };
        p.conflict |= hard_and_positive(p.label, d.label);
        p.label = p.label.max(d.label);
    }
    // A recommended item whose copy sits in the folder was imported, whatever was logged
    // (pitfall 6: "Add" from the preview drawer never reaches IMPORTED).
    if nodes.has_children() {
        for (e, ids) in events.iter().zip(&item_ids) {
            for c in ids.iter().flatten() {
                if nodes.in_folder(&e.topic, c) == Some(true) {
                    let p = pairs
                        .entry((e.request.id.clone(), c.clone()))
                        .or_insert(Pair {
                            label: Label::Positive,
                            conflict: false,
                            from_folder: true,
                        });
                    if p.label != Label::Positive {
                        p.conflict |= p.label == Label::Hard;
                        p.label = Label::Positive;
                        p.from_folder = true;
                    }
                }
            }
        }
    }
    for (_, c) in pairs.keys() {
        if nodes.text(c).is_none() {
            counts.contents_without_text += 1;
        }
    }
    Ok(Import {
        events,
        item_ids,
        decisions,
        pairs,
        counts,
        nodes,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(labels: &Labels, reason: &str) -> Label {
        label_of(&FeedbackType::Rejected, &labels.parse(reason), Some(0))
    }

    #[test]
    fn every_mapping_rule() {
        let l = Labels::default();
        let none = Parsed::default();
        assert_eq!(
            label_of(&FeedbackType::Imported, &none, Some(30)),
            Label::Positive
        );
        assert_eq!(rejected(&l, "REJECTED"), Label::Hard);
        for r in [
            "Not related to the subject or knowledge area I am trying to find resources for",
            "Not suitable for the curriculum I am using",
            "Too advanced for the knowledge level of learners I'm looking for",
            "Too basic for the knowledge level of learners I'm looking for",
            "Other",
            "something in another language",
        ] {
            assert_eq!(rejected(&l, r), Label::Hard, "{r}");
        }
        let weak = "Not suitable for the cultural backgrounds and experiences of learners";
        assert_eq!(rejected(&l, weak), Label::Weak);
        let specific = "Not the type of learning activity I'm looking for (e.g. document instead \
                        of video, etc.)";
        assert_eq!(rejected(&l, specific), Label::Weak);
        let used = "I already used this resource in my channel";
        let made = "The resource doesn't look or sound well-made enough for use";
        assert_eq!(rejected(&l, used), Label::Ignore);
        assert_eq!(rejected(&l, &format!("{made}, {used}")), Label::Ignore);
        // A hard reason beside a weak or ignored one is hard; a weak beside ignored is weak.
        assert_eq!(rejected(&l, &format!("{specific}, Other")), Label::Hard);
        assert_eq!(rejected(&l, &format!("{weak}, {used}")), Label::Weak);
        assert_eq!(
            label_of(&FeedbackType::Ignored, &none, Some(9)),
            Label::Weak
        );
        assert_eq!(
            label_of(&FeedbackType::Ignored, &none, Some(10)),
            Label::Ignore
        );
        assert_eq!(label_of(&FeedbackType::Ignored, &none, None), Label::Ignore);
        for k in ["PREVIEWED", "SHOWMORE", "FLAGGED", "SOMETHING"] {
            assert_eq!(
                label_of(&FeedbackType::parse(k), &none, Some(0)),
                Label::Ignore,
                "{k}"
            );
        }
    }
}
