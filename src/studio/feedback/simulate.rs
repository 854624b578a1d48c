//! Writes exports in Studio's exact formats, for tests and experiments (`lecr feedback
//! simulate --studio-export`): the files `psql`'s `\copy … CSV HEADER` writes, with uuid
//! columns dashed, `content[]` ids dashless, `nodes.csv` ids as varchar(32), jsonb text with
//! its key order (shorter keys first) and separators, `t`/`f` booleans, NULL as an empty
//! unquoted field, and timestamps as `2025-11-03 14:22:05.123+00`.

use super::events::{EVENTS_FILE, INTERACTIONS_FILE};
use super::nodes::{NodeText, NODES_FILE, PUBLIC_NODES_FILE, REC_CACHE_FILE, TOPIC_CHILDREN_FILE};
use super::reasons::Reason;
use crate::studio::request::TopicIn;
use anyhow::Result;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Studio's English label of a reason.
pub fn english_label(r: Reason) -> Option<&'static str> {
    super::reasons::ENGLISH
        .iter()
        .find(|(x, _)| *x == r)
        .map(|(_, l)| *l)
}

/// JSON as PostgreSQL prints a jsonb value: object keys shorter first (then bytewise), `", "`
/// between items and `": "` after keys.
pub fn jsonb_text(v: &Value) -> String {
    let mut s = String::new();
    write_jsonb(v, &mut s);
    s
}

fn write_jsonb(v: &Value, s: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
            s.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&Value::String(k.clone()).to_string());
                s.push_str(": ");
                write_jsonb(&m[k], s);
            }
            s.push('}');
        }
        Value::Array(a) => {
            s.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_jsonb(x, s);
            }
            s.push(']');
        }
        other => s.push_str(&other.to_string()),
    }
}

/// A timestamp as `\copy` writes a timestamptz under `SET TIME ZONE 'UTC'`.
pub fn pg_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f+00").to_string()
}

/// A library node: the service's content id and the Studio node that holds it.
#[derive(Debug, Clone)]
struct LibraryNode {
    /// Studio `ContentNode.id` (32 hex).
    studio: String,
    content_id: String,
    channel_id: String,
    text: NodeText,
}

/// One list shown, as [`ExportWriter::event`] takes it.
pub struct EventSpec<'a> {
    /// The topic as Studio sends it (`id` dashed: the folder's `ContentNode.id`).
    pub topic: &'a TopicIn,
    /// The service's content ids, in display order.
    pub items: &'a [String],
    pub user: i64,
    pub admin: bool,
    pub time: DateTime<Utc>,
    pub override_threshold: bool,
}

/// Builds an export row by row, then writes it.
pub struct ExportWriter {
    rng: ChaCha8Rng,
    events: Vec<Vec<String>>,
    interactions: Vec<Vec<String>>,
    library: BTreeMap<String, LibraryNode>,
    children: Vec<[String; 6]>,
    cache: Vec<[String; 7]>,
    /// Studio node ids of event items per event id, for interactions.
    event_items: BTreeMap<String, Vec<String>>,
    /// Library nodes dropped from nodes.csv (the Studio node was deleted): resolvable only
    /// through public_nodes.csv's (content_id, channel_id).
    pub gone_from_nodes: Vec<String>,
}

fn new_uuid(rng: &mut ChaCha8Rng) -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rng.gen()).into_uuid()
}

impl ExportWriter {
    pub fn new(seed: u64) -> Self {
        ExportWriter {
            rng: ChaCha8Rng::seed_from_u64(seed),
            events: Vec::new(),
            interactions: Vec::new(),
            library: BTreeMap::new(),
            children: Vec::new(),
            cache: Vec::new(),
            event_items: BTreeMap::new(),
            gone_from_nodes: Vec::new(),
        }
    }

    /// Adds a library content (service id = 32 hex `node_id`) with its text; returns its
    /// Studio `ContentNode.id` (a different id: pitfall 2).
    pub fn library_node(&mut self, content: &str, text: NodeText) -> String {
        if let Some(n) = self.library.get(content) {
            return n.studio.clone();
        }
        let n = LibraryNode {
            studio: new_uuid(&mut self.rng).simple().to_string(),
            content_id: new_uuid(&mut self.rng).simple().to_string(),
            channel_id: new_uuid(&mut self.rng).simple().to_string(),
            text,
        };
        let studio = n.studio.clone();
        self.library.insert(content.to_string(), n);
        studio
    }

