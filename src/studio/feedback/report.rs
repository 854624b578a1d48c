//! `report.md` and `report.svg`: what the export holds and the deployed recommender's online
//! quality as curators judged it (acceptance by position and language, rejection reasons,
//! precision@k of the lists shown).

use super::{Import, Label};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

/// Positions the report tabulates (1-based).
pub const POSITIONS: usize = 20;
/// The k of precision@k.
pub const KS: [usize; 4] = [1, 5, 10, 20];

/// One list shown (duplicate lists of one topic, from re-mounts, counted once): each item's
/// verdict, from its pair's label.
struct List<'a> {
    language: &'a str,
    verdicts: Vec<Option<bool>>,
}

#[derive(Default, Clone, Copy)]
struct Tally {
    lists: usize,
    items: usize,
    imported: usize,
    rejected: usize,
}

pub struct Report<'a> {
    im: &'a Import,
    lists: Vec<List<'a>>,
}

fn pct(n: usize, d: usize) -> String {
    if d == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * n as f64 / d as f64)
    }
}

impl<'a> Report<'a> {
    pub fn new(im: &'a Import) -> Self {
        let mut seen = HashSet::new();
        let mut lists = Vec::new();
        for (e, ids) in im.events.iter().zip(&im.item_ids) {
            if !seen.insert((e.topic.as_str(), ids)) {
                continue;
            }
            let verdicts = ids
                .iter()
                .map(|c| {
                    let p = im.pairs.get(&(e.request.id.clone(), c.clone()?))?;
                    match p.label {
                        Label::Positive => Some(true),
                        Label::Hard => Some(false),
                        _ => None,
                    }
                })
                .collect();
            lists.push(List {
                language: e.request.language.as_str(),
                verdicts,
            });
        }
        Report { im, lists }
    }

    /// Per position 1..=POSITIONS.
    fn by_position(&self) -> Vec<Tally> {
        let mut t = vec![Tally::default(); POSITIONS];
        for l in &self.lists {
            for (p, v) in l.verdicts.iter().take(POSITIONS).enumerate() {
                t[p].lists += 1;
                match v {
                    Some(true) => t[p].imported += 1,
                    Some(false) => t[p].rejected += 1,
                    None => {}
                }
            }
        }
        t
    }

    fn by_language(&self) -> BTreeMap<&str, Tally> {
        let mut m: BTreeMap<&str, Tally> = BTreeMap::new();
        for l in &self.lists {
            let t = m.entry(l.language).or_default();
            t.lists += 1;
            for v in l.verdicts.iter().take(super::FIRST_PAGE) {
                t.items += 1;
                match v {
                    Some(true) => t.imported += 1,
                    Some(false) => t.rejected += 1,
                    None => {}
                }
            }
        }
        m
    }

    /// precision@k: (lists with a verdict in the top k, imported, rejected, items in the top k
    /// of those lists).
    fn precision_at(&self, k: usize) -> (usize, usize, usize, usize) {
        let (mut n, mut imp, mut rej, mut items) = (0, 0, 0, 0);
        for l in &self.lists {
            let top = &l.verdicts[..k.min(l.verdicts.len())];
            let (i, r) = (
                top.iter().filter(|v| **v == Some(true)).count(),
                top.iter().filter(|v| **v == Some(false)).count(),
            );
            if i + r > 0 {
                n += 1;
                imp += i;
                rej += r;
                items += top.len();
            }
        }
        (n, imp, rej, items)
    }

