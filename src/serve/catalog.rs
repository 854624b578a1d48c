//! The topics the curator page can browse: every topic of the `--data` folder, and every topic
//! (with its ancestors) that reached the recommend endpoint, per channel. Studio's topics are
//! kept in the store, so the page still lists them after a restart.

use crate::data::Dataset;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

pub use crate::store::{TopicOrigin, TopicRecord};

/// One channel of the picker.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    pub id: String,
    /// Its root topic's title (or the id when no root is known).
    pub title: String,
    pub language: String,
    pub topics: usize,
}

/// One node of a channel's tree, parents before children.
#[derive(Debug, Clone, Serialize)]
pub struct TreeNode<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub parent: Option<&'a str>,
    pub level: u32,
    /// Contents linked to it in the data folder.
    pub linked: usize,
    pub children: usize,
}

#[derive(Default)]
pub struct Catalog {
    topics: HashMap<String, TopicRecord>,
    /// Topic ids per channel, in the order first seen.
    channels: BTreeMap<String, Vec<String>>,
    children: HashMap<String, Vec<String>>,
    /// Content ids linked to each topic in the data folder.
    links: HashMap<String, Vec<String>>,
}

impl Catalog {
    /// Adds every topic and link of a data folder.
    pub fn add_dataset(&mut self, ds: &Dataset) {
        let texts = crate::text::topic_texts(&ds.topics);
        let forest = crate::data::tree::Forest::build(&ds.topics, &ds.topic_index);
        let recs = ds.topics.iter().enumerate().map(|(i, t)| TopicRecord {
            id: t.id.clone(),
            channel: t.channel.clone(),
            title: t.title.clone(),
            description: t.description.clone(),
            language: t.language.clone(),
            parent: forest.parent[i].map(|p| ds.topics[p].id.clone()),
            level: t.level.or(forest.depth[i]).unwrap_or(0),
            text: texts[i].clone(),
            origin: TopicOrigin::Data,
        });
        self.add(recs);
        for (t, c) in ds.pairs() {
            let list = self.links.entry(ds.topics[t].id.clone()).or_default();
            let cid = &ds.contents[c].id;
            if !list.contains(cid) {
                list.push(cid.clone());
            }
        }
    }

    /// Adds or replaces topics; returns those that are new or changed.
    pub fn add(&mut self, recs: impl IntoIterator<Item = TopicRecord>) -> Vec<TopicRecord> {
        let mut changed = Vec::new();
        for r in recs {
            if self.topics.get(&r.id) == Some(&r) {
                continue;
            }
            if let Some(old) = self.topics.get(&r.id) {
                if let Some(p) = &old.parent {
                    if let Some(c) = self.children.get_mut(p) {
                        c.retain(|x| x != &r.id);
                    }
                }
                if old.channel != r.channel {
                    if let Some(l) = self.channels.get_mut(&old.channel) {
                        l.retain(|x| x != &r.id);
                    }
                }
            }
            let list = self.channels.entry(r.channel.clone()).or_default();
            if !list.contains(&r.id) {
                list.push(r.id.clone());
            }
            if let Some(p) = &r.parent {
                let c = self.children.entry(p.clone()).or_default();
                if !c.contains(&r.id) {
                    c.push(r.id.clone());
                }
            }
            changed.push(r.clone());
            self.topics.insert(r.id.clone(), r);
        }
        changed
    }

    pub fn get(&self, id: &str) -> Option<&TopicRecord> {
        self.topics.get(id)
    }

    /// Child topic ids of a topic.
    pub fn children(&self, id: &str) -> &[String] {
        self.children.get(id).map_or(&[], Vec::as_slice)
    }

    /// Content ids linked to a topic in the data folder.
    pub fn links(&self, id: &str) -> &[String] {
        self.links.get(id).map_or(&[], Vec::as_slice)
    }

    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channels
            .iter()
            .map(|(ch, ids)| {
                let root = ids
                    .iter()
                    .filter_map(|i| self.topics.get(i))
                    .min_by_key(|t| (t.parent.is_some(), t.level));
                ChannelInfo {
                    id: ch.clone(),
                    title: root.map_or_else(|| ch.clone(), |t| t.title.clone()),
                    language: root.map(|t| t.language.clone()).unwrap_or_default(),
                    topics: ids.len(),
                }
            })
            .collect()
    }

    /// A channel's topics, each parent before its children (depth first, in the order seen);
    /// `None` for an unknown channel.
    pub fn tree(&self, channel: &str) -> Option<Vec<TreeNode<'_>>> {
        let ids = self.channels.get(channel)?;
        let in_channel: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut out = Vec::with_capacity(ids.len());
        let mut stack: Vec<&str> = ids
            .iter()
            .filter(|i| {
                self.topics[*i]
                    .parent
                    .as_deref()
                    .is_none_or(|p| !in_channel.contains(p))
            })
            .map(String::as_str)
            .rev()
            .collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let t = &self.topics[id];
            let kids: Vec<&str> = self
                .children
                .get(id)
                .map(|c| {
                    c.iter()
                        .map(String::as_str)
                        .filter(|k| in_channel.contains(k))
                        .collect()
                })
                .unwrap_or_default();
            out.push(TreeNode {
                id: &t.id,
                title: &t.title,
                parent: t.parent.as_deref(),
                level: t.level,
                linked: self.links(id).len(),
                children: kids.len(),
            });
            stack.extend(kids.into_iter().rev());
        }
        Some(out)
    }

    /// The topic's ancestors and itself, root first.
    pub fn breadcrumb(&self, id: &str) -> Vec<&TopicRecord> {
        let mut out = Vec::new();
        let mut cur = self.topics.get(id);
        while let Some(t) = cur {
            if out.iter().any(|x: &&TopicRecord| x.id == t.id) {
                break; // a cycle in the data
            }
            out.push(t);
            cur = t.parent.as_deref().and_then(|p| self.topics.get(p));
        }
        out.reverse();
        out
    }

    /// Languages of the known topics (for the free-text box), sorted.
    pub fn languages(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .topics
            .values()
            .map(|t| t.language.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        v.retain(|l| !l.is_empty());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, parent: Option<&str>, level: u32) -> TopicRecord {
        TopicRecord {
            id: id.into(),
            channel: "ch".into(),
            title: format!("T {id}"),
            description: String::new(),
            language: "en".into(),
            parent: parent.map(Into::into),
            level,
            text: id.into(),
            origin: TopicOrigin::Studio,
        }
    }

    #[test]
    fn tree_lists_parents_before_children_and_counts() {
        let mut c = Catalog::default();
        let added = c.add([
            rec("b", Some("r"), 1),
            rec("r", None, 0),
            rec("a", Some("r"), 1),
            rec("a1", Some("a"), 2),
        ]);
        assert_eq!(added.len(), 4);
        // Adding the same again changes nothing.
        assert!(c.add([rec("a", Some("r"), 1)]).is_empty());
        let tree = c.tree("ch").unwrap();
        let ids: Vec<&str> = tree.iter().map(|n| n.id).collect();
        assert_eq!(ids, ["r", "b", "a", "a1"]);
        assert_eq!(tree[0].children, 2);
        let crumbs: Vec<&str> = c.breadcrumb("a1").iter().map(|t| t.id.as_str()).collect();
        assert_eq!(crumbs, ["r", "a", "a1"]);
        let ch = c.channels();
        assert_eq!(ch[0].title, "T r");
        assert_eq!(ch[0].topics, 4);
        assert!(c.tree("other").is_none());
    }
}