    fn studio_node(&mut self, content: &str) -> String {
        self.library_node(
            content,
            NodeText {
                title: format!("content {content}"),
                kind: "video".into(),
                language: "en".into(),
                ..Default::default()
            },
        )
    }

    /// Adds a list shown; returns the event id (dashed).
    pub fn event(&mut self, e: &EventSpec) -> String {
        let id = new_uuid(&mut self.rng);
        let studio_items: Vec<String> = e.items.iter().map(|c| self.studio_node(c)).collect();
        let content: Vec<Value> = e
            .items
            .iter()
            .zip(&studio_items)
            .map(|(c, s)| {
                let n = &self.library[c];
                json!({"content_id": n.content_id, "node_id": s, "channel_id": n.channel_id})
            })
            .collect();
        let ancestors: Vec<Value> = e
            .topic
            .ancestors
            .iter()
            .map(|a| {
                json!({"id": a.id, "title": a.title, "description": a.description,
                       "language": e.topic.language, "level": a.level})
            })
            .collect();
        let context = json!({
            "topics": [{
                "id": e.topic.id, "title": e.topic.title, "description": e.topic.description,
                "language": e.topic.language, "channel_id": e.topic.channel_id,
                "ancestors": ancestors,
            }],
            "override_threshold": e.override_threshold,
        });
        let topic = uuid::Uuid::try_parse(&e.topic.id).expect("a topic id that is a UUID");
        self.events.push(vec![
            id.hyphenated().to_string(),
            e.user.to_string(),
            if e.admin { "t" } else { "f" }.to_string(),
            new_uuid(&mut self.rng).hyphenated().to_string(),
            topic.hyphenated().to_string(),
            new_uuid(&mut self.rng).hyphenated().to_string(),
            pg_time(e.time),
            String::new(),
            jsonb_text(&context),
            jsonb_text(&Value::Array(content)),
        ]);
        self.event_items
            .insert(id.simple().to_string(), studio_items);
        id.hyphenated().to_string()
    }

    /// Adds a curator action on `content` (a service id) under event `event` (any spelling; an
    /// id of no event makes an orphan). `reason` is `feedback_reason` as stored.
    pub fn interaction(
        &mut self,
        event: &str,
        content: &str,
        kind: &str,
        reason: &str,
        other_feedback: Option<&str>,
        time: DateTime<Utc>,
    ) {
        let studio = self.studio_node(content);
        let n = &self.library[content];
        let context = match other_feedback {
            Some(t) => jsonb_text(&json!({ "other_feedback": t })),
            None => "{}".to_string(),
        };
        let content_id = uuid::Uuid::try_parse(&n.content_id).expect("uuid");
        let studio_dashed = uuid::Uuid::try_parse(&studio).expect("uuid");
        let event = uuid::Uuid::try_parse(event).expect("an event id that is a UUID");
        self.interactions.push(vec![
            new_uuid(&mut self.rng).hyphenated().to_string(),
            event.hyphenated().to_string(),
            studio_dashed.hyphenated().to_string(),
            content_id.hyphenated().to_string(),
            kind.to_string(),
            reason.to_string(),
            context,
            pg_time(time),
        ]);
    }

    /// A copy of `content` now sits in the folder `topic` (topic_children.csv).
    pub fn copy_into(&mut self, topic: &str, content: &str, time: DateTime<Utc>) {
        self.studio_node(content);
        let n = &self.library[content];
        let folder = uuid::Uuid::try_parse(topic)
            .expect("uuid")
            .simple()
            .to_string();
        let copy = new_uuid(&mut self.rng).simple().to_string();
        self.children.push([
            copy,
            folder,
            content.to_string(),
            content.to_string(),
            n.content_id.clone(),
            pg_time(time),
        ]);
    }

