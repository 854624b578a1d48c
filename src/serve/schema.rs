//! Request validation against Learning Equality's le-utils JSON schemas (embedded; MIT licence
//! and provenance in `schemas/README.md`). Topic requests are checked against
//! `schema-embed_topics_request.json` as published (Studio validates the same schema before it
//! sends). Content requests are checked against `schema-embed_content_request.json` relaxed
//! to what Studio's client really sends (see [`relaxed_content_schema`]).

use serde_json::{json, Value};
use std::collections::HashSet;

const TOPICS_SCHEMA: &str = include_str!("schemas/schema-embed_topics_request.json");
const CONTENT_SCHEMA: &str = include_str!("schemas/schema-embed_content_request.json");
const LANGUAGES: &str = include_str!("schemas/languagelookup.json");

/// A request that failed validation: the JSON pointer of the failing value and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub struct Schemas {
    topics: jsonschema::Validator,
    content: jsonschema::Validator,
    languages: HashSet<String>,
}

impl Schemas {
    pub fn load() -> anyhow::Result<Self> {
        let topics: Value = serde_json::from_str(TOPICS_SCHEMA)?;
        let content = relaxed_content_schema(serde_json::from_str(CONTENT_SCHEMA)?);
        let langs: serde_json::Map<String, Value> = serde_json::from_str(LANGUAGES)?;
        Ok(Schemas {
            topics: jsonschema::draft7::new(&topics)
                .map_err(|e| anyhow::anyhow!("embedded topics schema: {e}"))?,
            content: jsonschema::draft7::new(&content)
                .map_err(|e| anyhow::anyhow!("embedded content schema: {e}"))?,
            languages: langs.keys().cloned().collect(),
        })
    }

    pub fn check_topics(&self, body: &Value) -> Result<(), FieldError> {
        first_error(&self.topics, body)
    }

    pub fn check_content(&self, body: &Value) -> Result<(), FieldError> {
        first_error(&self.content, body)
    }

    /// A code of le-utils' language list (`languagelookup.json`).
    pub fn is_known_language(&self, code: &str) -> bool {
        self.languages.contains(code)
    }
}

fn first_error(v: &jsonschema::Validator, body: &Value) -> Result<(), FieldError> {
    match v.iter_errors(body).next() {
        None => Ok(()),
        Some(e) => {
            let path = e.instance_path().to_string();
            Err(FieldError {
                field: if path.is_empty() { "/".into() } else { path },
                message: e.to_string(),
            })
        }
    }
}

/// The content schema as Studio's `extract_content` fills it: per resource only `id` is
/// required (it sends `id`, `title`, `description`, `text`, `language`, `files`, and neither
/// `channel_id`, `content_id` nor `channel_version`); `language`, `files` and the text fields
/// may be null; ids are UUIDs with or without dashes, in either case (Studio's node ids are
/// 32 hex digits); file URLs and presets are not checked (lecr reads no files; a preset added
/// to le-utils later must not make Studio lose a batch).
pub fn relaxed_content_schema(mut s: Value) -> Value {
    let d = &mut s["definitions"];
    d["uuid"]["pattern"] =
        json!("^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$");
    d["file"] = json!({"type": "object"});
    let r = &mut d["resource"];
    r["required"] = json!(["id"]);
    let p = &mut r["properties"];
    p["language"] = json!({"anyOf": [{"$ref": "#/definitions/language"}, {"type": "null"}]});
    p["files"]["type"] = json!(["array", "null"]);
    for f in ["title", "description", "text"] {
        p[f]["type"] = json!(["string", "null"]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0b5c0f4e-2f5a-4c47-9d0e-6f1c2a3b4c5d";

    #[test]
    fn topics_follow_the_published_schema_and_name_the_field() {
        let s = Schemas::load().unwrap();
        let ok = json!({"topics": [{"id": UUID, "channel_id": UUID, "title": "t",
            "description": "", "language": "en",
            "ancestors": [{"id": UUID, "title": "a", "description": "", "level": 0}]}]});
        assert_eq!(s.check_topics(&ok), Ok(()));
        let mut bad = ok.clone();
        bad["topics"][0]["id"] = json!("not-a-uuid");
        assert_eq!(s.check_topics(&bad).unwrap_err().field, "/topics/0/id");
        let mut bad = ok.clone();
        bad["topics"][0]["ancestors"][0]["level"] = json!("zero");
        assert_eq!(
            s.check_topics(&bad).unwrap_err().field,
            "/topics/0/ancestors/0/level"
        );
        let bad = json!({"topics": [{"id": UUID}]});
        let e = s.check_topics(&bad).unwrap_err();
        assert_eq!(e.field, "/topics/0");
        assert!(e.message.contains("required"), "{}", e.message);
        assert_eq!(s.check_topics(&json!({})).unwrap_err().field, "/");
    }

    #[test]
    fn content_accepts_studio_and_schema_shapes() {
        let s = Schemas::load().unwrap();
        let studio = json!({"resources": [{"id": UUID.replace('-', ""), "title": "t",
            "description": "d", "text": "", "language": null, "files": null}],
            "metadata": {"channel_id": UUID}});
        assert_eq!(s.check_content(&studio), Ok(()));
        let schema = json!({"resources": [{"id": UUID, "channel_id": UUID, "title": "t",
            "description": "d", "content_id": UUID, "channel_version": 3, "language": "es",
            "files": [{"url": "https://example.org/x", "preset": "new_preset"}]}]});
        assert_eq!(s.check_content(&schema), Ok(()));
        let bad = json!({"resources": [{"title": "no id"}]});
        assert_eq!(s.check_content(&bad).unwrap_err().field, "/resources/0");
        let bad = json!({"resources": [{"id": UUID, "language": "English"}]});
        assert_eq!(
            s.check_content(&bad).unwrap_err().field,
            "/resources/0/language"
        );
        assert!(s.is_known_language("es") && !s.is_known_language("xx-nope"));
    }
}