    pub fn markdown(&self) -> String {
        let im = self.im;
        let c = &im.counts;
        let mut s = String::new();
        let o = &im.options;
        let _ = writeln!(s, "# Studio recommendation feedback: import report\n");
        let _ = writeln!(
            s,
            "Options: since {}, admins {}, weak negatives {}. Rejection labels known for: {}.\n",
            o.since.map_or("(all)".to_string(), |t| t.to_rfc3339()),
            if o.skip_admins { "left out" } else { "kept" },
            if o.weak {
                "trained on (in rejected.csv)"
            } else {
                "in weak.csv only"
            },
            o.labels.locales().join(", ")
        );
        let _ = writeln!(
            s,
            "## Events and interactions\n\n| what | count |\n| --- | --- |"
        );
        let users: HashSet<&str> = im.events.iter().map(|e| e.user.as_str()).collect();
        let topics: HashSet<&str> = im.events.iter().map(|e| e.topic.as_str()).collect();
        for (what, n) in [
            ("events read", c.events_read),
            ("… repeated event ids (first kept)", c.events_repeated_id),
            ("… before --since (left out)", c.events_before_since),
            ("… of admins (left out)", c.events_of_admins),
            ("events kept", im.events.len()),
            (
                "distinct lists kept (re-mounts counted once)",
                self.lists.len(),
            ),
            ("topics", topics.len()),
            ("curators", users.len()),
            ("interactions read", c.interactions_read),
            ("… orphans: event missing (dropped)", c.orphans),
            ("… of left-out events", c.left_out_with_event),
            ("interactions kept (decisions.csv)", im.decisions.len()),
            ("… item not in its event's list", c.not_in_list),
            (
                "… content not found in nodes.csv (no pair)",
                c.unresolved_content,
            ),
            (
                "… content found by (content_id, channel_id)",
                c.resolved_by_fallback,
            ),
        ] {
            let _ = writeln!(s, "| {what} | {n} |");
        }
        let _ = writeln!(
            s,
            "\nInteractions by type (all read):\n\n| type | count |\n| --- | --- |"
        );
        for (t, n) in &c.by_type {
            let _ = writeln!(s, "| {t} | {n} |");
        }

        let _ = writeln!(s, "\n## Pairs by label\n");
        let _ = writeln!(
            s,
            "One label per (topic, content): positive > hard > weak > ignore.\n\n\
             | label | pairs | file |\n| --- | --- | --- |"
        );
        let count = |l: Label| im.pairs.values().filter(|p| p.label == l).count();
        let from_folder = im.pairs.values().filter(|p| p.from_folder).count();
        let _ = writeln!(
            s,
            "| positive | {} (of which {from_folder} found only in the folder) | correlations.csv |",
            count(Label::Positive)
        );
        let _ = writeln!(
            s,
            "| hard negative | {} | rejected.csv |",
            count(Label::Hard)
        );
        let _ = writeln!(
            s,
            "| weak negative | {} | weak.csv{} |",
            count(Label::Weak),
            if o.weak { " and rejected.csv" } else { "" }
        );
        let conflicts = im.pairs.values().filter(|p| p.conflict).count();
        let _ = writeln!(
            s,
            "\nConflicts (imported and also rejected with a hard reason; kept positive): {conflicts}."
        );
        if im.nodes.has_children() {
            let _ = writeln!(
                s,
                "IMPORTED rows whose copy is not in the folder (removed on the review page, or \
                 moved since): {}.",
                c.imported_not_in_folder
            );
        } else {
            let _ = writeln!(
                s,
                "No topic_children.csv: imports are not verified against the folders."
            );
        }
        let _ = writeln!(
            s,
            "Contents of labelled pairs without text in nodes.csv/public_nodes.csv: {}.",
            c.contents_without_text
        );

        let _ = writeln!(
            s,
            "\n## Acceptance by position\n\n\
             Position in the list as shown (Studio shows {} per page). A list's item counts as \
             imported or rejected by its pair's label. Acceptance = imported / lists with an \
             item there; judged precision = imported / (imported + rejected).\n\n\
             | position | lists | imported | rejected | acceptance | judged precision |\n\
             | --- | --- | --- | --- | --- | --- |",
            super::FIRST_PAGE
        );
        for (p, t) in self.by_position().iter().enumerate() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                p + 1,
                t.lists,
                t.imported,
                t.rejected,
                pct(t.imported, t.lists),
                pct(t.imported, t.imported + t.rejected)
            );
        }
        let _ = writeln!(
            s,
            "\n## By language\n\nFirst page only.\n\n\
             | language | lists | items | imported | rejected | acceptance | judged precision |\n\
             | --- | --- | --- | --- | --- | --- | --- |"
        );
        for (lang, t) in self.by_language() {
            let lang = if lang.is_empty() { "(none)" } else { lang };
            let _ = writeln!(
                s,
                "| {lang} | {} | {} | {} | {} | {} | {} |",
                t.lists,
                t.items,
                t.imported,
                t.rejected,
                pct(t.imported, t.items),
                pct(t.imported, t.imported + t.rejected)
            );
        }

        let rejected = c.by_type.get("REJECTED").copied().unwrap_or(0);
        let _ = writeln!(
            s,
            "\n## Rejection reasons\n\n\
             Counted over kept REJECTED rows (a row may give several); share of {rejected} \
             REJECTED rows read.\n\n| reason | rows | share |\n| --- | --- | --- |"
        );
        for (r, n) in &c.reasons {
            let _ = writeln!(s, "| {r} | {n} | {} |", pct(*n, rejected));
        }
        for (text, reasons, locales) in im.options.labels.ambiguities() {
            let names: Vec<&str> = reasons.iter().map(|r| r.as_str()).collect();
            let _ = writeln!(
                s,
                "\nIn {} the label \"{text}\" stands for {}: such a row counts for each, and the \
                 report cannot tell them apart (both are hard negatives, so training is not \
                 affected).",
                locales.join(", "),
                names.join(" and ")
            );
        }
        if !c.unknown_reasons.is_empty() {
            let mut v: Vec<(&String, &usize)> = c.unknown_reasons.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let _ = writeln!(
                s,
                "\nText no known label matched (another locale: add Studio's message file with \
                 `--labels`), counted as `unknown` (hard), most frequent first:\n"
            );
            for (t, n) in v.into_iter().take(10) {
                let _ = writeln!(s, "- {n} × \"{}\"", super::read::clip(t));
            }
        }

        let _ = writeln!(
            s,
            "\n## Precision@k of what was shown\n\n\
             Over the lists with at least one imported or rejected item in their top k. \
             Judged = imported / (imported + rejected): unjudged items left out, an upper \
             estimate. Lower bound = imported / items in the top k: every unjudged item counted \
             as wrong.\n\n| k | lists | imported | rejected | judged | lower bound |\n\
             | --- | --- | --- | --- | --- | --- |"
        );
        for k in KS {
            let (n, imp, rej, items) = self.precision_at(k);
            let _ = writeln!(
                s,
                "| {k} | {n} | {imp} | {rej} | {} | {} |",
                pct(imp, imp + rej),
                pct(imp, items)
            );
        }
        let _ = writeln!(
            s,
            "\nreport.svg plots acceptance and judged precision by position."
        );
        s
    }

    /// Acceptance (bars) and judged precision (dots) by position.
    pub fn svg(&self) -> String {
        let (w, h, pad) = (640.0, 300.0, 44.0);
        let t = self.by_position();
        let bw = (w - 2.0 * pad) / POSITIONS as f64;
        let y = |r: f64| h - pad - (h - 2.0 * pad) * r;
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif"><text x="{}" y="20" font-size="13" text-anchor="middle">Studio feedback by position: acceptance (bars), judged precision (dots)</text><rect x="{pad}" y="{pad}" width="{}" height="{}" fill="none" stroke="gray"/>"#,
            w / 2.0,
            w - 2.0 * pad,
            h - 2.0 * pad
        );
        for (label, r) in [("0%", 0.0), ("50%", 0.5), ("100%", 1.0)] {
            let _ = write!(
                s,
                r#"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{label}</text>"#,
                pad - 4.0,
                y(r) + 3.0
            );
        }
        for (p, t) in t.iter().enumerate() {
            let x = pad + bw * p as f64;
            if t.lists > 0 {
                let a = t.imported as f64 / t.lists as f64;
                let _ = write!(
                    s,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#2471a3"/>"##,
                    x + 2.0,
                    y(a),
                    bw - 4.0,
                    y(0.0) - y(a)
                );
            }
            if t.imported + t.rejected > 0 {
                let j = t.imported as f64 / (t.imported + t.rejected) as f64;
                let _ = write!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#c0392b"/>"##,
                    x + bw / 2.0,
                    y(j)
                );
            }
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + bw / 2.0,
                h - pad + 14.0,
                p + 1
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">position in the list shown</text></svg>"#,
            w / 2.0,
            h - 8.0
        );
        s
    }
}
