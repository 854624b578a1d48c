//! The topics of a recommend (or embed-topics) request as Studio sends them: the encoder's topic
//! text (method §2), the parent's text for the reranker, and the records the curator page keeps.

use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct TopicsRequest {
    pub(super) topics: Vec<TopicIn>,
}

#[derive(Deserialize)]
pub(super) struct TopicIn {
    pub(super) id: String,
    pub(super) title: String,
    pub(super) description: String,
    pub(super) language: String,
    #[serde(default)]
    pub(super) channel_id: Option<String>,
    #[serde(default)]
    pub(super) ancestors: Vec<AncestorIn>,
}

#[derive(Deserialize)]
pub(super) struct AncestorIn {
    #[serde(default)]
    pub(super) id: Option<String>,
    pub(super) title: String,
    #[serde(default)]
    pub(super) description: String,
    pub(super) level: i64,
}

impl TopicIn {
    /// method §2's topic text: the topic's title, then its ancestors from the parent (highest
    /// level) to the root (level 0), then the description.
    pub(super) fn text(&self) -> String {
        let mut anc: Vec<&AncestorIn> = self.ancestors.iter().collect();
        anc.sort_by_key(|a| std::cmp::Reverse(a.level));
        let titles: Vec<&str> = std::iter::once(self.title.as_str())
            .chain(anc.iter().map(|a| a.title.as_str()))
            .collect();
        crate::text::breadcrumb_text(&titles, &self.description)
    }

    /// Ancestors from the parent (highest level) to the root.
    pub(super) fn ancestors_parent_first(&self) -> Vec<&AncestorIn> {
        let mut anc: Vec<&AncestorIn> = self.ancestors.iter().collect();
        anc.sort_by_key(|a| std::cmp::Reverse(a.level));
        anc
    }

    /// The parent's topic text (its title, its own ancestors, its description), if any.
    pub(super) fn parent_text(&self) -> Option<String> {
        let anc = self.ancestors_parent_first();
        let parent = anc.first()?;
        let titles: Vec<&str> = anc.iter().map(|a| a.title.as_str()).collect();
        Some(crate::text::breadcrumb_text(&titles, &parent.description))
    }
}

/// The topics of a request and their ancestors (those with ids), as the page's catalog keeps
/// them: each ancestor's parent is the ancestor one level up.
pub(super) fn topics_as_records(topics: &[TopicIn]) -> Vec<super::catalog::TopicRec> {
    use super::catalog::{Origin, TopicRec};
    let mut out = Vec::new();
    for t in topics {
        let channel = t.channel_id.clone().unwrap_or_else(|| "studio".into());
        let anc = t.ancestors_parent_first(); // parent first, root last
        for (i, a) in anc.iter().enumerate() {
            let Some(id) = &a.id else { continue };
            let titles: Vec<&str> = anc[i..].iter().map(|x| x.title.as_str()).collect();
            out.push(TopicRec {
                id: id.clone(),
                channel: channel.clone(),
                title: a.title.clone(),
                description: a.description.clone(),
                language: t.language.clone(),
                parent: anc.get(i + 1).and_then(|p| p.id.clone()),
                level: a.level.max(0) as u32,
                text: crate::text::breadcrumb_text(&titles, &a.description),
                origin: Origin::Studio,
            });
        }
        out.push(TopicRec {
            id: t.id.clone(),
            channel,
            title: t.title.clone(),
            description: t.description.clone(),
            language: t.language.clone(),
            parent: anc.first().and_then(|a| a.id.clone()),
            level: anc.first().map_or(0, |a| a.level.max(0) as u32 + 1),
            text: t.text(),
            origin: Origin::Studio,
        });
    }
    // Root first, so the catalog links parents before children.
    out.reverse();
    out
}

impl TopicIn {
    /// What ranking (and the reranker) needs of this topic.
    pub(super) fn rank_item(&self) -> super::recommend::RankItem {
        let anc = self.ancestors_parent_first();
        super::recommend::RankItem {
            text: self.text(),
            language: self.language.clone(),
            query: Some(super::recommend::OwnedQuery {
                id: self.id.clone(),
                title: self.title.clone(),
                description: self.description.clone(),
                channel: self.channel_id.clone(),
                parent: anc.first().and_then(|a| a.id.clone()),
                level: self.ancestors.len() as u32,
            }),
            parent_text: self.parent_text(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let root = TopicIn {
            ancestors: Vec::new(),
            ..t
        };
        assert_eq!(root.parent_text(), None);
    }
}
