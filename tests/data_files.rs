//! Loading and validating Kaggle-layout folders: CSV edge cases, every validation check, and
//! hostile inputs that must give clear errors instead of panics.

use lecr::data::validate::validate;
use lecr::data::{load_dataset, DataError};
use std::fs;
use std::path::Path;

const TOPICS_HEADER: &str =
    "id,title,description,channel,category,level,language,parent,has_content";
const CONTENT_HEADER: &str = "id,title,description,kind,text,language,copyright_holder,license";

fn write(dir: &Path, topics: &str, content: &str, corr: &str) {
    fs::write(dir.join("topics.csv"), topics).unwrap();
    fs::write(dir.join("content.csv"), content).unwrap();
    fs::write(dir.join("correlations.csv"), corr).unwrap();
}

fn good_folder(dir: &Path) {
    write(
        dir,
        &format!(
            "{TOPICS_HEADER}\n\
             t_root,\"Maths, for all\",,ch1,source,0,en,,False\n\
             t_a,\"Adding \"\"fractions\"\"\",\"Line one\nline two\",ch1,source,1,en,t_root,True\n"
        ),
        &format!(
            "{CONTENT_HEADER}\n\
             c_1,\"Video, part 1\",\"He said \"\"hi\"\"\",video,\"multi\nline\ntext\",en,,CC BY\n\
             c_2,Doc,,document,,en,Org,\n"
        ),
        "topic_id,content_ids\nt_a,c_1 c_2\n",
    );
}

#[test]
fn quoted_commas_quotes_and_newlines_parse() {
    let d = tempfile::tempdir().unwrap();
    good_folder(d.path());
    let ds = load_dataset(d.path()).unwrap();
    assert_eq!(ds.topics.len(), 2);
    assert_eq!(ds.topics[0].title, "Maths, for all");
    assert_eq!(ds.topics[1].title, "Adding \"fractions\"");
    assert_eq!(ds.topics[1].description, "Line one\nline two");
    assert_eq!(ds.topics[1].parent.as_deref(), Some("t_root"));
    assert!(ds.topics[1].has_content && !ds.topics[0].has_content);
    assert_eq!(ds.contents[0].text, "multi\nline\ntext");
    assert_eq!(ds.contents[0].description, "He said \"hi\"");
    // The second content row starts on line 5: line numbers count the embedded newlines.
    assert_eq!(ds.contents[1].line, 5);
    assert_eq!(ds.pairs(), vec![(1, 0), (1, 1)]);
    assert!(
        validate(&ds).problems.is_empty(),
        "{}",
        validate(&ds).render(10)
    );
}

#[test]
fn missing_column_and_missing_file_are_structural_errors() {
    let d = tempfile::tempdir().unwrap();
    good_folder(d.path());
    fs::write(
        d.path().join("content.csv"),
        "id,title,description,text,language,copyright_holder,license\nc_1,a,b,c,en,,\n",
    )
    .unwrap();
    let err = load_dataset(d.path()).unwrap_err();
    assert!(
        matches!(err, DataError::MissingColumns { ref missing, .. } if missing == &vec!["kind".to_string()])
    );
    let msg = err.to_string();
    assert!(msg.contains("content.csv") && msg.contains("kind"), "{msg}");

    good_folder(d.path());
    fs::remove_file(d.path().join("correlations.csv")).unwrap();
    let msg = load_dataset(d.path()).unwrap_err().to_string();
    assert!(
        msg.contains("correlations.csv") && msg.contains("not found"),
        "{msg}"
    );
}

fn problems_of(kind: &str, ds: &lecr::data::Dataset) -> Vec<String> {
    validate(ds).of_kind(kind).map(|p| p.to_string()).collect()
}

#[test]
fn every_validation_check_names_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        &format!(
            "{TOPICS_HEADER}\n\
             t_r,Root,,ch,source,0,en,,False\n\
             t_a,A,,ch,source,2,en,t_r,True\n\
             t_a,A again,,ch,source,1,en,t_r,False\n\
             t_b,B,,ch,weird,1,en,t_nope,False\n\
             t_x,X,,ch,aligned,3,en,t_y,False\n\
             t_y,Y,,ch,aligned,3,en,t_x,False\n\
             t_l,L,,ch,aligned,one,fr,t_r,True\n"
        ),
        &format!(
            "{CONTENT_HEADER}\n\
             c_1,One,,video,,en,,\n\
             c_1,Dup,,video,,en,,\n\
             c_2,Two,,podcast,,es,,\n"
        ),
        "topic_id,content_ids\nt_a,c_1 c_9\nt_zz,c_1\nt_l,c_2\n",
    );
    let ds = load_dataset(d.path()).unwrap();
    let report = validate(&ds);
    let counts = report.counts();
    let expect = [
        ("duplicate_id", 2),
        ("unknown_parent", 1),
        ("parent_cycle", 1),
        ("level_mismatch", 1),
        ("unknown_category", 1),
        ("unknown_kind", 1),
        ("unknown_content", 1),
        ("unknown_topic", 1),
        ("language_mismatch", 1),
        ("bad_value", 1),
    ];
    for (k, n) in expect {
        assert_eq!(counts.get(k), Some(&n), "{k}: {}", report.render(50));
    }
    assert_eq!(
        problems_of("level_mismatch", &ds),
        vec!["topics.csv:3 field `level`: level 2 but the topic is 1 step(s) below its root [level_mismatch]"]
    );
    assert_eq!(
        problems_of("unknown_parent", &ds),
        vec!["topics.csv:5 field `parent`: parent `t_nope` is not a topic id [unknown_parent]"]
    );
    assert_eq!(
        problems_of("unknown_content", &ds),
        vec!["correlations.csv:2 field `content_ids`: content `c_9` is not in content.csv [unknown_content]"]
    );
    assert_eq!(
        problems_of("language_mismatch", &ds),
        vec!["correlations.csv:4 field `content_ids`: topic `t_l` is `fr` but content `c_2` is `es` [language_mismatch]"]
    );
    assert_eq!(
        problems_of("bad_value", &ds),
        vec!["topics.csv:8 field `level`: `one` is not a non-negative integer [bad_value]"]
    );
    let dup = problems_of("duplicate_id", &ds);
    assert!(dup.iter().any(|p| p.starts_with("topics.csv:4 field `id`: duplicate id `t_a` (first at line 3)")), "{dup:?}");
    assert!(
        dup.iter()
            .any(|p| p.starts_with("content.csv:3 field `id`")),
        "{dup:?}"
    );
    let cyc = problems_of("parent_cycle", &ds);
    assert!(cyc[0].contains("t_x") && cyc[0].contains("t_y"), "{cyc:?}");
    // The rendered report lists counts and at most N problems.
    let text = report.render(3);
    assert!(text.contains("first 3 problem(s)"), "{text}");
}

