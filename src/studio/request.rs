//! The topics of a recommend (or embed-topics) request as Studio sends them: the encoder's topic
//! text (method §2), the parent's text for the reranker, and the records the curator page keeps.

use crate::store::{TopicOrigin, TopicRecord};
use serde::Deserialize;

/// The deepest ancestor `level` accepted (levels count from the root, 0).
pub const MAX_LEVEL: i64 = 10_000;

#[derive(Debug, Clone, Deserialize)]
pub struct TopicsRequest {
    pub topics: Vec<TopicIn>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TopicIn {
    pub id: String,
    pub title: String,
    pub description: String,
    pub language: String,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub ancestors: Vec<AncestorIn>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AncestorIn {
    #[serde(default)]
    pub id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub level: i64,
}

impl TopicIn {
    /// method §2's topic text: the topic's title, then its ancestors from the parent (highest
    /// level) to the root (level 0), then the description.
    pub fn text(&self) -> String {
        let mut anc: Vec<&AncestorIn> = self.ancestors.iter().collect();
        anc.sort_by_key(|a| std::cmp::Reverse(a.level));
        let titles: Vec<&str> = std::iter::once(self.title.as_str())
            .chain(anc.iter().map(|a| a.title.as_str()))
            .collect();
        crate::text::breadcrumb_text(&titles, &self.description)
    }

    /// Ancestors from the parent (highest level) to the root.
    pub fn ancestors_parent_first(&self) -> Vec<&AncestorIn> {
        let mut anc: Vec<&AncestorIn> = self.ancestors.iter().collect();
        anc.sort_by_key(|a| std::cmp::Reverse(a.level));
        anc
    }

    /// The parent's topic text (its title, its own ancestors, its description), if any.
    pub fn parent_text(&self) -> Option<String> {
        let anc = self.ancestors_parent_first();
        let parent = anc.first()?;
        let titles: Vec<&str> = anc.iter().map(|a| a.title.as_str()).collect();
        Some(crate::text::breadcrumb_text(&titles, &parent.description))
    }
}

/// The topics of a request and their ancestors (those with ids), as the page's catalog keeps
/// them: each ancestor's parent is the ancestor one level up. Each record's text is cut to
/// `cap` characters, so a deep tree costs memory in proportion to its depth, not its square.
pub fn topics_as_records(topics: &[TopicIn], cap: usize) -> Vec<TopicRecord> {
    let mut out = Vec::new();
    for t in topics {
        let channel = t.channel_id.clone().unwrap_or_else(|| "studio".into());
        let anc = t.ancestors_parent_first(); // parent first, root last
        let level = |a: &AncestorIn| a.level.clamp(0, MAX_LEVEL) as u32;
        out.push(TopicRecord {
            id: t.id.clone(),
            channel: channel.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            language: t.language.clone(),
            parent: anc.first().and_then(|a| a.id.clone()),
            level: anc.first().map_or(0, |a| level(a) + 1),
            text: crate::text::cap_chars(t.text(), cap),
            origin: TopicOrigin::Studio,
        });
        for (i, a) in anc.iter().enumerate() {
            let Some(id) = &a.id else { continue };
            out.push(TopicRecord {
                id: id.clone(),
                channel: channel.clone(),
                title: a.title.clone(),
                description: a.description.clone(),
                language: t.language.clone(),
                parent: anc.get(i + 1).and_then(|p| p.id.clone()),
                level: level(a),
                text: capped_breadcrumb(&anc[i..], &a.description, cap),
                origin: TopicOrigin::Studio,
            });
        }
    }
    // Root first, so the catalog links parents before children.
    out.reverse();
    out
}

/// The breadcrumb text of `chain` (self first, root last) and `description`, built from only
/// as many titles as fit in `cap` characters, then cut to `cap`.
fn capped_breadcrumb(chain: &[&AncestorIn], description: &str, cap: usize) -> String {
    let mut titles: Vec<&str> = Vec::new();
    let mut len = 0;
    for a in chain {
        if len > cap {
            break;
        }
        len += crate::text::clean(&a.title).chars().count() + crate::text::SEP.len();
        titles.push(a.title.as_str());
    }
    let description = if len > cap { "" } else { description };
    crate::text::cap_chars(crate::text::breadcrumb_text(&titles, description), cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deep_tree_costs_memory_in_proportion_to_its_depth() {
        let ancestors: Vec<AncestorIn> = (0..2000)
            .map(|l| AncestorIn {
                id: Some(format!("a{l}")),
                title: "t".repeat(100),
                description: String::new(),
                level: l,
            })
            .collect();
        let t = TopicIn {
            id: "x".into(),
            title: "x".into(),
            description: String::new(),
            language: "en".into(),
            channel_id: None,
            ancestors,
        };
        let recs = topics_as_records(std::slice::from_ref(&t), 3072);
        assert_eq!(recs.len(), 2001);
        let chars: usize = recs.iter().map(|r| r.text.len()).sum();
        assert!(chars <= 2001 * 3072, "{chars}");
        // The same prefix as the uncut text.
        let full = {
            let anc = t.ancestors_parent_first();
            let titles: Vec<&str> = anc[5..].iter().map(|a| a.title.as_str()).collect();
            crate::text::breadcrumb_text(&titles, "")
        };
        let rec = recs.iter().find(|r| r.id == "a1994").unwrap();
        assert_eq!(rec.text, crate::text::cap_chars(full, 3072));
    }

    #[test]
    fn topic_text_orders_ancestors_parent_first() {
        let anc = |id: &str, title: &str, description: &str, level| AncestorIn {
            id: Some(id.into()),
            title: title.into(),
            description: description.into(),
            level,
        };
        let t = TopicIn {
            id: "x".into(),
            title: "Adding fractions".into(),
            description: "Add two\nfractions".into(),
            language: "en".into(),
            channel_id: None,
            ancestors: vec![
                anc("m", "Maths", "", 0),
                anc("f", "Fractions", "Parts of a whole", 2),
                anc("g", "Grade 4", "", 1),
            ],
        };
        assert_eq!(
            t.text(),
            "Adding fractions # Fractions # Grade 4 # Maths # Add two fractions"
        );
        // The parent is the deepest ancestor; its text carries its own description.
        assert_eq!(t.ancestors_parent_first()[0].id.as_deref(), Some("f"));
        assert_eq!(
            t.parent_text().unwrap(),
            "Fractions # Grade 4 # Maths # Parts of a whole"
        );
        // The page's records: each ancestor's text is its own breadcrumb, cut to the cap.
        let recs = topics_as_records(std::slice::from_ref(&t), 1000);
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["m", "g", "f", "x"]);
        assert_eq!(
            recs[2].text,
            "Fractions # Grade 4 # Maths # Parts of a whole"
        );
        assert_eq!((recs[2].level, recs[3].level), (2, 3));
        let cut = topics_as_records(std::slice::from_ref(&t), 12);
        assert_eq!(cut[2].text, "Fractions # ");
        assert_eq!(cut[3].text, "Adding fract");
        let root = TopicIn {
            ancestors: Vec::new(),
            ..t
        };
        assert_eq!(root.parent_text(), None);
    }
}
