//! `lecr feedback import`: a Studio export in Studio's exact formats, with the labels each row
//! should give known by construction (issue 21; `docs/studio-feedback.md`).

mod common;

use chrono::{DateTime, Utc};
use lecr::studio::feedback::nodes::NodeText;
use lecr::studio::feedback::simulate::{EventSpec, ExportWriter};
use lecr::studio::feedback::{self, Label, Options};
use lecr::studio::request::{AncestorIn, TopicIn};
use std::collections::BTreeMap;
use std::path::Path;

const NOT_SPECIFIC: &str =
    "Not the type of learning activity I'm looking for (e.g. document instead of video, etc.)";
const ALREADY_USED: &str = "I already used this resource in my channel";
const NOT_WELL_MADE: &str = "The resource doesn't look or sound well-made enough for use";
const SPANISH_TOO_BASIC_OR_ADVANCED: &str =
    "Demasiado básico para el nivel de conocimiento de los estudiantes que estoy buscando";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn uuid(i: u32) -> String {
    format!("{i:08x}-0000-4000-8000-{:012x}", i * 7919)
}

fn hex(i: u32) -> String {
    format!("{:08x}{:024x}", i, i as u128 * 104_729)
}

fn topic(i: u32, title: &str, language: &str) -> TopicIn {
    TopicIn {
        id: uuid(i),
        title: title.into(),
        description: format!("about \"{title}\", in short"),
        language: language.into(),
        channel_id: Some(uuid(900)),
        ancestors: vec![
            AncestorIn {
                id: Some(uuid(800).to_uppercase()),
                title: "Grade 4, \"Mathematics\"".into(),
                description: String::new(),
                level: 0,
            },
            AncestorIn {
                id: Some(uuid(801)),
                title: "Number and operations".into(),
                description: String::new(),
                level: 1,
            },
        ],
    }
}

/// Topic ids (dashed), content ids (hex), and the export. Content `c[k]` is hex(k).
struct Scenario {
    t: [String; 3],
    c: Vec<String>,
}

