//! `feedback export` (curators' decisions from a service store as CSV files) and `feedback
//! simulate` (a curator played from held-back truth, for experiments).

use anyhow::Result;
use clap::{Args, Subcommand};
use lecr::store::decisions::{decided_items, split_decisions};
use lecr::store::{DecisionKind, DecisionOrigin, NewDecision, Store};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum FeedbackCmd {
    /// Write a service store's current decisions as CSV: accepted links as `correlations.csv`
    /// (Kaggle layout, merge-ready), rejected ones as `rejected.csv` (same columns), the whole
    /// log (undos included) as `decisions.csv`, and the Studio topics (with their ancestors)
    /// and stored contents the decisions name as `topics.csv` and `content.csv`.
    Export(ExportArgs),
    /// Read Kolibri Studio's recommendation feedback (a `psql` export of its
    /// RecommendationsEvent and RecommendationsInteractionEvent tables, see
    /// docs/studio-feedback.md) and write it in `export`'s layout: imported items as
    /// `correlations.csv`, hard negatives as `rejected.csv`, weak ones as `weak.csv`, every kept
    /// action as `decisions.csv`, the event topics and item texts as `topics.csv`/`content.csv`,
    /// and `report.md`/`report.svg` (the deployed recommender's online quality).
    Import(ImportArgs),
    /// Play a curator from the truth of a data folder (for experiments): for a share of the
    /// topics of --fold, review a model's top --review recommendations, accepting the true ones
    /// and rejecting the rest, into a store (as on lecr's page) or into a Studio export (as in
    /// Studio: imports, rejections with reasons, previews, re-mounted lists); the reviewed
    /// topics' ids go to `reviewed-topics.txt` beside it (for `lecr eval --skip-topics`).
    Simulate(SimulateArgs),
}

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The service's --store: its folder (holding lecr.sqlite) or its `postgres://` URL.
    #[arg(long, env = "LECR_STORE", hide_env_values = true)]
    store: String,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The export folder: recommendations_events.csv, interaction_events.csv, nodes.csv, and
    /// optionally public_nodes.csv, topic_children.csv, rec_cache.csv.
    #[arg(long)]
    studio: PathBuf,
    /// The folder to write (new, empty, or an earlier import's, which is replaced whole).
    #[arg(long)]
    out: PathBuf,
    /// Also record the decisions in a service store's log (origin `studio`): its folder or
    /// `postgres://` URL. Pairs a curator decided on lecr's page keep that decision.
    #[arg(long, env = "LECR_STORE", hide_env_values = true)]
    store: Option<String>,
    /// Leave out events before this date (`2026-02-18`) or time (RFC 3339), UTC.
    #[arg(long)]
    since: Option<String>,
    /// Leave out events of Studio admins (needs the export's `user_is_admin` column).
    #[arg(long)]
    skip_admins: bool,
    /// Also train on weak negatives: they go to rejected.csv (and the store) too.
    #[arg(long)]
    weak: bool,
    /// A Studio message file (`contentcuration/locale/<locale>/LC_MESSAGES/
    /// contentcuration-messages.json`) whose rejection labels to recognise besides the
    /// built-in English ones; repeat for each locale your curators use.
    #[arg(long = "labels")]
    labels: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct SimulateArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    fold: i32,
    /// The model whose recommendations the curator reviews.
    #[arg(long = "model", required = true)]
    models: Vec<String>,
    /// Share of the fold's topics reviewed.
    #[arg(long, default_value_t = 0.5)]
    share: f64,
    /// Recommendations reviewed per topic.
    #[arg(long, default_value_t = 20)]
    review: usize,
    /// The store to write the decisions into (created if missing).
    #[arg(
        long,
        required_unless_present = "studio_export",
        conflicts_with = "studio_export"
    )]
    store: Option<PathBuf>,
    /// Write what a Studio curator would have done as a Studio export in this folder instead
    /// (for `lecr feedback import`; the data folder needs Studio's ids: `lecr synth
    /// --studio-ids`).
    #[arg(long)]
    studio_export: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long, default_value_t = 96)]
    max_len: usize,
}

pub(crate) fn feedback(c: FeedbackCmd) -> Result<i32> {
    match c {
        FeedbackCmd::Export(a) => export(a),
        FeedbackCmd::Import(a) => import(a),
        FeedbackCmd::Simulate(a) => simulate(a),
    }
}

