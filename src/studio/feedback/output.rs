//! Where an import goes: the folder `lecr feedback export` writes (so `lecr train --set
//! feedback=DIR` takes it), and optionally a service store's decision log (origin `studio`).

use super::{Import, Label};
use crate::data::{Content, Topic};
use crate::store::{DecisionKind, DecisionOrigin, NewDecision, Store, TopicRecord};
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// The files of an import folder.
pub const FILES: [&str; 8] = [
    "correlations.csv",
    "rejected.csv",
    "weak.csv",
    "decisions.csv",
    "topics.csv",
    "content.csv",
    "report.md",
    "report.svg",
];

/// The `model` of decisions recorded from Studio (Studio's export does not say which model
/// recommended them).
pub const STUDIO_MODEL: &str = "kolibri-studio";

/// The Studio topics of the kept events (the latest event's snapshot of each) and their
/// ancestors with ids, as the service keeps them; texts cut to `cap` characters.
pub fn topic_records(im: &Import, cap: usize) -> Vec<TopicRecord> {
    let mut latest: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, e) in im.events.iter().enumerate() {
        let slot = latest.entry(e.request.id.as_str()).or_insert(i);
        if im.events[*slot].time <= e.time {
            *slot = i;
        }
    }
    let mut by_id: BTreeMap<String, TopicRecord> = BTreeMap::new();
    let mut order: Vec<usize> = latest.into_values().collect();
    order.sort_by_key(|&i| im.events[i].time);
    for i in order {
        let recs = crate::studio::request::topics_as_records(
            std::slice::from_ref(&im.events[i].request),
            cap,
        );
        for r in recs {
            by_id.insert(r.id.clone(), r);
        }
    }
    // Roots first, so a reader links parents before children.
    let mut v: Vec<TopicRecord> = by_id.into_values().collect();
    v.sort_by(|a, b| a.level.cmp(&b.level).then(a.id.cmp(&b.id)));
    v
}

/// `topics.csv` rows: topics with a positive pair count as having content.
fn topics(im: &Import, cap: usize) -> Vec<Topic> {
    let positive: HashSet<&str> = im
        .pairs
        .iter()
        .filter(|(_, p)| p.label == Label::Positive)
        .map(|((t, _), _)| t.as_str())
        .collect();
    topic_records(im, cap)
        .into_iter()
        .map(|r| Topic {
            has_content: positive.contains(r.id.as_str()),
            id: r.id,
            title: r.title,
            description: r.description,
            channel: r.channel,
            category: String::new(),
            level: Some(r.level),
            language: r.language,
            parent: r.parent,
            fold: None,
            line: 0,
        })
        .collect()
}

/// `content.csv` rows: every content of a labelled pair that the export has text for.
fn contents(im: &Import) -> Vec<Content> {
    let ids: std::collections::BTreeSet<&str> = im.pairs.keys().map(|(_, c)| c.as_str()).collect();
    ids.into_iter()
        .filter_map(|id| {
            let t = im.nodes.text(id)?;
            Some(Content {
                id: id.to_string(),
                title: t.title.clone(),
                description: t.description.clone(),
                kind: t.kind.clone(),
                text: String::new(),
                language: t.language.clone(),
                copyright_holder: String::new(),
                license: String::new(),
                line: 0,
            })
        })
        .collect()
}

fn write_side(dir: &Path, name: &str, side: &BTreeMap<String, Vec<String>>) -> Result<()> {
    crate::io::write_atomic(&dir.join(name), |w| {
        let mut w = crate::io::csv_writer(w);
        w.write_record(["topic_id", "content_ids"])?;
        for (t, cs) in side {
            w.write_record([t.as_str(), &cs.join(" ")])?;
        }
        w.flush()?;
        Ok(())
    })
}

