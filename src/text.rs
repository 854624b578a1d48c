//! What the encoder sees (method §2): a topic becomes its breadcrumb (self → root) and
//! description, a content item its title, description and the start of its text.

use crate::data::schema::{Content, Topic};
use crate::data::tree::Forest;
use regex::Regex;
use std::sync::OnceLock;

/// Words and characters kept from a content's `text`.
pub const TEXT_WORDS: usize = 32;
pub const TEXT_CHARS: usize = 256;
pub const SEP: &str = " # ";

/// Newlines become spaces, then surrounding whitespace goes.
pub fn clean(s: &str) -> String {
    s.replace("\r\n", " ").replace('\n', " ").trim().to_string()
}

/// Topic text: titles from the topic up to its root joined by ` # `, then ` # ` and the
/// description (the separator stays when the description is empty).
pub fn topic_text(topics: &[Topic], forest: &Forest, i: usize) -> String {
    let titles: Vec<&str> = forest
        .breadcrumb(i)
        .iter()
        .map(|&j| topics[j].title.as_str())
        .collect();
    breadcrumb_text(&titles, &topics[i].description)
}

/// The topic text from its breadcrumb titles (the topic itself first, the root last) and its
/// description: what [`topic_text`] builds from a tree and the service from a request.
pub fn breadcrumb_text(titles_self_to_root: &[&str], description: &str) -> String {
    let mut s = titles_self_to_root
        .iter()
        .map(|t| clean(t))
        .collect::<Vec<_>>()
        .join(SEP);
    s.push_str(SEP);
    s.push_str(&clean(description));
    s
}

/// `s` cut to its first `max_chars` characters (whole characters; no copy when shorter).
pub fn cap_chars(mut s: String, max_chars: usize) -> String {
    if let Some((at, _)) = s.char_indices().nth(max_chars) {
        s.truncate(at);
    }
    s
}

/// Topic texts for every topic of a file, in file order.
pub fn topic_texts(topics: &[Topic]) -> Vec<String> {
    let index = topics
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.clone(), i))
        .rev() // the first row of a duplicated id wins, as in `Dataset::topic_index`
        .collect();
    let forest = Forest::build(topics, &index);
    (0..topics.len())
        .map(|i| topic_text(topics, &forest, i))
        .collect()
}

fn url_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"http\S+").expect("static regex"))
}

/// The `text` field as the encoder sees it: URLs removed, the first 32 space-separated words,
/// then at most 256 characters.
pub fn short_text(text: &str) -> String {
    let cleaned = clean(text);
    let no_urls = url_re().replace_all(&cleaned, "");
    let words = no_urls
        .split(' ')
        .take(TEXT_WORDS)
        .collect::<Vec<_>>()
        .join(" ");
    words.chars().take(TEXT_CHARS).collect()
}

/// Content text: `title # description # text`.
pub fn content_text(c: &Content) -> String {
    content_text_parts(&c.title, &c.description, &c.text)
}

/// [`content_text`] from the three fields (the service's resources are not `Content` rows).
pub fn content_text_parts(title: &str, description: &str, text: &str) -> String {
    content_text_of_short(title, description, &short_text(text))
}

/// [`content_text_parts`] when the text is already its [`short_text`] (as the store keeps it).
pub fn content_text_of_short(title: &str, description: &str, short_text: &str) -> String {
    format!(
        "{}{SEP}{}{SEP}{short_text}",
        clean(title),
        clean(description)
    )
}