fn export(a: ExportArgs) -> Result<i32> {
    let store = Store::open_existing_at(&lecr::store::Location::parse(&a.store))?;
    let current = store.decisions(None)?;
    let log = store.decision_log()?;
    let (accepted, rejected) = split_decisions(&current);
    for (name, side) in [("correlations.csv", &accepted), ("rejected.csv", &rejected)] {
        lecr::io::write_atomic(&a.out.join(name), |w| {
            let mut w = lecr::io::csv_writer(w);
            w.write_record(["topic_id", "content_ids"])?;
            for (t, cs) in side {
                w.write_record([t.as_str(), &cs.join(" ")])?;
            }
            w.flush()?;
            Ok(())
        })?;
    }
    lecr::io::write_atomic(&a.out.join("decisions.csv"), |w| {
        let mut w = lecr::io::csv_writer(w);
        w.write_record([
            "seq",
            "topic_id",
            "content_id",
            "decision",
            "model",
            "margin",
            "origin",
            "time",
        ])?;
        for d in &log {
            w.write_record([
                d.seq.to_string(),
                d.topic_id.clone(),
                d.content_id.clone(),
                d.kind.to_string(),
                d.model.clone(),
                d.margin.map(|m| m.to_string()).unwrap_or_default(),
                d.origin.as_str().to_string(),
                d.time.clone(),
            ])?;
        }
        w.flush()?;
        Ok(())
    })?;
    // The Studio topics and contents they name, so training can use decisions on topics that
    // are not in its data folder.
    let (topics, contents) = decided_items(&store)?;
    lecr::data::write::write_topics(&a.out.join("topics.csv"), &topics)?;
    lecr::data::write::write_contents(&a.out.join("content.csv"), &contents)?;
    let n = |m: &std::collections::BTreeMap<String, Vec<String>>| -> usize {
        m.values().map(Vec::len).sum()
    };
    println!(
        "{} accepted links ({} topics), {} rejected ({} topics), {} logged decisions",
        n(&accepted),
        accepted.len(),
        n(&rejected),
        rejected.len(),
        log.len()
    );
    println!(
        "{} Studio topics (with ancestors) and {} stored contents named by decisions",
        topics.len(),
        contents.len()
    );
    println!(
        "wrote {} (correlations.csv, rejected.csv, decisions.csv, topics.csv, content.csv)",
        a.out.display()
    );
    Ok(0)
}

/// `--since`: a date (midnight UTC) or an RFC 3339 time.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    lecr::studio::feedback::read::timestamp(s).ok_or_else(|| {
        anyhow::anyhow!(
            "--since `{s}`: expected a date (2026-02-18) or a time (2026-02-18T09:00:00Z)"
        )
    })
}

fn import(a: ImportArgs) -> Result<i32> {
    use lecr::studio::feedback::{self, output, Label};
    let mut options = feedback::Options {
        since: a.since.as_deref().map(parse_since).transpose()?,
        skip_admins: a.skip_admins,
        weak: a.weak,
        ..Default::default()
    };
    for p in &a.labels {
        let n = options.labels.add_studio_messages(p)?;
        println!("{}: {n} rejection labels", p.display());
    }
    // The store first: a wrong --store fails before anything is written.
    let store = match &a.store {
        Some(url) => {
            let loc = lecr::store::Location::parse(url);
            let store = Store::open_existing_at(&loc)?;
            Some((loc, store))
        }
        None => None,
    };
    let started = std::time::Instant::now();
    let im = feedback::import(&a.studio, options)?;
    let cap = lecr::serve::limits::Limits::DEFAULT.max_text_chars;
    output::write_folder(&im, &a.out, cap)?;
    let c = &im.counts;
    let count = |l: Label| im.pairs.values().filter(|p| p.label == l).count();
    println!(
        "{} events kept of {} ({} before --since, {} of admins); {} interactions kept of {} \
         ({} orphans dropped, {} with no content id)",
        im.events.len(),
        c.events_read,
        c.events_before_since,
        c.events_of_admins,
        im.decisions.len(),
        c.interactions_read,
        c.orphans,
        c.unresolved_content
    );
    println!(
        "pairs: {} positive, {} hard negative, {} weak negative; {} conflicts ({:.1} s)",
        count(Label::Positive),
        count(Label::Hard),
        count(Label::Weak),
        im.pairs.values().filter(|p| p.conflict).count(),
        started.elapsed().as_secs_f64()
    );
    println!("wrote {} ({})", a.out.display(), output::FILES.join(", "));
    if let Some((loc, mut store)) = store {
        let r = output::record(&im, &mut store, cap)?;
        println!(
            "store {}: {} decisions appended (origin studio), {} unchanged, {} kept from \
             lecr's page; {} Studio topics added",
            loc, r.appended, r.unchanged, r.page_kept, r.topics_added
        );
    }
    Ok(0)
}

