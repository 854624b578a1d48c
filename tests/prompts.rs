//! Model prompts (`config_sentence_transformers.json`): topic texts get the query prompt and
//! content texts the passage prompt everywhere a text is embedded; a folder without prompts
//! embeds as before; overrides and `lecr embed --prompt` work; training saves the prompts.

mod common;
use common::server::Server;
use lecr::model::prompts::Role;
use lecr::model::{LoadOptions, SentenceModel};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The service corpus, its tiny model, and a copy of the model whose folder declares e5-style
/// prompts.
fn setup(root: &Path) -> (String, String, String) {
    let (data, model) = common::serve_corpus(root);
    let prompted = root.join("prompted");
    std::fs::create_dir_all(&prompted).unwrap();
    for e in std::fs::read_dir(&model).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), prompted.join(e.file_name())).unwrap();
        } else {
            let sub = prompted.join(e.file_name());
            std::fs::create_dir_all(&sub).unwrap();
            for f in std::fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), sub.join(f.file_name())).unwrap();
            }
        }
    }
    // Prompts made of corpus words, so the tiny word-level tokenizer knows them (an unknown
    // word would be [UNK] in either prompt).
    let (q, p) = prompt_texts(&data);
    std::fs::write(
        prompted.join("config_sentence_transformers.json"),
        json!({"prompts": {"query": q, "passage": p}, "default_prompt_name": null}).to_string(),
    )
    .unwrap();
    (data, model, prompted.display().to_string())
}

/// The query and passage prompts of [`setup`]: a topic title's first word and a content
/// title's first word, each with ": ".
fn prompt_texts(data: &str) -> (String, String) {
    let ds = lecr::data::load_dataset(Path::new(data)).unwrap();
    let first = |s: &str| s.split_whitespace().next().unwrap().to_string();
    let q = first(&ds.topics[0].title);
    let p = ds
        .contents
        .iter()
        .map(|c| first(&c.title))
        .find(|w| *w != q)
        .unwrap();
    (format!("{q} "), format!("{p} "))
}

