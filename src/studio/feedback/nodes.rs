//! The auxiliary files: `nodes.csv` (Studio `ContentNode.id` → `node_id`, the service's content
//! id, and the node's text), `public_nodes.csv` (the published text, and the fallback when the
//! Studio node is gone), `topic_children.csv` (copies that sit in an event's folder: import
//! verification) and `rec_cache.csv` (the service's ranks).

use super::events::Item;
use super::read::{timestamp, Result, Table};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub const NODES_FILE: &str = "nodes.csv";
pub const PUBLIC_NODES_FILE: &str = "public_nodes.csv";
pub const TOPIC_CHILDREN_FILE: &str = "topic_children.csv";
pub const REC_CACHE_FILE: &str = "rec_cache.csv";

/// What lecr knows of a recommended content from the export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeText {
    pub title: String,
    pub description: String,
    pub kind: String,
    pub language: String,
}

/// How an item's service id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Through `nodes.csv`.
    Node,
    /// The Studio node is gone; `(content_id, channel_id)` matched one published node.
    Fallback,
}

/// `(topic, node_id, override_threshold)` of a cached answer.
type RankKey = (String, String, bool);

#[derive(Default)]
pub struct Nodes {
    /// Studio `ContentNode.id` → `node_id`.
    node_id: HashMap<String, String>,
    /// Text by `node_id`: published first, else the Studio node's.
    text: HashMap<String, NodeText>,
    /// `(content_id, channel_id)` → published `node_id`s.
    by_content: HashMap<(String, String), Vec<String>>,
    /// `(folder, source node_id)` of copies in event folders; `None` without the file.
    in_folder: Option<HashSet<(String, String)>>,
    /// `(topic, node_id, override_threshold)` → `(time, rank)`, oldest first.
    ranks: HashMap<RankKey, Vec<(DateTime<Utc>, i64)>>,
    pub has_public: bool,
    pub has_ranks: bool,
}

impl Nodes {
    pub fn read(dir: &Path) -> Result<Nodes> {
        let mut n = Nodes::default();
        let nodes = Table::read(
            dir,
            NODES_FILE,
            &["id", "node_id"],
            "the `nodes.csv` `\\copy` of docs/studio-feedback.md writes it; it maps Studio \
             node ids to the service's content ids",
        )?;
        for row in nodes.rows() {
            let node_id = row.uuid("node_id")?;
            n.node_id.insert(row.uuid("id")?, node_id.clone());
            n.text.entry(node_id).or_insert_with(|| NodeText {
                title: row.get("title").to_string(),
                description: row.get("description").to_string(),
                kind: row.get("kind_id").to_string(),
                language: row.get("language_id").to_string(),
            });
        }
        if let Some(public) = Table::read_optional(dir, PUBLIC_NODES_FILE, &["id"])? {
            n.has_public = true;
            for row in public.rows() {
                let id = row.uuid("id")?;
                // The published text wins over the Studio node's (it is what the service embeds).
                n.text.insert(
                    id.clone(),
                    NodeText {
                        title: row.get("title").to_string(),
                        description: row.get("description").to_string(),
                        kind: row.get("kind").to_string(),
                        language: row.get("lang_id").to_string(),
                    },
                );
                if let (Some(c), Some(ch)) =
                    (row.opt_uuid("content_id")?, row.opt_uuid("channel_id")?)
                {
                    n.by_content.entry((c, ch)).or_default().push(id);
                }
            }
        }
        if let Some(kids) =
            Table::read_optional(dir, TOPIC_CHILDREN_FILE, &["parent_id", "source_node_id"])?
        {
            let mut set = HashSet::new();
            for row in kids.rows() {
                if let (Some(p), Some(s)) =
                    (row.opt_uuid("parent_id")?, row.opt_uuid("source_node_id")?)
                {
                    set.insert((p, s));
                }
            }
            n.in_folder = Some(set);
        }
        if let Some(cache) = Table::read_optional(
            dir,
            REC_CACHE_FILE,
            &[
                "topic_id",
                "contentnode_id",
                "rank",
                "override_threshold",
                "timestamp",
            ],
        )? {
            n.has_ranks = true;
            for row in cache.rows() {
                let rank: i64 = row
                    .get("rank")
                    .trim()
                    .parse()
                    .map_err(|_| row.error("rank", "not an integer"))?;
                let time = timestamp(row.get("timestamp"))
                    .ok_or_else(|| row.error("timestamp", "not a timestamp"))?;
                let over = matches!(row.get("override_threshold").trim(), "t" | "true" | "True");
                n.ranks
                    .entry((row.uuid("topic_id")?, row.uuid("contentnode_id")?, over))
                    .or_default()
                    .push((time, rank));
            }
            for v in n.ranks.values_mut() {
                v.sort();
            }
        }
        Ok(n)
    }

    /// The service's content id of an event item: through `nodes.csv`, else through the
    /// published node with the item's `(content_id, channel_id)` when exactly one has it.
    pub fn resolve(&self, item: &Item) -> Option<(String, Resolved)> {
        if let Some(id) = self.node_id.get(&item.node) {
            return Some((id.clone(), Resolved::Node));
        }
        let key = (item.content_id.clone()?, item.channel_id.clone()?);
        match self.by_content.get(&key).map(Vec::as_slice) {
            Some([one]) => Some((one.clone(), Resolved::Fallback)),
            _ => None,
        }
    }

    /// The service's content id of a Studio node with no event item to fall back on.
    pub fn node_id(&self, node: &str) -> Option<&str> {
        self.node_id.get(node).map(String::as_str)
    }

    pub fn text(&self, node_id: &str) -> Option<&NodeText> {
        self.text.get(node_id)
    }

    /// Whether a copy of `node_id` sits in `folder`; `None` without `topic_children.csv`.
    pub fn in_folder(&self, folder: &str, node_id: &str) -> Option<bool> {
        self.in_folder
            .as_ref()
            .map(|s| s.contains(&(folder.to_string(), node_id.to_string())))
    }

    pub fn has_children(&self) -> bool {
        self.in_folder.is_some()
    }

    /// The rank the service gave `node_id` for `topic` in the latest answer cached at or before
    /// `at`.
    pub fn rank(&self, topic: &str, node_id: &str, over: bool, at: DateTime<Utc>) -> Option<i64> {
        self.ranks
            .get(&(topic.to_string(), node_id.to_string(), over))?
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .map(|&(_, r)| r)
    }
}
