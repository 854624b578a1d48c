//! `lecr bench serve --reranker A --cross-reranker B`: what the second stage costs a Studio
//! recommend, and what its cross-encoder adds on top. Each reranker gets its own server on the
//! store the main run filled (with `--data`, for the tree context), the same request bodies
//! and client counts; the cross-encoder's pairs per second come from the server's own
//! `/metrics` (pairs read over the seconds its batches took).

use super::serve::{load, LoadResult, ServerProcess};
use anyhow::Result;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One server's run: its label, a row per client count, and the cross-encoder's figures when
/// it has one.
pub struct RerankRun {
    pub label: String,
    pub loads: Vec<LoadResult>,
    /// (pairs read, seconds of its batches) from `/metrics`.
    pub cross: Option<(f64, f64)>,
}

/// A counter or a histogram's `_sum` of a `/metrics` text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Loads a server started by `cmd` with `--reranker dir` at each client count.
pub fn run_one(
    mut cmd: Command,
    label: &str,
    dir: &Path,
    bodies: &[String],
    clients: &[usize],
    seconds: f64,
) -> Result<RerankRun> {
    cmd.arg("--reranker").arg(dir);
    let server = ServerProcess::start(cmd, label, Duration::from_secs(3600))?;
    let mut loads = Vec::new();
    for &c in clients {
        let r = load(&server.base, bodies, c, seconds);
        println!(
            "  {label}, {c} clients: {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms",
            r.per_second, r.p50_ms, r.p99_ms
        );
        loads.push(r);
    }
    let text = ureq::get(&format!("{}/metrics", server.base))
        .call()?
        .into_string()?;
    let cross = metric(&text, "lecr_cross_pairs_total")
        .zip(metric(&text, "lecr_cross_batch_seconds_sum"))
        .filter(|(pairs, _)| *pairs > 0.0);
    server.stop()?;
    Ok(RerankRun {
        label: label.to_string(),
        loads,
        cross,
    })
}

/// The table: each run's rows, with the ratio of its latency to the run before it at the same
/// client count (reranker to retriever only, cross-encoder to reranker).
pub fn render(runs: &[RerankRun]) -> String {
    let mut s = String::from(
        "| server | clients | req/s | p50 ms | p99 ms | errors | p50 / run above | p99 / run above |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (k, run) in runs.iter().enumerate() {
        let before = k.checked_sub(1).map(|b| &runs[b]);
        for r in &run.loads {
            let base = before.and_then(|f| f.loads.iter().find(|b| b.clients == r.clients));
            let ratio =
                |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}x", a / b));
            s.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |\n",
                run.label,
                r.clients,
                r.per_second,
                r.p50_ms,
                r.p99_ms,
                r.errors,
                ratio(r.p50_ms, base.map(|b| b.p50_ms)),
                ratio(r.p99_ms, base.map(|b| b.p99_ms)),
            ));
        }
    }
    for run in runs {
        if let Some((pairs, secs)) = run.cross {
            s.push_str(&format!(
                "\n{}: the cross-encoder read {pairs:.0} pairs in {secs:.1} s of batches: {:.1} \
                 pairs/s (batched across the waiting requests)\n",
                run.label,
                pairs / secs.max(1e-9)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_exact_name_and_ratios_are_to_the_run_above() {
        let text = "# HELP x\nlecr_cross_pairs_total 120\nlecr_cross_batch_seconds_sum 2.5\n\
                    lecr_cross_batch_seconds_count 7\n";
        assert_eq!(metric(text, "lecr_cross_pairs_total"), Some(120.0));
        assert_eq!(metric(text, "lecr_cross_batch_seconds_sum"), Some(2.5));
        assert_eq!(metric(text, "lecr_cross_batch_seconds"), None);
        let row = |p50: f64, p99: f64| LoadResult {
            clients: 16,
            requests: 10,
            errors: 0,
            per_second: 1.0,
            p50_ms: p50,
            p95_ms: p99,
            p99_ms: p99,
        };
        let table = render(&[
            RerankRun {
                label: "reranker".into(),
                loads: vec![row(10.0, 20.0)],
                cross: None,
            },
            RerankRun {
                label: "reranker + cross-encoder".into(),
                loads: vec![row(15.0, 30.0)],
                cross: Some((120.0, 2.5)),
            },
        ]);
        assert!(
            table.contains(
                "| reranker + cross-encoder | 16 | 1.0 | 15.0 | 30.0 | 0 | 1.50x | 1.50x |"
            ),
            "{table}"
        );
        assert!(table.contains("48.0 pairs/s"), "{table}");
    }
}