fn load(dir: &str, opts: LoadOptions) -> SentenceModel {
    SentenceModel::load(
        dir,
        &LoadOptions {
            max_len: Some(64),
            ..opts
        },
    )
    .unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn prompts_change_tokens_and_vectors_where_declared_and_nothing_elsewhere() {
    let root = tempfile::tempdir().unwrap();
    let (data, plain_dir, prompted_dir) = setup(root.path());
    let plain = load(&plain_dir, LoadOptions::default());
    let prompted = load(&prompted_dir, LoadOptions::default());
    let (q, p) = prompt_texts(&data);
    assert_eq!(prompted.prompts.get(Role::Topic), Some(q.as_str()));
    assert_eq!(prompted.prompts.get(Role::Content), Some(p.as_str()));
    assert_eq!(plain.prompts.get(Role::Topic), None);
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let texts: Vec<String> = ds.contents[..8]
        .iter()
        .map(lecr::text::content_text)
        .collect();

    // The prompt is in the tokens.
    let with: Vec<String> = prompted.prompts.apply(Role::Content, &texts).into_owned();
    let refs: Vec<&str> = with.iter().map(String::as_str).collect();
    let raw: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (a, b) = (
        prompted.tokenizer.encode(&refs).unwrap(),
        prompted.tokenizer.encode(&raw).unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| x.len() > y.len()));

    // Vectors: the prompted model's content vector is the plain model's vector of the
    // prefixed text, and differs from the unprefixed one; topics get the other prompt.
    let pc = prompted.embed_as(Role::Content, &texts, 8, "t").unwrap();
    let by_hand = plain.embed(&with, 8, "t").unwrap();
    assert_eq!(pc, by_hand);
    let bare = plain.embed(&texts, 8, "t").unwrap();
    assert!(cosine(pc.row(0), bare.row(0)) < 0.9999);
    let pt = prompted.embed_as(Role::Topic, &texts, 8, "t").unwrap();
    assert_ne!(pt, pc);
    // Without prompts nothing changes.
    assert_eq!(plain.embed_as(Role::Topic, &texts, 8, "t").unwrap(), bare);
    assert_eq!(plain.embed_as(Role::Content, &texts, 8, "t").unwrap(), bare);
    // Overrides: a prompt name or text, "" for none.
    let off = load(
        &prompted_dir,
        LoadOptions {
            content_prompt: Some(String::new()),
            topic_prompt: Some("passage".into()),
            ..Default::default()
        },
    );
    assert_eq!(off.embed_as(Role::Content, &texts, 8, "t").unwrap(), bare);
    assert_eq!(off.embed_as(Role::Topic, &texts, 8, "t").unwrap(), pc);

    // eval: the prompted folder ranks differently from the plain one (prompts reach
    // pipeline::similarity), and the same as the plain one told the prompts by flag.
    let eval = |model: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "eval", "--data", &data, "--fold", "0", "--json", "--model", model,
        ];
        args.extend_from_slice(extra);
        serde_json::from_slice(&common::run_lecr(args)).unwrap()
    };
    let f2 = |v: &serde_json::Value| v["reports"][0]["report"]["overall"]["f2"].as_f64().unwrap();
    let (e_plain, e_prompted) = (eval(&plain_dir, &[]), eval(&prompted_dir, &[]));
    let e_flags = eval(&plain_dir, &["--topic-prompt", &q, "--content-prompt", &p]);
    assert_eq!(f2(&e_prompted), f2(&e_flags));
    assert_ne!(
        e_plain["reports"][0]["report"], e_prompted["reports"][0]["report"],
        "prompts change the ranking"
    );

    // lecr embed --texts --prompt NAME: the named prompt before every line; unknown names
    // are refused with the folder's names.
    let lines = root.path().join("lines.txt");
    std::fs::write(
        &lines,
        texts
            .iter()
            .map(|t| t.replace('\n', " "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let out = root.path().join("emb");
    common::run_lecr([
        "embed",
        "--model",
        &prompted_dir,
        "--texts",
        lines.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-len",
        "64",
        "--prompt",
        "passage",
    ]);
    let got: Vec<f32> =
        candle_core::safetensors::load(out.join("texts.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
            .into_values()
            .next()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
    let one_line: Vec<String> = texts
        .iter()
        .map(|t| format!("{p}{}", t.replace('\n', " ")))
        .collect();
    assert_eq!(got, plain.embed(&one_line, 64, "t").unwrap().data);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["embed", "--model", &prompted_dir, "--texts"])
        .arg(&lines)
        .args(["--out", out.to_str().unwrap(), "--prompt", "nope"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("passage, query"),
        "{err}"
    );
}

#[test]
fn the_service_prompts_both_sides_and_training_saves_the_prompts() {
    let root = tempfile::tempdir().unwrap();
    let (data, plain_dir, prompted_dir) = setup(root.path());
    let ds = lecr::data::load_dataset(Path::new(&data)).unwrap();
    let t = ds.topics.iter().find(|t| t.language == "en").unwrap();
    let body = json!({"topics": [{"id": "00000000-0000-4000-8000-000000000001",
        "channel_id": "00000000-0000-4000-8000-000000000002", "title": t.title,
        "description": "", "language": "en"}]});
    let top = |s: &Server| -> Vec<(String, f64)> {
        let (code, v) = s.post("/stable/recommend?override_threshold=True", &body);
        assert_eq!(code, 200, "{v}");
        v["topics"][0]["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .take(5)
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["similarity"].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    let run = |args: &[&str]| {
        let s = Server::start(args);
        let v = top(&s);
        drop(s);
        v
    };
    let (q, p) = prompt_texts(&data);
    let prompted = run(&["--model", &prompted_dir, "--data", &data]);
    let by_flag = run(&[
        "--model",
        &plain_dir,
        "--data",
        &data,
        "--topic-prompt",
        &q,
        "--content-prompt",
        &p,
    ]);
    let plain = run(&["--model", &plain_dir, "--data", &data]);
    assert_eq!(
        prompted, by_flag,
        "the folder's prompts and the flags give the same answers"
    );
    assert_ne!(prompted, plain, "prompts change the answers");

    // Training keeps the folder's prompts, or the ones it was told, in the folders it saves.
    use lecr::train::config::TrainConfig;
    use lecr::train::trainer::{RunOptions, Trainer};
    std::env::set_var("LECR_NO_PROGRESS", "1");
    let train = |out: &str, topic_prompt: Option<&str>| -> PathBuf {
        let run = root.path().join(out);
        Trainer::new(TrainConfig {
            data: data.clone(),
            model: prompted_dir.clone(),
            max_len: 32,
            batch_size: 24,
            epochs: 1,
            lr: 1e-3,
            warmup_epochs: 0.0,
            pools: vec![],
            output: run.display().to_string(),
            topic_prompt: topic_prompt.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
        .fit(&RunOptions::default())
        .unwrap();
        run.join("best")
    };
    let kept = load(
        train("kept", None).to_str().unwrap(),
        LoadOptions::default(),
    );
    assert_eq!(kept.prompts.get(Role::Topic), Some(q.as_str()));
    assert_eq!(kept.prompts.get(Role::Content), Some(p.as_str()));
    let told = load(
        train("told", Some("topic: ")).to_str().unwrap(),
        LoadOptions::default(),
    );
    assert_eq!(told.prompts.get(Role::Topic), Some("topic: "));
    assert_eq!(told.prompts.get(Role::Content), Some(p.as_str()));
}
