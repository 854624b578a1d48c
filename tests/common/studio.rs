//! Studio-shaped requests built from a data folder, and `lecr predict`'s answers to compare
//! the service with.

use super::server::{ids, Server};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `lecr predict ARGS --out FILE`: each sample topic's selected contents.
pub fn predict(root: &Path, name: &str, args: &[&str]) -> HashMap<String, HashSet<String>> {
    let sub = root.join(name);
    let mut all = vec!["predict"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", sub.to_str().unwrap()]);
    super::run_lecr(all);
    std::fs::read_to_string(&sub)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let (t, cs) = l.split_once(',').unwrap();
            let set = cs
                .split(' ')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            (t.to_string(), set)
        })
        .collect()
}

/// The sample topics as Studio sends them, with their ancestors: new UUIDs, or (`own_ids`)
/// the data folder's ids and channels, so the reranker's tree context finds them.
pub fn studio_topics(ds: &lecr::data::Dataset, own_ids: bool) -> Vec<(String, Value)> {
    let index = &ds.topic_index;
    let forest = lecr::data::tree::Forest::build(&ds.topics, index);
    let id = |j: usize| {
        if own_ids {
            ds.topics[j].id.clone()
        } else {
            uuid()
        }
    };
    ds.sample_topics
        .iter()
        .map(|tid| {
            let i = index[tid];
            let t = &ds.topics[i];
            let ancestors: Vec<Value> = forest.breadcrumb(i)[1..]
                .iter()
                .map(|&j| {
                    json!({"id": id(j), "title": ds.topics[j].title,
                        "description": ds.topics[j].description, "level": ds.topics[j].level})
                })
                .collect();
            let channel = if own_ids { t.channel.clone() } else { uuid() };
            let topic = json!({"id": id(i), "channel_id": channel, "title": t.title,
                "description": t.description, "language": t.language, "ancestors": ancestors});
            (tid.clone(), topic)
        })
        .collect()
}

pub fn recommend(s: &Server, topics: &[(String, Value)]) -> HashMap<String, HashSet<String>> {
    let body: Vec<&Value> = topics.iter().map(|t| &t.1).collect();
    let (code, v) = s.post("/stable/recommend", &json!({ "topics": body }));
    assert_eq!(code, 200, "{v}");
    topics
        .iter()
        .zip(v["topics"].as_array().unwrap())
        .map(|((tid, _), got)| (tid.clone(), ids(got).into_iter().collect()))
        .collect()
}

/// The data folder without the links of the sample topics: `predict` hides the links of the
/// topics it predicts from their tree context, the service hides only the requested topic's,
/// so the two see the same links only when the predicted topics have none.
pub fn without_sample_links(data: &str, out: &Path) -> String {
    let ds = lecr::data::load_dataset(Path::new(data)).unwrap();
    let sample: HashSet<&str> = ds.sample_topics.iter().map(String::as_str).collect();
    std::fs::create_dir_all(out).unwrap();
    for e in std::fs::read_dir(data).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = if name == "correlations.csv" {
            let mut lines = text.lines();
            let mut kept = vec![lines.next().unwrap()];
            kept.extend(lines.filter(|l| !sample.contains(l.split(',').next().unwrap())));
            kept.join("\n") + "\n"
        } else {
            text
        };
        std::fs::write(out.join(name), text).unwrap();
    }
    out.display().to_string()
}

/// A server and `lecr predict` with the same reranker (trained on fold 0 of `data`), over the
/// data folder without the sample topics' links: the held-out sample topics as Studio sends
/// them, and `predict`'s answers to them. Asserts the server answers them in one request as
/// `predict` does, and that at least half of the answers are not empty.
pub struct Reranked {
    pub server: Server,
    pub topics: Vec<(String, Value)>,
    pub predicted: HashMap<String, HashSet<String>>,
}

pub fn serve_reranked_as_predict(
    root: &Path,
    data: &str,
    model: &str,
    reranker: &str,
    csv: &str,
) -> Reranked {
    let known = without_sample_links(data, &root.join("known"));
    let args = [
        "--data",
        &known,
        "--model",
        model,
        "--model",
        "lexical",
        "--reranker",
        reranker,
    ];
    let predicted = predict(root, csv, &args);
    let server = Server::start(&args);
    let ds = lecr::data::load_dataset(Path::new(&known)).unwrap();
    // The topics the reranker did not train on (`predict` scores those of fold 0 out of fold).
    let topics: Vec<(String, Value)> = studio_topics(&ds, true)
        .into_iter()
        .filter(|(tid, _)| ds.topic(tid).unwrap().fold != Some(0))
        .collect();
    assert!(topics.len() >= 10);
    let served = recommend(&server, &topics);
    let mut nonempty = 0;
    for (tid, _) in &topics {
        assert_eq!(served[tid], predicted[tid], "topic {tid}");
        nonempty += !served[tid].is_empty() as usize;
    }
    assert!(
        nonempty >= topics.len() / 2,
        "{nonempty} of {}",
        topics.len()
    );
    Reranked {
        server,
        topics,
        predicted,
    }
}
