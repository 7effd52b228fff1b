//! `ember status RUN_DIR`: one row per stage of a run — done / stale / missing / failed, its
//! fingerprint, how long it took and its headline number — read from the run's `config.toml`,
//! the stages' manifests and `events.jsonl`.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;

use crate::config;
use crate::error::usage;
use crate::runner::{self, Planned};

/// The state of one stage of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Finished, current and its artifacts verify.
    Done,
    /// Finished once, but its config, inputs or artifacts changed (or an upstream stage did).
    Stale,
    /// Never finished.
    Missing,
    /// Its last attempt failed.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Done => "done",
            State::Stale => "stale",
            State::Missing => "missing",
            State::Failed => "failed",
        }
    }
}

/// One row of `ember status`.
#[derive(Debug, Clone)]
pub struct Row {
    pub stage: &'static str,
    pub state: State,
    pub fingerprint: Option<String>,
    pub seconds: Option<f64>,
    pub headline: Option<(String, f64)>,
    pub note: String,
}

/// The status of every stage of the run in `run` (which must hold `config.toml`).
pub fn rows(run: &Path) -> Result<Vec<Row>> {
    let cfg_path = run.join(runner::CONFIG);
    if !cfg_path.exists() {
        return Err(usage(format!(
            "{} is not a run directory (no {})",
            run.display(),
            runner::CONFIG
        )));
    }
    let cfg = config::load_saved(&cfg_path)?;
    let events = runner::read_events(run);
    let plans = runner::plan(&cfg, run);
    let mut not_done: BTreeSet<PathBuf> = BTreeSet::new();
    let mut out = Vec::new();
    for p in &plans {
        let row = row(p, &events, &not_done)?;
        if row.state != State::Done {
            not_done.insert(p.dir.clone());
        }
        out.push(row);
    }
    Ok(out)
}

