//! Prompts: the prefixes many embedding models expect before a text (`query: ` / `passage: `
//! for the e5 family, instructions for others), declared in a sentence-transformers folder's
//! `config_sentence_transformers.json` (`prompts`, `default_prompt_name`). lecr embeds topic
//! texts with the query prompt and content texts with the passage prompt, as
//! sentence-transformers' `encode(..., prompt_name=...)` would: the prompt is prepended to the
//! text before tokenizing.

use anyhow::{Context, Result};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

pub const FILE: &str = "config_sentence_transformers.json";

/// What a text is, for choosing its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A topic (the query side): recommend, eval, predict, the page's free text.
    Topic,
    /// A content (the passage side): embed-content, the content index.
    Content,
}

/// Prompt names read as the topic (query) side, first found wins.
const TOPIC_NAMES: [&str; 3] = ["query", "search_query", "queries"];
/// Prompt names read as the content (passage) side.
const CONTENT_NAMES: [&str; 6] = [
    "passage",
    "document",
    "search_document",
    "corpus",
    "passages",
    "documents",
];

/// A model's prompts, by name, and the ones its topic and content texts get.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompts {
    /// Every prompt the folder declares.
    pub named: BTreeMap<String, String>,
    pub topic: Option<String>,
    pub content: Option<String>,
}

impl Prompts {
    /// Reads `config_sentence_transformers.json` (no file or no prompts: none).
    pub fn from_folder(dir: &Path) -> Result<Prompts> {
        let p = dir.join(FILE);
        if !p.exists() {
            return Ok(Prompts::default());
        }
        let v: Value = serde_json::from_str(
            &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: not JSON", p.display()))?;
        let mut named = BTreeMap::new();
        if let Some(m) = v.get("prompts").and_then(Value::as_object) {
            for (k, t) in m {
                let t = t
                    .as_str()
                    .with_context(|| format!("{}: prompts.{k}: expected a string", p.display()))?;
                named.insert(k.clone(), t.to_string());
            }
        }
        let default = v
            .get("default_prompt_name")
            .and_then(Value::as_str)
            .and_then(|n| named.get(n).cloned());
        let pick = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| named.get(*n).cloned())
                .or_else(|| default.clone())
                .filter(|t| !t.is_empty())
        };
        Ok(Prompts {
            topic: pick(&TOPIC_NAMES),
            content: pick(&CONTENT_NAMES),
            named,
        })
    }

    /// Applies `--topic-prompt` / `--content-prompt`: the name of one of the folder's prompts,
    /// else the prompt text itself; empty for none.
    pub fn set(&mut self, role: Role, value: &str) {
        let text = self
            .named
            .get(value)
            .cloned()
            .unwrap_or_else(|| value.to_string());
        let slot = match role {
            Role::Topic => &mut self.topic,
            Role::Content => &mut self.content,
        };
        *slot = (!text.is_empty()).then_some(text);
    }

    pub fn get(&self, role: Role) -> Option<&str> {
        match role {
            Role::Topic => self.topic.as_deref(),
            Role::Content => self.content.as_deref(),
        }
    }

    /// `texts` with the role's prompt in front (borrowed when there is none).
    pub fn apply<'a>(&self, role: Role, texts: &'a [String]) -> Cow<'a, [String]> {
        match self.get(role) {
            None => Cow::Borrowed(texts),
            Some(p) => Cow::Owned(texts.iter().map(|t| format!("{p}{t}")).collect()),
        }
    }

    /// One text with the role's prompt in front.
    pub fn apply_one<'a>(&self, role: Role, text: &'a str) -> Cow<'a, str> {
        match self.get(role) {
            None => Cow::Borrowed(text),
            Some(p) => Cow::Owned(format!("{p}{text}")),
        }
    }

    /// Writes the prompts in effect into `dir`'s `config_sentence_transformers.json` (kept
    /// field for field otherwise), under the names sentence-transformers users expect
    /// (`query`, `passage`, or the folder's own names for them), so the saved folder embeds
    /// the same way everywhere.
    pub fn write_into(&self, dir: &Path) -> Result<()> {
        if self.named.is_empty() && self.topic.is_none() && self.content.is_none() {
            return Ok(());
        }
        let p = dir.join(FILE);
        let mut v: Value = if p.exists() {
            serde_json::from_str(&std::fs::read_to_string(&p)?)?
        } else {
            serde_json::json!({})
        };
        let mut named = self.named.clone();
        for (names, text) in [
            (&TOPIC_NAMES[..], &self.topic),
            (&CONTENT_NAMES[..], &self.content),
        ] {
            let name = names
                .iter()
                .find(|n| named.contains_key(**n))
                .copied()
                .unwrap_or(names[0]);
            named.insert(name.to_string(), text.clone().unwrap_or_default());
        }
        v["prompts"] = serde_json::to_value(&named)?;
        if v.get("default_prompt_name").is_none() {
            v["default_prompt_name"] = Value::Null;
        }
        super::save::write_json(&p, &v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roles_default_and_overrides() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(FILE),
            r#"{"prompts": {"query": "query: ", "passage": "passage: ", "clustering": "Cluster: "},
                "default_prompt_name": null}"#,
        )
        .unwrap();
        let mut p = Prompts::from_folder(d.path()).unwrap();
        assert_eq!(p.get(Role::Topic), Some("query: "));
        assert_eq!(p.get(Role::Content), Some("passage: "));
        let texts = vec!["fractions".to_string()];
        assert_eq!(p.apply(Role::Topic, &texts)[0], "query: fractions");
        p.set(Role::Topic, "clustering");
        assert_eq!(p.get(Role::Topic), Some("Cluster: "));
        p.set(Role::Content, "Represent this: ");
        assert_eq!(p.get(Role::Content), Some("Represent this: "));
        p.set(Role::Content, "");
        assert_eq!(p.get(Role::Content), None);
        assert!(matches!(p.apply(Role::Content, &texts), Cow::Borrowed(_)));
        // Saved under the folder's names, other prompts kept.
        let out = tempfile::tempdir().unwrap();
        p.write_into(out.path()).unwrap();
        let back = Prompts::from_folder(out.path()).unwrap();
        assert_eq!(back.get(Role::Topic), Some("Cluster: "));
        assert_eq!(back.get(Role::Content), None);
        assert_eq!(back.named["clustering"], "Cluster: ");

        // A default prompt serves both sides; no file means no prompts.
        std::fs::write(
            d.path().join(FILE),
            r#"{"prompts": {"retrieval": "Represent: "}, "default_prompt_name": "retrieval"}"#,
        )
        .unwrap();
        let p = Prompts::from_folder(d.path()).unwrap();
        assert_eq!(p.get(Role::Topic), Some("Represent: "));
        assert_eq!(p.get(Role::Content), Some("Represent: "));
        let none = Prompts::from_folder(out.path().join("nope").as_path()).unwrap();
        assert_eq!(none, Prompts::default());
        std::fs::write(d.path().join(FILE), r#"{"prompts": {"query": 3}}"#).unwrap();
        assert!(Prompts::from_folder(d.path()).is_err());
    }
}