/// The short text inside an encoder text made by [`content_text_parts`] from this title and
/// description (empty when the text was not made from them).
pub fn short_text_of(encoder_text: &str, title: &str, description: &str) -> String {
    let prefix = format!("{}{SEP}{}{SEP}", clean(title), clean(description));
    encoder_text
        .strip_prefix(&prefix)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_text_comes_back_out_of_the_encoder_text() {
        let text = "Long  text https://x.y with   spaces";
        let enc = content_text_parts("A # title", "desc\n", text);
        assert_eq!(short_text_of(&enc, "A # title", "desc\n"), short_text(text));
        assert_eq!(short_text_of(&enc, "other", "desc"), "");
    }

    #[test]
    fn cap_chars_keeps_whole_characters() {
        assert_eq!(cap_chars("héllo wörld".into(), 4), "héll");
        assert_eq!(cap_chars("ab".into(), 4), "ab");
        assert_eq!(cap_chars("日本語".into(), 2), "日本");
        assert_eq!(cap_chars(String::new(), 0), "");
    }

    use super::*;

    fn topic(id: &str, title: &str, desc: &str, parent: Option<&str>) -> Topic {
        Topic {
            id: id.into(),
            title: title.into(),
            description: desc.into(),
            channel: "ch".into(),
            category: "source".into(),
            level: None,
            language: "en".into(),
            parent: parent.map(str::to_string),
            has_content: true,
            fold: None,
            line: 2,
        }
    }

    fn content(title: &str, desc: &str, text: &str) -> Content {
        Content {
            id: "c".into(),
            title: title.into(),
            description: desc.into(),
            kind: "document".into(),
            text: text.into(),
            language: "en".into(),
            copyright_holder: String::new(),
            license: String::new(),
            line: 2,
        }
    }

    #[test]
    fn topic_breadcrumb_runs_self_to_root_then_description() {
        let ts = vec![
            topic("r", "Maths Channel", "", None),
            topic("g", "Grade 4", "", Some("r")),
            topic("f", "Fractions", "whole", Some("g")),
            topic("a", "Adding fractions", "Add two fractions.", Some("f")),
        ];
        let texts = topic_texts(&ts);
        assert_eq!(
            texts[3],
            "Adding fractions # Fractions # Grade 4 # Maths Channel # Add two fractions."
        );
        // Empty description keeps the separator.
        assert_eq!(texts[0], "Maths Channel # ");
        assert_eq!(texts[2], "Fractions # Grade 4 # Maths Channel # whole");
    }

    #[test]
    fn topic_text_cleans_newlines_and_unicode_is_kept() {
        let ts = vec![
            topic("r", "  Математика\r\n ", "", None),
            topic(
                "x",
                "分数\nの足し算",
                "\n línea uno\r\nlínea dos \n",
                Some("r"),
            ),
        ];
        let texts = topic_texts(&ts);
        assert_eq!(texts[1], "分数 の足し算 # Математика # línea uno línea dos");
    }

    #[test]
    fn deep_tree_breadcrumb_has_every_level() {
        let mut ts = vec![topic("t0", "L0", "", None)];
        for d in 1..=9 {
            ts.push(topic(
                &format!("t{d}"),
                &format!("L{d}"),
                "",
                Some(&format!("t{}", d - 1)),
            ));
        }
        let texts = topic_texts(&ts);
        assert_eq!(
            texts[9],
            "L9 # L8 # L7 # L6 # L5 # L4 # L3 # L2 # L1 # L0 # "
        );
    }

    #[test]
    fn content_text_joins_fields_and_handles_empty_ones() {
        assert_eq!(content_text(&content("", "", "")), " #  # ");
        assert_eq!(
            content_text(&content("Video: fractions", "", "Watch\nthis.")),
            "Video: fractions #  # Watch this."
        );
    }

    #[test]
    fn content_text_removes_urls_then_keeps_32_words() {
        let words: Vec<String> = (1..=40).map(|i| format!("w{i}")).collect();
        let text = format!(
            "see https://example.org/a?b=c and http://x.y/z {}",
            words.join(" ")
        );
        // URL removal leaves the spaces around it: `see  and  w1 ...`, whose empty pieces
        // count as words, exactly like Python's `split(' ')`.
        let expected = format!("see  and  {}", words[..28].join(" "));
        assert_eq!(short_text(&text), expected);
        assert_eq!(
            content_text(&content("T", "D", &text)),
            format!("T # D # {expected}")
        );
    }

    #[test]
    fn content_text_cuts_to_256_characters_not_bytes() {
        // 32 words of 10 two-byte characters each: the cut falls inside the 24th word.
        let word = "é".repeat(10);
        let text = vec![word.clone(); 40].join(" ");
        let s = short_text(&text);
        assert_eq!(s.chars().count(), 256);
        assert!(s.starts_with(&word));
        assert_eq!(s.chars().filter(|&c| c == ' ').count(), 23);
    }
}