    /// The service answered `content` at `rank` for `topic` (rec_cache.csv).
    pub fn cached_rank(&mut self, topic: &str, content: &str, rank: i64, time: DateTime<Utc>) {
        let t = uuid::Uuid::try_parse(topic)
            .expect("uuid")
            .hyphenated()
            .to_string();
        let c = uuid::Uuid::try_parse(content)
            .expect("uuid")
            .hyphenated()
            .to_string();
        let channel = self
            .library
            .get(content)
            .map(|n| n.channel_id.clone())
            .unwrap_or_default();
        self.cache.push([
            t,
            c,
            channel,
            rank.to_string(),
            "f".into(),
            format!("{:032x}", self.rng.gen::<u128>()),
            pg_time(time),
        ]);
    }

    /// Leaves `content`'s Studio node out of nodes.csv (deleted in Studio; pitfall 3).
    pub fn delete_studio_node(&mut self, content: &str) {
        self.gone_from_nodes.push(content.to_string());
    }

    /// Writes the export's files into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let csv = |name: &str, header: &[&str], rows: &mut dyn Iterator<Item = Vec<String>>| {
            crate::io::write_atomic(&dir.join(name), |w| {
                let mut w = crate::io::csv_writer(w);
                w.write_record(header)?;
                for r in rows {
                    w.write_record(&r)?;
                }
                w.flush()?;
                Ok(())
            })
        };
        csv(
            EVENTS_FILE,
            &[
                "id",
                "user_id",
                "user_is_admin",
                "target_channel_id",
                "contentnode_id",
                "content_id",
                "created_at",
                "time_hidden",
                "context",
                "content",
            ],
            &mut self.events.iter().cloned(),
        )?;
        csv(
            INTERACTIONS_FILE,
            &[
                "id",
                "recommendation_event_id",
                "contentnode_id",
                "content_id",
                "feedback_type",
                "feedback_reason",
                "context",
                "created_at",
            ],
            &mut self.interactions.iter().cloned(),
        )?;
        csv(
            NODES_FILE,
            &[
                "id",
                "node_id",
                "content_id",
                "parent_id",
                "kind_id",
                "title",
                "description",
                "language_id",
            ],
            &mut self
                .library
                .iter()
                .filter(|(c, _)| !self.gone_from_nodes.contains(c))
                .map(|(c, n)| {
                    vec![
                        n.studio.clone(),
                        c.clone(),
                        n.content_id.clone(),
                        String::new(),
                        n.text.kind.clone(),
                        n.text.title.clone(),
                        n.text.description.clone(),
                        n.text.language.clone(),
                    ]
                }),
        )?;
        let dashed = |h: &str| {
            uuid::Uuid::try_parse(h)
                .map(|u| u.hyphenated().to_string())
                .unwrap_or_else(|_| h.to_string())
        };
        csv(
            PUBLIC_NODES_FILE,
            &[
                "id",
                "content_id",
                "channel_id",
                "kind",
                "title",
                "description",
                "lang_id",
            ],
            &mut self.library.iter().map(|(c, n)| {
                vec![
                    dashed(c),
                    dashed(&n.content_id),
                    dashed(&n.channel_id),
                    n.text.kind.clone(),
                    n.text.title.clone(),
                    n.text.description.clone(),
                    n.text.language.clone(),
                ]
            }),
        )?;
        csv(
            TOPIC_CHILDREN_FILE,
            &[
                "id",
                "parent_id",
                "source_node_id",
                "original_source_node_id",
                "content_id",
                "created",
            ],
            &mut self.children.iter().map(|r| r.to_vec()),
        )?;
        csv(
            REC_CACHE_FILE,
            &[
                "topic_id",
                "contentnode_id",
                "channel_id",
                "rank",
                "override_threshold",
                "request_hash",
                "timestamp",
            ],
            &mut self.cache.iter().map(|r| r.to_vec()),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonb_orders_keys_shorter_first_with_its_separators() {
        let v = json!({"topics": [{"id": "x", "title": "a \"q\""}], "override_threshold": false});
        assert_eq!(
            jsonb_text(&v),
            r#"{"topics": [{"id": "x", "title": "a \"q\""}], "override_threshold": false}"#
        );
        let v = json!({"node_id": "n", "channel_id": "c", "content_id": "k"});
        assert_eq!(
            jsonb_text(&v),
            r#"{"node_id": "n", "channel_id": "c", "content_id": "k"}"#
        );
    }
}