fn row(p: &Planned, events: &[runner::Event], not_done: &BTreeSet<PathBuf>) -> Result<Row> {
    let manifest = crate::stage::read_manifest(&p.dir).ok().flatten();
    let last = events
        .iter()
        .rev()
        .find(|e| e.stage == p.name && e.event != "skip");
    let failed = last.filter(|e| e.event == "failed");
    let upstream_changed = p.inputs.iter().find(|i| not_done.contains(*i));
    let (state, note) = match (&manifest, upstream_changed) {
        (None, _) => match failed {
            Some(e) => (State::Failed, first_line(e.error.as_deref().unwrap_or(""))),
            None => (State::Missing, String::new()),
        },
        (Some(_), Some(up)) => (State::Stale, format!("upstream {} changed", file_name(up))),
        (Some(_), None) => match p.check()? {
            Ok(_) => (State::Done, String::new()),
            Err(reason) => match failed
                .filter(|e| Some(&e.fingerprint) == p.expected_fingerprint().ok().as_ref())
            {
                Some(e) => (State::Failed, first_line(e.error.as_deref().unwrap_or(""))),
                None => (State::Stale, reason),
            },
        },
    };
    Ok(Row {
        stage: p.name,
        state,
        fingerprint: manifest.as_ref().map(|m| m.fingerprint.clone()),
        seconds: manifest.as_ref().map(|m| m.duration_s),
        headline: manifest.as_ref().and_then(|m| headline(p.name, &m.metrics)),
        note,
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(80).collect()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The number that sums a stage up: the first of the stage's preferred metric keys present
/// (dotted paths into the metrics JSON), else its first scalar metric.
pub fn headline(stage: &str, metrics: &serde_json::Value) -> Option<(String, f64)> {
    if let Some(h) = derived_headline(stage, metrics) {
        return Some(h);
    }
    let preferred: &[&str] = match stage {
        "data" | "synth" | "ingest" => &["kept", "rows_kept", "splits.train", "pairs"],
        "tokenizer" => &["vocab_size"],
        "sft" => &["val_loss", "final_val_loss", "loss"],
        "reward" => &["test.accuracy", "val.accuracy", "accuracy", "eval.accuracy"],
        "rank" => &["best_of_16_gold", "best_of_n_gold", "gold"],
        "finetune" => &["final_gold", "gold"],
        "refine" => &["gold", "final_gold"],
        "compare" => &["refine_minus_rank_gold", "delta_gold"],
        "eval" => &["accuracy"],
        "report" => &["stages"],
        _ => &[],
    };
    let scalars = scalars(metrics);
    for key in preferred {
        if let Some(v) = lookup(metrics, key).and_then(serde_json::Value::as_f64) {
            return Some((key.to_string(), v));
        }
    }
    scalars
        .into_iter()
        .find_map(|(k, v)| v.parse::<f64>().ok().map(|x| (k, x)))
}

/// Headlines computed from a stage's tables: best-of-N gold (rank), held-out gold gain of the
/// last round (finetune), refine's gold minus best-of-N's at the largest budget (compare).
fn derived_headline(stage: &str, m: &serde_json::Value) -> Option<(String, f64)> {
    use serde_json::Value;
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    match stage {
        "rank" => {
            let last = m.get("rows")?.as_array()?.last()?;
            let n = num(last, "n")?;
            let (what, v) = match num(last, "gold") {
                Some(g) => ("gold", g),
                None => ("energy", num(last, "energy")?),
            };
            Some((format!("best-of-{n} {what}"), v))
        }
        "finetune" => {
            let f = m.get("final")?;
            match num(f, "gold_gain") {
                Some(g) => Some(("gold gain".into(), g)),
                None => Some(("sample energy".into(), num(f, "sample_energy")?)),
            }
        }
        "compare" => {
            let cells = m.get("cells")?.as_array()?;
            let budget = cells
                .iter()
                .filter_map(|c| num(c, "budget"))
                .fold(0.0, f64::max);
            let at = |method: &str, metric: &str| {
                cells
                    .iter()
                    .find(|c| {
                        num(c, "budget") == Some(budget)
                            && c.get("method").and_then(Value::as_str) == Some(method)
                    })
                    .and_then(|c| c.get(metric)?.get("mean")?.as_f64())
            };
            let metric = if at("refine", "gold").is_some() {
                "gold"
            } else {
                "energy"
            };
            let d = at("refine", metric)? - at("best-of-n", metric)?;
            Some((format!("refine − best-of-n {metric} @{budget}"), d))
        }
        _ => None,
    }
}

fn lookup<'a>(v: &'a serde_json::Value, dotted: &str) -> Option<&'a serde_json::Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

/// Scalar leaves of a JSON value as `(dotted.key, text)`, in document order.
pub fn scalars(v: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(v: &serde_json::Value, prefix: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, x) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(x, &key, out);
                }
            }
            serde_json::Value::Number(n) => out.push((
                prefix.to_string(),
                n.as_f64().map(fmt_num).unwrap_or_else(|| n.to_string()),
            )),
            serde_json::Value::Bool(b) => out.push((prefix.to_string(), b.to_string())),
            serde_json::Value::String(s) if s.len() <= 60 => {
                out.push((prefix.to_string(), s.clone()))
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// A number with 4 significant digits, integers as integers.
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x.abs() >= 1000.0 || x.abs() < 0.001 {
        format!("{x:.4e}")
    } else {
        format!("{:.4}", x)
    }
}

/// `ember status RUN_DIR`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run directory written by `ember run` or `ember demo`.
    pub run_dir: PathBuf,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    print_table(&args.run_dir)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the status table of a run directory on stdout.
pub fn print_table(run: &Path) -> Result<()> {
    let rows = rows(run)?;
    println!(
        "{:<10} {:<8} {:<13} {:>9}  headline",
        "stage", "state", "fingerprint", "seconds"
    );
    for r in &rows {
        let fp = r
            .fingerprint
            .as_deref()
            .map(|f| &f[..12.min(f.len())])
            .unwrap_or("-");
        let secs = r
            .seconds
            .map(|s| format!("{s:.1}"))
            .unwrap_or_else(|| "-".into());
        let head = r
            .headline
            .as_ref()
            .map(|(k, v)| format!("{k} = {}", fmt_num(*v)))
            .unwrap_or_else(|| "-".into());
        let note = if r.note.is_empty() {
            String::new()
        } else {
            format!("  ({})", r.note)
        };
        println!(
            "{:<10} {:<8} {:<13} {:>9}  {head}{note}",
            r.stage,
            r.state.as_str(),
            fp,
            secs
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_num_hand_cases() {
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.81234), "0.8123");
        assert_eq!(fmt_num(12345.5), "1.2346e4");
    }

    #[test]
    fn headline_prefers_stage_keys_then_first_scalar() {
        let m = serde_json::json!({"loss": 1.5, "test": {"accuracy": 0.9}});
        assert_eq!(headline("reward", &m), Some(("test.accuracy".into(), 0.9)));
        assert_eq!(headline("other", &m), Some(("loss".into(), 1.5)));
        assert_eq!(headline("other", &serde_json::json!({"name": "x"})), None);
    }
}