/// Builds the scenario's export in `dir`:
/// - E1 (T1, user 1): IMPORTED c1 (copied into the folder), c2 (no copy), c3 (also REJECTED
///   with no reason: a conflict); REJECTED c4 (not_specific: the label with a comma → weak), c5
///   (already_used → ignored), c6 (Spanish too_basic/too_advanced → hard), c7 (not_specific +
///   not_well_made → weak), c8 (unknown text → hard), c0 (not in E1's list → hard);
///   PREVIEWED c9, SHOWMORE c10.
/// - E1b: E1's list shown again (a re-mount), PREVIEWED c1 only.
/// - E2 (T2, user 2): nothing recommended imported → IGNORED for all 12 (c1..c10 on the first
///   page → weak, c11/c12 → ignored), and REJECTED c2 (hard beats weak). A copy of c12 sits in
///   T2's folder: positive, found only in the folder.
/// - E3 (T3, admin): IMPORTED c1. E4 (T3, 2025): IMPORTED c4. E5 (T3): IMPORTED c11, whose
///   Studio node is gone (found through public_nodes' (content_id, channel_id)).
/// - An orphan: IMPORTED c5 under an event id that is not in the export.
fn scenario(dir: &Path) -> Scenario {
    let mut w = ExportWriter::new(3);
    let c: Vec<String> = (0..=12).map(hex).collect();
    for (k, id) in c.iter().enumerate().skip(1) {
        w.library_node(
            id,
            NodeText {
                title: format!("Resource {k}, \"quoted\""),
                description: "line one\nline two".into(),
                kind: if k % 2 == 0 { "video" } else { "document" }.into(),
                language: if k < 11 { "en" } else { "es" }.into(),
            },
        );
    }
    let (t1, t2, t3) = (
        topic(1, "Fractions", "en"),
        topic(2, "Decimals", "en"),
        topic(3, "Fracciones", "es"),
    );
    let items: Vec<String> = c[1..=12].to_vec();
    let spec = |t: &'static str,
                topic: &TopicIn,
                user: i64,
                admin: bool|
     -> (TopicIn, i64, bool, DateTime<Utc>) { (topic.clone(), user, admin, at(t)) };
    let event = |w: &mut ExportWriter, s: (TopicIn, i64, bool, DateTime<Utc>), items: &[String]| {
        w.event(&EventSpec {
            topic: &s.0,
            items,
            user: s.1,
            admin: s.2,
            time: s.3,
            override_threshold: false,
        })
    };
    let t = at("2026-03-02T10:00:00Z");
    let e1 = event(&mut w, spec("2026-03-02T09:00:00Z", &t1, 1, false), &items);
    let act = |w: &mut ExportWriter, e: &str, k: usize, kind: &str, reason: &str| {
        let other = (kind == "REJECTED").then_some("");
        w.interaction(e, &c[k], kind, reason, other, t)
    };
    act(&mut w, &e1, 1, "IMPORTED", "IMPORTED");
    w.copy_into(&t1.id, &c[1], t);
    act(&mut w, &e1, 2, "IMPORTED", "IMPORTED");
    act(&mut w, &e1, 3, "IMPORTED", "IMPORTED");
    w.copy_into(&t1.id, &c[3], t);
    act(&mut w, &e1, 3, "REJECTED", "REJECTED");
    act(&mut w, &e1, 4, "REJECTED", NOT_SPECIFIC);
    act(&mut w, &e1, 5, "REJECTED", ALREADY_USED);
    act(&mut w, &e1, 6, "REJECTED", SPANISH_TOO_BASIC_OR_ADVANCED);
    act(
        &mut w,
        &e1,
        7,
        "REJECTED",
        &format!("{NOT_SPECIFIC}, {NOT_WELL_MADE}"),
    );
    act(&mut w, &e1, 8, "REJECTED", "Pas pertinent, vraiment");
    act(&mut w, &e1, 9, "PREVIEWED", "PREVIEWED");
    act(&mut w, &e1, 10, "SHOWMORE", "SHOWMORE");
    // c0 is not in E1's list (a later PATCH re-pointed the row): labelled through nodes.csv.
    act(&mut w, &e1, 0, "REJECTED", "REJECTED");
    let e1b = event(&mut w, spec("2026-03-02T09:30:00Z", &t1, 1, false), &items);
    act(&mut w, &e1b, 1, "PREVIEWED", "PREVIEWED");
    let e2 = event(&mut w, spec("2026-03-03T09:00:00Z", &t2, 2, false), &items);
    for k in 1..=12 {
        act(&mut w, &e2, k, "IGNORED", "IGNORED");
    }
    act(
        &mut w,
        &e2,
        2,
        "REJECTED",
        "Not suitable for the curriculum I am using",
    );
    w.copy_into(&t2.id, &c[12], t);
    let e3 = event(&mut w, spec("2026-03-04T09:00:00Z", &t3, 3, true), &items);
    act(&mut w, &e3, 1, "IMPORTED", "IMPORTED");
    let e4 = event(&mut w, spec("2025-06-01T09:00:00Z", &t3, 4, false), &items);
    act(&mut w, &e4, 4, "IMPORTED", "IMPORTED");
    let e5 = event(&mut w, spec("2026-03-05T09:00:00Z", &t3, 4, false), &items);
    act(&mut w, &e5, 11, "IMPORTED", "IMPORTED");
    w.delete_studio_node(&c[11]);
    act(&mut w, &uuid(12345), 5, "IMPORTED", "IMPORTED");
    for (rank, k) in (1..=12).enumerate() {
        w.cached_rank(&t1.id, &c[k], rank as i64 + 1, at("2026-03-02T08:59:00Z"));
    }
    w.write(dir).unwrap();
    Scenario {
        t: [t1.id, t2.id, t3.id],
        c,
    }
}

fn read_side(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut m = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines().skip(1) {
        let (t, cs) = line.split_once(',').unwrap();
        m.insert(
            t.to_string(),
            cs.split(' ').map(str::to_string).collect::<Vec<_>>(),
        );
    }
    m
}

