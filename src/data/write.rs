//! Writes topics and contents back in the competition layout (`topics.csv`, `content.csv`),
//! each file with one rename.

use super::schema::{Content, Topic, CONTENT_COLUMNS, TOPIC_COLUMNS};
use crate::io::{csv_writer, write_atomic};
use anyhow::Result;
use std::path::Path;

pub fn write_topics(path: &Path, topics: &[Topic]) -> Result<()> {
    write_atomic(path, |w| {
        let mut w = csv_writer(w);
        w.write_record(TOPIC_COLUMNS)?;
        for t in topics {
            let level = t.level.map(|l| l.to_string()).unwrap_or_default();
            let has_content = if t.has_content { "True" } else { "False" };
            w.write_record([
                t.id.as_str(),
                &t.title,
                &t.description,
                &t.channel,
                &t.category,
                &level,
                &t.language,
                t.parent.as_deref().unwrap_or(""),
                has_content,
            ])?;
        }
        w.flush()?;
        Ok(())
    })
}

pub fn write_contents(path: &Path, contents: &[Content]) -> Result<()> {
    write_atomic(path, |w| {
        let mut w = csv_writer(w);
        w.write_record(CONTENT_COLUMNS)?;
        for c in contents {
            w.write_record([
                c.id.as_str(),
                &c.title,
                &c.description,
                &c.kind,
                &c.text,
                &c.language,
                &c.copyright_holder,
                &c.license,
            ])?;
        }
        w.flush()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load::{read_contents_file, read_topics_file};

    #[test]
    fn topics_and_contents_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let topics = vec![
            Topic {
                id: "t1".into(),
                title: "Fractions, \"parts\"".into(),
                description: "line one\nline two".into(),
                channel: "ch".into(),
                category: String::new(),
                level: Some(0),
                language: "en".into(),
                parent: None,
                has_content: false,
                fold: None,
                line: 0,
            },
            Topic {
                id: "t2".into(),
                title: "Halves".into(),
                description: String::new(),
                channel: "ch".into(),
                category: "aligned".into(),
                level: Some(1),
                language: "en".into(),
                parent: Some("t1".into()),
                has_content: true,
                fold: None,
                line: 0,
            },
        ];
        let contents = vec![Content {
            id: "c1".into(),
            title: "A video, with commas".into(),
            description: "About halves".into(),
            kind: "video".into(),
            text: String::new(),
            language: "en".into(),
            copyright_holder: String::new(),
            license: "CC BY".into(),
            line: 0,
        }];
        write_topics(&dir.path().join("topics.csv"), &topics).unwrap();
        write_contents(&dir.path().join("content.csv"), &contents).unwrap();
        // Rows keep their file line; everything else comes back as written.
        let mut back = read_topics_file(&dir.path().join("topics.csv")).unwrap();
        assert_eq!(back.iter().map(|t| t.line).collect::<Vec<_>>(), [2, 4]);
        back.iter_mut().for_each(|t| t.line = 0);
        assert_eq!(back, topics);
        let mut back = read_contents_file(&dir.path().join("content.csv")).unwrap();
        back.iter_mut().for_each(|c| c.line = 0);
        assert_eq!(back, contents);
    }

    #[test]
    fn a_bad_level_names_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("topics.csv");
        std::fs::write(
            &p,
            format!("{}\nt1,T,,ch,,two,en,,False\n", TOPIC_COLUMNS.join(",")),
        )
        .unwrap();
        let e = read_topics_file(&p).unwrap_err().to_string();
        assert!(e.contains("topics.csv:2") && e.contains("`level`"), "{e}");
    }
}