fn simulate(a: SimulateArgs) -> Result<i32> {
    anyhow::ensure!(a.share > 0.0 && a.share <= 1.0, "--share must be in (0, 1]");
    let ds = lecr::data::load_dataset(&a.data)?;
    let truth = lecr::select::truth(&ds);
    let mut topics: Vec<usize> = (0..ds.topics.len())
        .filter(|&t| ds.topics[t].fold == Some(a.fold) && truth.contains_key(&t))
        .collect();
    anyhow::ensure!(
        !topics.is_empty(),
        "{}: fold {} has no topics with links (run `lecr split` first)",
        a.data.display(),
        a.fold
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    topics.shuffle(&mut rng);
    topics.truncate(((topics.len() as f64 * a.share).round() as usize).max(1));
    topics.sort_unstable();
    let sources: Vec<_> = a
        .models
        .iter()
        .map(|m| lecr::pipeline::Source::from_model_arg(m))
        .collect();
    let settings = lecr::pipeline::EmbedSettings {
        max_len: a.max_len,
        ..Default::default()
    };
    let sim = lecr::pipeline::similarity(&ds, &sources, &topics, &settings)?;
    let ranked = lecr::select::rank(&ds, &topics, sim.as_ref(), a.review)?;
    let model = format!("simulated curator over {}", sim.name());
    let empty = HashSet::new();
    let reviews: Vec<(usize, Vec<(u32, bool)>)> = topics
        .iter()
        .zip(&ranked)
        .map(|(&t, r)| {
            let tr = truth.get(&t).unwrap_or(&empty);
            (t, r.iter().map(|&(c, _)| (c, tr.contains(&c))).collect())
        })
        .collect();
    let (acc, rej): (usize, usize) = reviews.iter().fold((0, 0), |(a, r), (_, v)| {
        let yes = v.iter().filter(|x| x.1).count();
        (a + yes, r + v.len() - yes)
    });
    let dir = if let Some(out) = &a.studio_export {
        studio_curator(&ds, &reviews, out, a.seed)?;
        out.clone()
    } else {
        let dir = a
            .store
            .clone()
            .expect("clap requires --store or --studio-export");
        let mut store = Store::open(Some(&dir))?;
        let mut all = Vec::new();
        for (t, v) in &reviews {
            for &(c, yes) in v {
                all.push(NewDecision {
                    topic_id: &ds.topics[*t].id,
                    content_id: &ds.contents[c as usize].id,
                    kind: if yes {
                        DecisionKind::Accept
                    } else {
                        DecisionKind::Reject
                    },
                    model: &model,
                    margin: None,
                    origin: DecisionOrigin::Page,
                });
            }
        }
        store.record_decisions(&all)?;
        dir
    };
    let list = dir.join("reviewed-topics.txt");
    lecr::io::write_atomic(&list, |w| {
        for &t in &topics {
            writeln!(w, "{}", ds.topics[t].id)?;
        }
        Ok(())
    })?;
    println!(
        "reviewed {} of fold {}'s topics (top {} each): {acc} accepted, {rej} rejected",
        topics.len(),
        a.fold,
        a.review
    );
    if a.studio_export.is_some() {
        println!(
            "wrote the Studio export {} and {}",
            dir.display(),
            list.display()
        );
    } else {
        println!(
            "wrote {} (lecr.sqlite) and {}",
            dir.display(),
            list.display()
        );
    }
    Ok(0)
}

/// Writes what a Studio curator reviewing `reviews` (topic, its list with each item's truth)
/// would leave in Studio's tables: per topic a list shown (a fifth of them shown twice, as a
/// re-mount does, the first time only previewed), previews, IMPORTED for the true items (and
/// their copies in the folder), REJECTED for the others with reasons that all mean "not
/// relevant" (no reason, one, or several including the label with a comma), so the labels
/// equal the page curator's.
fn studio_curator(
    ds: &lecr::data::Dataset,
    reviews: &[(usize, Vec<(u32, bool)>)],
    out: &std::path::Path,
    seed: u64,
) -> Result<()> {
    use lecr::studio::feedback::nodes::NodeText;
    use lecr::studio::feedback::reasons::Reason;
    use lecr::studio::feedback::simulate::{english_label, EventSpec, ExportWriter};
    use lecr::studio::request::{AncestorIn, TopicIn};
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x57d1);
    let mut w = ExportWriter::new(seed);
    let label = |r| english_label(r).expect("an English label");
    let reasons: Vec<String> = vec![
        "REJECTED".into(),
        label(Reason::NotRelated).into(),
        format!(
            "{}, {}",
            label(Reason::NotSuitableForCurriculum),
            label(Reason::TooAdvanced)
        ),
        format!("{}, {}", label(Reason::NotSpecific), label(Reason::Other)),
        label(Reason::TooBasic).into(),
    ];
    let mut time = chrono::DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z")
        .expect("a time")
        .with_timezone(&chrono::Utc);
    let uuid_ok = |id: &str| uuid::Uuid::try_parse(id).is_ok();
    for (k, (t, list)) in reviews.iter().enumerate() {
        let topic = &ds.topics[*t];
        anyhow::ensure!(
            uuid_ok(&topic.id),
            "topic id `{}` is not a UUID: a Studio export needs Studio's ids (`lecr synth --studio-ids`)",
            topic.id
        );
        let mut ancestors = Vec::new();
        let mut p = topic.parent.as_deref().and_then(|id| ds.topic(id));
        while let Some(a) = p {
            ancestors.push(AncestorIn {
                id: Some(a.id.clone()),
                title: a.title.clone(),
                description: a.description.clone(),
                level: a.level.unwrap_or(0) as i64,
            });
            p = a.parent.as_deref().and_then(|id| ds.topic(id));
        }
        ancestors.reverse();
        let request = TopicIn {
            id: topic.id.clone(),
            title: topic.title.clone(),
            description: topic.description.clone(),
            language: topic.language.clone(),
            channel_id: Some(topic.channel.clone()),
            ancestors,
        };
        let mut items = Vec::with_capacity(list.len());
        for &(c, _) in list {
            let content = &ds.contents[c as usize];
            anyhow::ensure!(
                content.id.len() == 32 && uuid_ok(&content.id),
                "content id `{}` is not 32 hex digits: a Studio export needs Studio's ids \
                 (`lecr synth --studio-ids`)",
                content.id
            );
            w.library_node(
                &content.id,
                NodeText {
                    title: content.title.clone(),
                    description: content.description.clone(),
                    kind: content.kind.clone(),
                    language: content.language.clone(),
                },
            );
            items.push(content.id.clone());
        }
        let user = 1 + (k % 7) as i64;
        let spec = |time| EventSpec {
            topic: &request,
            items: &items,
            user,
            admin: false,
            time,
            override_threshold: false,
        };
        time += chrono::Duration::minutes(3);
        if rng.gen_bool(0.2) {
            let first = w.event(&spec(time));
            time += chrono::Duration::seconds(20);
            w.interaction(&first, &items[0], "PREVIEWED", "PREVIEWED", None, time);
            time += chrono::Duration::minutes(1);
        }
        let event = w.event(&spec(time));
        for (pos, (&(_, yes), c)) in list.iter().zip(&items).enumerate() {
            w.cached_rank(&topic.id, c, pos as i64 + 1, time);
            time += chrono::Duration::seconds(5);
            if rng.gen_bool(0.3) {
                w.interaction(&event, c, "PREVIEWED", "PREVIEWED", None, time);
            }
            if !yes {
                let reason = &reasons[rng.gen_range(0..reasons.len())];
                let other = reason.ends_with("Other").then_some("not for this class");
                w.interaction(&event, c, "REJECTED", reason, other.or(Some("")), time);
            }
        }
        time += chrono::Duration::seconds(30);
        for (&(_, yes), c) in list.iter().zip(&items) {
            if yes {
                w.interaction(&event, c, "IMPORTED", "IMPORTED", None, time);
                w.copy_into(&topic.id, c, time);
            }
        }
    }
    w.write(out)
}