fn sorted(v: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn every_rule_and_pitfall_gives_the_pairs_built_in() {
    let root = tempfile::tempdir().unwrap();
    let export = root.path().join("export");
    let s = scenario(&export);
    let (t, c) = (&s.t, &s.c);
    let out = root.path().join("import");
    let stdout = common::run_lecr([
        "feedback",
        "import",
        "--studio",
        export.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--since",
        "2026-01-01",
        "--skip-admins",
    ]);
    let stdout = String::from_utf8(stdout).unwrap();
    assert!(
        stdout.contains(&format!("wrote {}", out.display())),
        "{stdout}"
    );

    let pos = read_side(&out.join("correlations.csv"));
    let hard = read_side(&out.join("rejected.csv"));
    let weak = read_side(&out.join("weak.csv"));
    assert_eq!(
        pos,
        BTreeMap::from([
            (t[0].clone(), sorted(&[&c[1], &c[2], &c[3]])),
            (t[1].clone(), sorted(&[&c[12]])),
            (t[2].clone(), sorted(&[&c[11]])),
        ]),
        "IMPORTED (also c3, rejected too); c12 found in the folder; c11 through the \
         published node; the admin's c1 and the 2025 event's c4 left out"
    );
    assert_eq!(
        hard,
        BTreeMap::from([
            (t[0].clone(), sorted(&[&c[0], &c[6], &c[8]])),
            (t[1].clone(), sorted(&[&c[2]])),
        ]),
        "no reason (c3, but it was imported), the Spanish label, unknown text; hard beats \
         IGNORED on T2"
    );
    let mut weak_t2: Vec<&String> = (1..=10).filter(|&k| k != 2).map(|k| &c[k]).collect();
    weak_t2.sort();
    assert_eq!(
        weak,
        BTreeMap::from([
            (t[0].clone(), sorted(&[&c[4], &c[7]])),
            (t[1].clone(), sorted(&weak_t2)),
        ]),
        "not_specific (the label with a comma) alone and beside not_well_made; IGNORED on \
         the first page only"
    );

    // decisions.csv: one row per kept interaction (not the orphan, the admin's, the old one).
    let mut rdr = csv::Reader::from_path(out.join("decisions.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    let h = rdr.headers().unwrap().clone();
    let col = |r: &csv::StringRecord, name: &str| -> String {
        r[h.iter().position(|x| x == name).unwrap()].to_string()
    };
    assert_eq!(rows.len(), 12 + 1 + 13 + 1);
    let find = |topic: &str, content: &str, kind: &str| {
        rows.iter()
            .find(|r| {
                col(r, "topic_id") == topic
                    && col(r, "content_id") == content
                    && col(r, "type") == kind
            })
            .unwrap_or_else(|| panic!("no {kind} row for {topic} {content}"))
            .clone()
    };
    let r = find(&t[0], &c[7], "REJECTED");
    assert_eq!(col(&r, "reasons"), "not_specific not_well_made");
    assert_eq!(col(&r, "label"), "weak");
    assert_eq!(col(&r, "position"), "7");
    assert_eq!(col(&r, "rank"), "7", "recovered from rec_cache.csv");
    let r = find(&t[0], &c[8], "REJECTED");
    assert_eq!(col(&r, "unknown_reason"), "Pas pertinent, vraiment");
    assert_eq!(col(&find(&t[0], &c[0], "REJECTED"), "position"), "");
    let r = find(&t[0], &c[5], "REJECTED");
    assert_eq!(
        (col(&r, "label"), col(&r, "pair_label")),
        ("ignore".into(), "ignore".into())
    );
    let r = find(&t[0], &c[3], "REJECTED");
    assert_eq!(
        (col(&r, "label"), col(&r, "pair_label")),
        ("hard".into(), "positive".into())
    );
    assert_eq!(col(&find(&t[0], &c[1], "IMPORTED"), "verified"), "true");
    assert_eq!(col(&find(&t[0], &c[2], "IMPORTED"), "verified"), "false");
    assert_eq!(col(&find(&t[1], &c[11], "IGNORED"), "label"), "ignore");
    assert_eq!(col(&find(&t[1], &c[10], "IGNORED"), "label"), "weak");

    // topics.csv: the event topics with their ancestors, ids dashed and lowercase.
    let topics = lecr::data::load::read_topics_file(&out.join("topics.csv")).unwrap();
    let ids: Vec<&str> = topics.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(topics.len(), 5, "{ids:?}");
    let t1 = topics.iter().find(|x| x.id == t[0]).unwrap();
    assert_eq!(t1.parent.as_deref(), Some(uuid(801).as_str()));
    assert_eq!(t1.level, Some(2));
    assert!(t1.has_content);
    let root_topic = topics.iter().find(|x| x.id == uuid(800)).unwrap();
    assert_eq!(root_topic.title, "Grade 4, \"Mathematics\"");
    assert_eq!(root_topic.level, Some(0));
    // content.csv: every content of a labelled pair, with the published text.
    let contents = lecr::data::load::read_contents_file(&out.join("content.csv")).unwrap();
    assert_eq!(contents.len(), 13, "c0..c12 are all in some pair");
    let c11 = contents.iter().find(|x| x.id == c[11]).unwrap();
    assert_eq!(
        (c11.title.as_str(), c11.language.as_str()),
        ("Resource 11, \"quoted\"", "es")
    );

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for line in [
        "| … orphans: event missing (dropped) | 1 |",
        "| … of admins (left out) | 1 |",
        "| … before --since (left out) | 1 |",
        "| distinct lists kept (re-mounts counted once) | 3 |",
        "| … content found by (content_id, channel_id) | 2 |",
        "| … item not in its event's list | 1 |",
        "Conflicts (imported and also rejected with a hard reason; kept positive): 1.",
        "IMPORTED rows whose copy is not in the folder (removed on the review page, or moved since): 2.",
        "| positive | 5 (of which 1 found only in the folder) | correlations.csv |",
        "cannot tell them apart",
        "- 1 × \"Pas pertinent, vraiment\"",
        "| es | 1 | 10 | 0 | 0 |",
    ] {
        assert!(report.contains(line), "report lacks {line:?}:\n{report}");
    }
    // precision@1 of T1's list: c1 imported; T2's: c1 ignored (weak: not judged).
    assert!(
        report.contains("| 1 | 1 | 1 | 0 | 100.0% | 100.0% |"),
        "{report}"
    );
    let svg = std::fs::read_to_string(out.join("report.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<rect") && svg.ends_with("</svg>"));
}

#[test]
fn weak_negatives_train_only_when_asked() {
    let root = tempfile::tempdir().unwrap();
    let export = root.path().join("export");
    let s = scenario(&export);
    let im = feedback::import(
        &export,
        Options {
            weak: true,
            ..Default::default()
        },
    )
    .unwrap();
    let neg = im.negatives();
    assert!(neg[&s.t[0]].contains(&s.c[4]) && neg[&s.t[0]].contains(&s.c[6]));
    // Without --since/--skip-admins the admin's and the old imports count.
    assert_eq!(
        im.pairs[&(s.t[2].clone(), s.c[1].clone())].label,
        Label::Positive
    );
    assert_eq!(
        im.pairs[&(s.t[2].clone(), s.c[4].clone())].label,
        Label::Positive
    );
    let plain = feedback::import(&export, Options::default()).unwrap();
    assert!(!plain.negatives()[&s.t[0]].contains(&s.c[4]));
}

#[test]
fn the_export_has_studios_id_spellings_and_jsonb_text() {
    let root = tempfile::tempdir().unwrap();
    scenario(root.path());
    let events = std::fs::read_to_string(root.path().join("recommendations_events.csv")).unwrap();
    let line = events.lines().nth(1).unwrap();
    let dashed =
        regex::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12},")
            .unwrap();
    assert!(dashed.is_match(line), "uuid columns dashed: {line}");
    assert!(
        line.contains(r#",,"{""topics"": [{""id"": """#),
        "NULL time_hidden, then jsonb with doubled quotes, shorter keys first: {line}"
    );
    assert!(
        regex::Regex::new(r#"""node_id"": ""[0-9a-f]{32}"""#)
            .unwrap()
            .is_match(&events),
        "content[] ids dashless"
    );
    assert!(events.contains("\"\"override_threshold\"\": false}"));
}

/// Rows written by hand in the exact form of the format's documentation (not by the writer).
#[test]
fn a_hand_written_export_in_the_documented_form() {
    let root = tempfile::tempdir().unwrap();
    let d = root.path();
    std::fs::write(
        d.join("recommendations_events.csv"),
        "id,user_id,user_is_admin,target_channel_id,contentnode_id,content_id,created_at,time_hidden,context,content\n\
         0b5f3e1c-9d2a-4f7b-8e6c-1a2b3c4d5e6f,7,f,e5f6a7b8-c9d0-4e1f-a2b3-c4d5e6f7a8b9,6f1c2a9e-0b7d-4c1e-9a55-3f2d8e4b7c10,22222222-2222-4222-8222-222222222222,2025-11-03 14:22:05.123+00,,\
         \"{\"\"topics\"\": [{\"\"id\"\": \"\"6f1c2a9e-0b7d-4c1e-9a55-3f2d8e4b7c10\"\", \"\"title\"\": \"\"Fractions\"\", \"\"language\"\": \"\"en\"\", \"\"ancestors\"\": [{\"\"id\"\": \"\"0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f\"\", \"\"level\"\": 0, \"\"title\"\": \"\"Grade 4 Mathematics\"\", \"\"language\"\": \"\"en\"\", \"\"description\"\": \"\"\"\"}], \"\"channel_id\"\": \"\"e5f6a7b8-c9d0-4e1f-a2b3-c4d5e6f7a8b9\"\", \"\"description\"\": \"\"Comparing and adding fractions\"\"}], \"\"override_threshold\"\": false}\",\
         \"[{\"\"node_id\"\": \"\"4C7D9E2F1A3B4C5D8E9F0A1B2C3D4E5F\"\", \"\"channel_id\"\": \"\"3c2b1a098f7e4d6c9b5a4f3e2d1c0b9a\"\", \"\"content_id\"\": \"\"b0e8f7a6c5d44e3f9a2b1c0d9e8f7a6b\"\"}]\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("interaction_events.csv"),
        "id,recommendation_event_id,contentnode_id,content_id,feedback_type,feedback_reason,context,created_at\n\
         c623882d-10f8-431c-a861-6d9520d3162d,0b5f3e1c-9d2a-4f7b-8e6c-1a2b3c4d5e6f,4c7d9e2f-1a3b-4c5d-8e9f-0a1b2c3d4e5f,b0e8f7a6-c5d4-4e3f-9a2b-1c0d9e8f7a6b,REJECTED,\"Not the type of learning activity I'm looking for (e.g. document instead of video, etc.), Other\",\"{\"\"other_feedback\"\": \"\"too long\"\"}\",2025-11-03 14:24:00+00\n",
    )
    .unwrap();
    std::fs::write(
        d.join("nodes.csv"),
        "id,node_id,content_id,parent_id,kind_id,title,description,language_id\n\
         4c7d9e2f1a3b4c5d8e9f0a1b2c3d4e5f,5d8e0f3a2b4c4d6e9f0a1b2c3d4e5f60,b0e8f7a6c5d44e3f9a2b1c0d9e8f7a6b,,video,Adding fractions,,en\n",
    )
    .unwrap();
    let im = feedback::import(d, Options::default()).unwrap();
    let key = (
        "6f1c2a9e-0b7d-4c1e-9a55-3f2d8e4b7c10".to_string(),
        "5d8e0f3a2b4c4d6e9f0a1b2c3d4e5f60".to_string(),
    );
    assert_eq!(im.pairs.len(), 1);
    assert_eq!(
        im.pairs[&key].label,
        Label::Hard,
        "not_specific + other → hard"
    );
    assert_eq!(im.decisions[0].interaction.other_feedback, "too long");
    assert_eq!(
        im.decisions[0].position,
        Some(0),
        "upper-case dashless id matched"
    );
}

#[test]
fn bad_input_names_file_line_and_column_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let export = root.path().join("export");
    scenario(&export);
    let out = root.path().join("out");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
            .args(["feedback", "import", "--studio"])
            .arg(&export)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let edit = |name: &str, f: &dyn Fn(String) -> String| {
        let p = export.join(name);
        let s = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, f(s)).unwrap();
    };
    let fails_with = |want: &[&str]| {
        let o = run();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success(), "{err}");
        for w in want {
            assert!(err.contains(w), "{w:?} not in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "nothing written");
    };
    // A topic id that is not a UUID, on line 3.
    let original = std::fs::read_to_string(export.join("recommendations_events.csv")).unwrap();
    edit("recommendations_events.csv", &|s| {
        let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
        let fields: Vec<&str> = lines[2].splitn(6, ',').collect();
        lines[2] = format!(
            "{},{},{},{},not-a-uuid,{}",
            fields[0], fields[1], fields[2], fields[3], fields[5]
        );
        lines.join("\n") + "\n"
    });
    fails_with(&[
        "recommendations_events.csv, line 3, column `contentnode_id`",
        "not-a-uuid",
    ]);
    // Unparseable JSON in context.
    std::fs::write(export.join("recommendations_events.csv"), &original).unwrap();
    edit("recommendations_events.csv", &|s| {
        s.replacen("{\"\"topics\"\"", "{\"\"topics\"\" oops", 1)
    });
    fails_with(&["line 2, column `context`", "not JSON"]);
    // A content[] id that is not a UUID.
    std::fs::write(export.join("recommendations_events.csv"), &original).unwrap();
    edit("recommendations_events.csv", &|s| {
        let needle = "\"\"node_id\"\": \"\"";
        let i = s.find(needle).unwrap() + needle.len();
        format!("{}zz{}", &s[..i], &s[i + 2..])
    });
    fails_with(&["column `content`", "[0].node_id"]);
    // A missing column, a missing file.
    std::fs::write(export.join("recommendations_events.csv"), &original).unwrap();
    edit("interaction_events.csv", &|s| {
        s.replacen("feedback_reason", "reason", 1)
    });
    fails_with(&[
        "interaction_events.csv",
        "missing column(s) feedback_reason",
    ]);
    std::fs::remove_file(export.join("interaction_events.csv")).unwrap();
    fails_with(&["interaction_events.csv: missing"]);
    // A folder that is not an earlier import is never replaced.
    let root2 = tempfile::tempdir().unwrap();
    let export2 = root2.path().join("export");
    scenario(&export2);
    let busy = root2.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["feedback", "import", "--studio"])
        .arg(&export2)
        .arg("--out")
        .arg(&busy)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(
        std::fs::read_to_string(busy.join("keep.txt")).unwrap(),
        "mine"
    );
    // An earlier import is replaced.
    let again = root2.path().join("again");
    for _ in 0..2 {
        common::run_lecr([
            "feedback",
            "import",
            "--studio",
            export2.to_str().unwrap(),
            "--out",
            again.to_str().unwrap(),
        ]);
    }
    assert!(again.join("report.md").exists());
}

/// An export for a data topic `t` (items `cs`: REJECTED cs[0], IMPORTED cs[1], REJECTED with
/// no reason cs[2]) and for a Studio topic not in the data (IMPORTED cs[1]), with its root.
fn export_for(dir: &Path, t: &lecr::data::Topic, cs: &[String], studio_topic: &str) {
    let mut w = ExportWriter::new(5);
    let time = at("2026-03-02T09:00:00Z");
    let request = |id: &str, ancestors| TopicIn {
        id: id.to_string(),
        title: t.title.clone(),
        description: String::new(),
        language: t.language.clone(),
        channel_id: Some(uuid(77)),
        ancestors,
    };
    let e = w.event(&EventSpec {
        topic: &request(&t.id, vec![]),
        items: cs,
        user: 1,
        admin: false,
        time,
        override_threshold: false,
    });
    w.interaction(
        &e,
        &cs[0],
        "REJECTED",
        "Other",
        Some("we teach this later"),
        time,
    );
    w.interaction(&e, &cs[1], "IMPORTED", "IMPORTED", None, time);
    w.interaction(&e, &cs[2], "REJECTED", "REJECTED", Some(""), time);
    let root = AncestorIn {
        id: Some(uuid(78)),
        title: "Studio root".into(),
        description: String::new(),
        level: 0,
    };
    let e = w.event(&EventSpec {
        topic: &request(studio_topic, vec![root]),
        items: &cs[1..2],
        user: 1,
        admin: false,
        time,
        override_threshold: false,
    });
    w.interaction(&e, &cs[1], "IMPORTED", "IMPORTED", None, time);
    w.write(dir).unwrap();
}

#[test]
fn store_decisions_reach_the_curator_page_on_sqlite_and_postgres() {
    use common::server::Server;
    use serde_json::json;
    let root = tempfile::tempdir().unwrap();
    let (data, model) = common::serve_corpus_with(root.path(), true);
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let t = ds
        .topics
        .iter()
        .find(|t| t.language == "en")
        .unwrap()
        .clone();
    let cs: Vec<String> = ds.contents[..3].iter().map(|c| c.id.clone()).collect();
    let studio_topic = uuid(4242);
    let export = root.path().join("export");
    export_for(&export, &t, &cs, &studio_topic);
    let import = |store: &str, out: &str| -> String {
        String::from_utf8(common::run_lecr([
            "feedback",
            "import",
            "--studio",
            export.to_str().unwrap(),
            "--out",
            root.path().join(out).to_str().unwrap(),
            "--store",
            store,
        ]))
        .unwrap()
    };
    let decisions = |s: &Server, topic: &str| -> serde_json::Value {
        let (code, v) = s.try_get(&format!("/api/topics/{topic}")).unwrap();
        if code == 200 {
            v["decisions"].clone()
        } else {
            json!(null)
        }
    };
    let want = json!({&cs[0]: "accept", &cs[1]: "accept", &cs[2]: "reject"});

    // SQLite: the running service follows the store's change log, so the decisions and the
    // new Studio topic show within a second, as on PostgreSQL.
    let st = root.path().join("store");
    let st = st.to_str().unwrap();
    let s = Server::start(&["--model", &model, "--data", &data, "--store", st]);
    // A decision made on lecr's page stands over Studio's.
    let (code, v) = s.post(
        "/api/feedback",
        &json!({"topic_id": t.id, "content_id": cs[0], "decision": "accept"}),
    );
    assert_eq!(code, 200, "{v}");
    let printed = import(st, "import-sqlite");
    assert!(
        printed.contains("3 decisions appended (origin studio), 0 unchanged, 1 kept from lecr's page; 3 Studio topics added"),
        "{printed}"
    );
    assert_eq!(decisions(&s, &t.id), want);
    let t0 = std::time::Instant::now();
    while decisions(&s, &studio_topic) != json!({&cs[1]: "accept"}) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "the SQLite service did not follow the import's new topic"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Again: nothing new to append.
    let printed = import(st, "import-sqlite");
    assert!(
        printed.contains("0 decisions appended (origin studio), 3 unchanged, 1 kept"),
        "{printed}"
    );
    drop(s);
    // After a restart too.
    let s = Server::start(&["--model", &model, "--data", &data, "--store", st]);
    assert_eq!(decisions(&s, &studio_topic), json!({&cs[1]: "accept"}));
    drop(s);
    let store = lecr::store::Store::open_existing(Path::new(st)).unwrap();
    let log = store.decision_log().unwrap();
    assert_eq!(
        log.iter()
            .filter(|d| d.origin == lecr::store::DecisionOrigin::Studio)
            .count(),
        3
    );

    // PostgreSQL: a running replica follows the import within a second, new topic included.
    let pg = lecr::store::cluster::Cluster::start()
        .expect("PostgreSQL (scripts/test.sh installs Debian's postgresql)");
    let url = pg.url();
    let s = Server::start(&["--model", &model, "--data", &data, "--store", &url]);
    import(&url, "import-pg");
    let t0 = std::time::Instant::now();
    while decisions(&s, &studio_topic) != json!({&cs[1]: "accept"}) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(2),
            "the replica did not follow the import: {}",
            decisions(&s, &studio_topic)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        decisions(&s, &t.id),
        json!({&cs[0]: "reject", &cs[1]: "accept", &cs[2]: "reject"})
    );
}