/// Inputs that must produce an error or a report, never a panic.
#[test]
fn hostile_inputs_give_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    good_folder(d.path());
    let good_topics = fs::read(d.path().join("topics.csv")).unwrap();
    let good_content = fs::read(d.path().join("content.csv")).unwrap();
    let mut cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("empty topics", "topics.csv", vec![]),
        (
            "header only",
            "topics.csv",
            TOPICS_HEADER.as_bytes().to_vec(),
        ),
        (
            "binary",
            "content.csv",
            (0..=255u8).cycle().take(5000).collect(),
        ),
        ("invalid utf8 in a field", "content.csv", {
            let mut v = format!("{CONTENT_HEADER}\nc_1,").into_bytes();
            v.extend_from_slice(&[0xff, 0xfe, 0x80]);
            v.extend_from_slice(b",,video,,en,,\n");
            v
        }),
        (
            "too few fields",
            "topics.csv",
            format!("{TOPICS_HEADER}\nt_1,a,b\n").into_bytes(),
        ),
        (
            "unterminated quote",
            "content.csv",
            format!("{CONTENT_HEADER}\nc_1,\"never closed,x,video,,en,,\n").into_bytes(),
        ),
        (
            "correlation without ids",
            "correlations.csv",
            b"topic_id,content_ids\nt_a\n".to_vec(),
        ),
        (
            "bom and crlf",
            "correlations.csv",
            b"\xef\xbb\xbftopic_id,content_ids\r\nt_a,c_1\r\n".to_vec(),
        ),
        (
            "huge level",
            "topics.csv",
            format!("{TOPICS_HEADER}\nt_1,a,,c,source,99999999999999999999,en,,True\n")
                .into_bytes(),
        ),
        (
            "self parent",
            "topics.csv",
            format!("{TOPICS_HEADER}\nt_1,a,,c,source,0,en,t_1,True\n").into_bytes(),
        ),
    ];
    // Every truncation point of a valid file.
    for cut in (0..good_content.len()).step_by(7) {
        cases.push((
            "truncated content",
            "content.csv",
            good_content[..cut].to_vec(),
        ));
    }
    for cut in (0..good_topics.len()).step_by(11) {
        cases.push((
            "truncated topics",
            "topics.csv",
            good_topics[..cut].to_vec(),
        ));
    }
    let mut errors = 0;
    for (what, file, bytes) in cases {
        good_folder(d.path());
        fs::write(d.path().join(file), &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| match load_dataset(d.path()) {
            Ok(ds) => {
                let _ = validate(&ds).render(5);
                None
            }
            Err(e) => Some(e.to_string()),
        });
        let outcome = outcome.unwrap_or_else(|_| panic!("{what}: panicked"));
        if let Some(msg) = outcome {
            errors += 1;
            assert!(
                msg.contains(file),
                "{what}: error does not name {file}: {msg}"
            );
        }
    }
    assert!(
        errors >= 5,
        "hostile inputs should mostly be structural errors"
    );
}

#[test]
fn bom_header_and_crlf_are_read() {
    let d = tempfile::tempdir().unwrap();
    good_folder(d.path());
    fs::write(
        d.path().join("correlations.csv"),
        b"\xef\xbb\xbftopic_id,content_ids\r\nt_a,c_1 c_2\r\n",
    )
    .unwrap();
    let ds = load_dataset(d.path()).unwrap();
    assert_eq!(ds.correlations[0].content_ids, vec!["c_1", "c_2"]);
}

#[test]
fn the_binary_reports_errors_with_a_nonzero_exit() {
    let d = tempfile::tempdir().unwrap();
    good_folder(d.path());
    fs::write(d.path().join("topics.csv"), [0u8, 159, 146, 150, 10, 255]).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["data", "check", "--data"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("topics.csv"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