fn write_decisions(dir: &Path, im: &Import) -> Result<()> {
    crate::io::write_atomic(&dir.join("decisions.csv"), |w| {
        let mut w = crate::io::csv_writer(w);
        w.write_record([
            "interaction_id",
            "event_id",
            "topic_id",
            "content_id",
            "type",
            "reasons",
            "unknown_reason",
            "other_feedback",
            "label",
            "pair_label",
            "position",
            "rank",
            "verified",
            "user_id",
            "time",
        ])?;
        let opt = |v: Option<String>| v.unwrap_or_default();
        for d in &im.decisions {
            let i = &d.interaction;
            let e = &im.events[d.event];
            let reasons: Vec<&str> = d.parsed.reasons.iter().map(|r| r.as_str()).collect();
            let pair = d
                .content
                .as_ref()
                .and_then(|c| im.pairs.get(&(d.topic.clone(), c.clone())))
                .map_or(Label::Ignore, |p| p.label);
            w.write_record([
                super::read::dashed(&i.id),
                super::read::dashed(&e.id),
                d.topic.clone(),
                opt(d.content.clone()),
                i.kind.as_str().to_string(),
                reasons.join(" "),
                opt(d.parsed.unknown.clone()),
                i.other_feedback.clone(),
                d.label.as_str().to_string(),
                pair.as_str().to_string(),
                opt(d.position.map(|p| (p + 1).to_string())),
                opt(d.rank.map(|r| r.to_string())),
                opt(d.verified.map(|v| v.to_string())),
                e.user.clone(),
                i.time_text.clone(),
            ])?;
        }
        w.flush()?;
        Ok(())
    })
}

/// Writes the import folder `out` whole or not at all. An existing `out` is replaced only when
/// it is an earlier import (it has `report.md` and nothing but import files).
pub fn write_folder(im: &Import, out: &Path, cap: usize) -> Result<()> {
    if out.exists() {
        let entries: Vec<String> = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let earlier_import = entries.iter().any(|n| n == "report.md")
            && entries.iter().all(|n| FILES.contains(&n.as_str()));
        anyhow::ensure!(
            entries.is_empty() || earlier_import,
            "{}: exists and is not an earlier `lecr feedback import` (choose an empty or new folder)",
            out.display()
        );
    }
    crate::io::write_dir_atomic(out, |dir| {
        write_side(dir, "correlations.csv", &im.side(Label::Positive))?;
        write_side(dir, "rejected.csv", &im.negatives())?;
        write_side(dir, "weak.csv", &im.side(Label::Weak))?;
        write_decisions(dir, im)?;
        crate::data::write::write_topics(&dir.join("topics.csv"), &topics(im, cap))?;
        crate::data::write::write_contents(&dir.join("content.csv"), &contents(im))?;
        let r = super::report::Report::new(im);
        crate::io::write_atomic(&dir.join("report.md"), |w| {
            Ok(w.write_all(r.markdown().as_bytes())?)
        })?;
        crate::io::write_atomic(&dir.join("report.svg"), |w| {
            Ok(w.write_all(r.svg().as_bytes())?)
        })?;
        Ok(())
    })
}

/// What recording an import into a store did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recorded {
    /// Decisions appended (origin `studio`).
    pub appended: usize,
    /// Pairs whose current decision already says the same.
    pub unchanged: usize,
    /// Pairs a curator decided on lecr's own page: the page's decision stands.
    pub page_kept: usize,
    /// Studio topics the store did not know yet.
    pub topics_added: usize,
}

/// Records the import's pairs in a store's decision log (origin `studio`): positives as
/// accepts, negatives (hard; weak too with `--weak`) as rejections. Running it again appends
/// only what changed; a pair decided on lecr's page keeps the page's decision. Topics the store
/// does not know yet are kept too, so the curator page lists them.
pub fn record(im: &Import, store: &mut Store, cap: usize) -> Result<Recorded> {
    let mut out = Recorded::default();
    let known: HashSet<String> = store.topics()?.into_iter().map(|t| t.id).collect();
    let new_topics: Vec<TopicRecord> = topic_records(im, cap)
        .into_iter()
        .filter(|t| !known.contains(&t.id))
        .collect();
    out.topics_added = new_topics.len();
    let current: HashMap<(String, String), (DecisionKind, DecisionOrigin)> = store
        .decisions(None)?
        .into_iter()
        .map(|d| ((d.topic_id, d.content_id), (d.kind, d.origin)))
        .collect();
    let mut todo = Vec::new();
    for ((t, c), p) in &im.pairs {
        let kind = match p.label {
            Label::Positive => DecisionKind::Accept,
            Label::Hard => DecisionKind::Reject,
            Label::Weak if im.options.weak => DecisionKind::Reject,
            _ => continue,
        };
        match current.get(&(t.clone(), c.clone())) {
            Some((_, DecisionOrigin::Page)) => out.page_kept += 1,
            Some((k, _)) if *k == kind => out.unchanged += 1,
            _ => todo.push(NewDecision {
                topic_id: t,
                content_id: c,
                kind,
                model: STUDIO_MODEL,
                margin: None,
                origin: DecisionOrigin::Studio,
            }),
        }
    }
    store.remember_topics(&new_topics)?;
    out.appended = store.record_decisions(&todo)?.len();
    Ok(out)
}
