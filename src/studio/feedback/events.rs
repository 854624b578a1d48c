//! `recommendations_events.csv` (one row per list of recommendations Studio showed) and
//! `interaction_events.csv` (one row per curator action on an item of such a list).

use super::read::{clip, dashed, hex_id, timestamp, Result, Row, Table};
use crate::studio::request::TopicIn;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub const EVENTS_FILE: &str = "recommendations_events.csv";
pub const INTERACTIONS_FILE: &str = "interaction_events.csv";

const EVENT_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "contentnode_id",
    "created_at",
    "context",
    "content",
];
const INTERACTION_COLUMNS: &[&str] = &[
    "id",
    "recommendation_event_id",
    "contentnode_id",
    "feedback_type",
    "feedback_reason",
    "context",
    "created_at",
];

/// One list of recommendations shown to a curator.
#[derive(Debug, Clone)]
pub struct Event {
    /// 32 hex digits.
    pub id: String,
    /// The folder (topic): its Studio `ContentNode.id`, 32 hex digits.
    pub topic: String,
    /// The topic as Studio sent it to `recommend`, ids dashed and lowercase.
    pub request: TopicIn,
    /// The curator clicked "show other recommendations anyway".
    pub override_threshold: bool,
    pub user: String,
    /// `user_is_admin` was `t`; `None` when the export has no such column.
    pub admin: Option<bool>,
    pub time: DateTime<Utc>,
    /// `created_at` as exported.
    pub time_text: String,
    /// The items, in display order.
    pub items: Vec<Item>,
    pub line: u64,
}

/// One recommended item of an event, as `content[]` holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Studio `ContentNode.id` (the field is called `node_id` but is not one; pitfall 2).
    pub node: String,
    pub content_id: Option<String>,
    pub channel_id: Option<String>,
}

/// One curator action.
#[derive(Debug, Clone)]
pub struct Interaction {
    pub id: String,
    pub event: String,
    /// The item's Studio `ContentNode.id`, 32 hex digits.
    pub node: String,
    pub kind: FeedbackType,
    pub reason: String,
    pub other_feedback: String,
    pub time_text: String,
    pub line: u64,
}

/// `feedback_type`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FeedbackType {
    Imported,
    Rejected,
    Previewed,
    ShowMore,
    Ignored,
    Flagged,
    /// A value Studio does not define (its API enforces the list; the database does not).
    Other(String),
}

impl FeedbackType {
    pub fn parse(s: &str) -> Self {
        match s.trim() {
            "IMPORTED" => Self::Imported,
            "REJECTED" => Self::Rejected,
            "PREVIEWED" => Self::Previewed,
            "SHOWMORE" => Self::ShowMore,
            "IGNORED" => Self::Ignored,
            "FLAGGED" => Self::Flagged,
            other => Self::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Imported => "IMPORTED",
            Self::Rejected => "REJECTED",
            Self::Previewed => "PREVIEWED",
            Self::ShowMore => "SHOWMORE",
            Self::Ignored => "IGNORED",
            Self::Flagged => "FLAGGED",
            Self::Other(s) => s,
        }
    }
}

/// Reads the events; a repeated id keeps its first row (the second is counted).
pub fn read_events(dir: &std::path::Path, need_admin: bool) -> Result<(Vec<Event>, usize)> {
    let mut required = EVENT_COLUMNS.to_vec();
    if need_admin {
        required.push("user_is_admin");
    }
    let t = Table::read(
        dir,
        EVENTS_FILE,
        &required,
        "the first `\\copy` of docs/studio-feedback.md writes it",
    )?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(t.len());
    let mut repeated = 0;
    for row in t.rows() {
        let e = event(&row, t.has("user_is_admin"))?;
        if seen.insert(e.id.clone()) {
            out.push(e);
        } else {
            repeated += 1;
        }
    }
    Ok((out, repeated))
}

fn event(row: &Row, has_admin: bool) -> Result<Event> {
    let id = row.uuid("id")?;
    let topic = row.uuid("contentnode_id")?;
    let time_text = row.get("created_at").to_string();
    let time = timestamp(&time_text).ok_or_else(|| {
        row.error(
            "created_at",
            format!("`{}` is not a timestamp", clip(&time_text)),
        )
    })?;
    let admin = if has_admin {
        Some(match row.get("user_is_admin").trim() {
            "t" | "true" | "True" | "1" => true,
            "f" | "false" | "False" | "0" | "" => false,
            v => {
                return Err(row.error(
                    "user_is_admin",
                    format!("`{}` is not a boolean (t/f)", clip(v)),
                ))
            }
        })
    } else {
        None
    };
    let context = row.json("context")?;
    let topics = context
        .get("topics")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            row.error(
                "context",
                "no `topics` list (Studio sends exactly one topic)",
            )
        })?;
    let mut request: TopicIn = serde_json::from_value(topics[0].clone())
        .map_err(|e| row.error("context", format!("topics[0]: {e}")))?;
    request.id = dashed(&topic);
    for (i, a) in request.ancestors.iter_mut().enumerate() {
        if let Some(aid) = &a.id {
            let hex = hex_id(aid).ok_or_else(|| {
                row.error(
                    "context",
                    format!("topics[0].ancestors[{i}].id `{}` is not a UUID", clip(aid)),
                )
            })?;
            a.id = Some(dashed(&hex));
        }
    }
    if let Some(c) = &request.channel_id {
        request.channel_id = hex_id(c).map(|h| dashed(&h)).or(Some(c.clone()));
    }
    let override_threshold = context
        .get("override_threshold")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let content = row.json("content")?;
    let list = content
        .as_array()
        .ok_or_else(|| row.error("content", "not a JSON list"))?;
    let mut items = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let field = |k: &str| c.get(k).and_then(Value::as_str);
        let node = field("node_id").and_then(hex_id).ok_or_else(|| {
            row.error(
                "content",
                format!(
                    "[{i}].node_id: `{}` is not a UUID",
                    clip(&c.get("node_id").map(Value::to_string).unwrap_or_default())
                ),
            )
        })?;
        items.push(Item {
            node,
            content_id: field("content_id").and_then(hex_id),
            channel_id: field("channel_id").and_then(hex_id),
        });
    }
    Ok(Event {
        id,
        topic,
        request,
        override_threshold,
        user: row.get("user_id").trim().to_string(),
        admin,
        time,
        time_text,
        items,
        line: row.line,
    })
}

/// Reads the interactions, in file order.
pub fn read_interactions(dir: &std::path::Path) -> Result<Vec<Interaction>> {
    let t = Table::read(
        dir,
        INTERACTIONS_FILE,
        INTERACTION_COLUMNS,
        "the second `\\copy` of docs/studio-feedback.md writes it",
    )?;
    let mut out = Vec::with_capacity(t.len());
    for row in t.rows() {
        let context = row.get("context");
        let other_feedback = if context.trim().is_empty() {
            String::new()
        } else {
            row.json("context")?
                .get("other_feedback")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        out.push(Interaction {
            id: row.uuid("id")?,
            event: row.uuid("recommendation_event_id")?,
            node: row.uuid("contentnode_id")?,
            kind: FeedbackType::parse(row.get("feedback_type")),
            reason: row.get("feedback_reason").to_string(),
            other_feedback,
            time_text: row.get("created_at").to_string(),
            line: row.line,
        });
    }
    Ok(out)
}
