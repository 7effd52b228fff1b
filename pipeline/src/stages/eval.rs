//! `ember reward eval`, and the `eval` stage of a run: the energy model on held-out preference
//! tables (a run evaluates its test split). For each table: pairwise accuracy, energy gap,
//! calibration (ECE), accuracy per source, the model against the choose-the-longer-answer
//! heuristic with paired bootstrap 95% CIs over pairs, and on synth tables the same against the
//! noise-free gold order ([`reward::eval::evaluate_table`]). Writes `eval.json` (one report per
//! table) and `energies.parquet` (E⁺ and E⁻ of every pair, for analyses of one's own).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use polars::prelude::{Column, DataFrame};
use reward::eval::{evaluate_table, TableEval, TableEvalConfig};
use reward::EnergyScorer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, CommonArgs, OutArg, Stage};

pub const EVAL: &str = "eval.json";
pub const ENERGIES: &str = "energies.parquet";

/// The `[eval]` section of a run config, and the flags of `ember reward eval`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Pairs scored together.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Bootstrap resamples of the confidence intervals.
    #[arg(long, default_value_t = Config::default().resamples)]
    pub resamples: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch: 32,
            resamples: 1000,
        }
    }
}

/// Upstream artifacts: the energy model and the tables it is evaluated on.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// Model directory from `ember reward train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Preference tables (a directory means its val.parquet and test.parquet).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
}

/// The stage: `eval.json` and `energies.parquet`.
impl Stage for Config {
    const NAME: &'static str = "eval";
    type Inputs = Inputs;

    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        [&[inputs.model.clone()][..], &inputs.data].concat()
    }

    fn check(&self) -> Vec<Invalid> {
        let zero = [("batch", self.batch), ("resamples", self.resamples)];
        Invalid::zero(&zero).into_iter().collect()
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<Value> {
        let evals = evaluate(self, common, inputs)?;
        let tables: Vec<Value> = evals.iter().map(|(t, e)| report(t, e)).collect();
        let path = dir.join(EVAL);
        std::fs::write(&path, serde_json::to_string_pretty(&tables)?)
            .with_context(|| format!("writing {}", path.display()))?;
        write_energies(&dir.join(ENERGIES), &evals)?;
        Ok(metrics(tables))
    }
}

/// Every table of the inputs, evaluated, with its name ([`table_names`]).
fn evaluate(cfg: &Config, common: &Common, inputs: &Inputs) -> Result<Vec<(String, TableEval)>> {
    let tables = expand_tables(&inputs.data);
    if tables.is_empty() {
        return Err(usage("no preference tables found in --data"));
    }
    let (device, _amp) = common.device()?;
    let scorer = EnergyScorer::load(&inputs.model, device)
        .with_context(|| format!("loading the energy model {}", inputs.model.display()))?;
    let table_cfg = TableEvalConfig {
        batch: cfg.batch,
        resamples: cfg.resamples,
        seed: policy::rng::key(common.seed, "eval"),
    };
    let names = table_names(&tables);
    tables
        .iter()
        .zip(names)
        .map(|(t, name)| {
            let e = evaluate_table(&scorer, t, table_cfg)
                .with_context(|| format!("evaluating {}", t.display()))?;
            Ok((name, e))
        })
        .collect()
}

/// What the outputs call each table: its file name (`test.parquet`), or the path as given
/// when two tables share a file name. Outputs hold no run-directory path, so a run's artifacts
/// are the same wherever it ran.
fn table_names(tables: &[PathBuf]) -> Vec<String> {
    let file_name = |t: &PathBuf| t.file_name().map(|n| n.to_string_lossy().into_owned());
    let shared = |n: &String| {
        tables
            .iter()
            .filter(|u| file_name(u).as_ref() == Some(n))
            .count()
    };
    tables
        .iter()
        .map(|t| match file_name(t) {
            Some(n) if shared(&n) == 1 => n,
            _ => t.display().to_string(),
        })
        .collect()
}

/// The tables named by `--data`: files as given, directories as their val/test splits.
fn expand_tables(data: &[PathBuf]) -> Vec<PathBuf> {
    data.iter()
        .flat_map(|p| {
            if p.is_dir() {
                ["val.parquet", "test.parquet"]
                    .iter()
                    .map(|f| p.join(f))
                    .filter(|f| f.exists())
                    .collect()
            } else {
                vec![p.clone()]
            }
        })
        .collect()
}

/// One table's entry of `eval.json`.
fn report(table: &str, e: &TableEval) -> Value {
    let mut v = serde_json::to_value(e).expect("reports serialise");
    v["file"] = table.into();
    v
}

/// The manifest's metrics: every table's report, and the first table's accuracy and its CI
/// against the longer answer as the headline.
fn metrics(tables: Vec<Value>) -> Value {
    let first = &tables[0];
    json!({
        "accuracy": first["labels"]["accuracy"],
        "against_length": first["against_length"],
        "tables": tables,
    })
}

/// `energies.parquet`: one row per evaluated pair of every table.
fn write_energies(path: &Path, evals: &[(String, TableEval)]) -> Result<()> {
    let (mut table, mut prompt, mut source) = (Vec::new(), Vec::new(), Vec::new());
    let (mut e_chosen, mut e_rejected) = (Vec::new(), Vec::new());
    for (t, e) in evals {
        for (i, &row) in e.row_of_pair.iter().enumerate() {
            let r = &e.rows[row];
            table.push(t.clone());
            prompt.push(r.prompt.clone());
            source.push(r.source.clone());
            e_chosen.push(e.e_pos[i]);
            e_rejected.push(e.e_neg[i]);
        }
    }
    let cols = vec![
        Column::new("table".into(), table),
        Column::new("prompt".into(), prompt),
        Column::new("source".into(), source),
        Column::new("e_chosen".into(), e_chosen),
        Column::new("e_rejected".into(), e_rejected),
    ];
    let mut df = DataFrame::new(cols[0].len(), cols)?;
    datasets::table::write_parquet(path, &mut df)?;
    Ok(())
}

/// Evaluate an energy model on preference tables: accuracy, calibration, per source, against
/// the longer answer with bootstrap CIs, and against the gold order on synth.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub inputs: Inputs,
    #[command(flatten)]
    pub config: Config,
    /// Write the reports: a .json file (eval.json alone), or a stage directory (with
    /// energies.parquet and a manifest).
    #[arg(long, value_name = "OUT")]
    pub out: Option<PathBuf>,
    /// Replace OUT even when it is not an earlier output of this command.
    #[arg(long, requires = "out")]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn cli(a: Args) -> Result<ExitCode> {
    let common = Common::from(&a.common);
    let metrics = match &a.out {
        Some(path) => {
            let out = OutArg {
                path: path.clone(),
                force: a.force,
            };
            stage::run_to(&a.config, &common, &a.inputs, &out, EVAL)?
        }
        None => {
            crate::config::reject(a.config.check(), Config::NAME)?;
            let evals = evaluate(&a.config, &common, &a.inputs)?;
            metrics(evals.iter().map(|(t, e)| report(t, e)).collect())
        }
    };
    print!("{}", render(&metrics["tables"]));
    Ok(ExitCode::SUCCESS)
}

/// The reports as aligned text: one line per table (and its gold order), its sources below it,
/// then the model against the longer answer with the CIs.
pub fn render(tables: &Value) -> String {
    let mut out = format!(
        "{:<36} {:>6} {:>8} {:>8} {:>7} {:>8} {:>8}\n",
        "table", "pairs", "acc", "gap", "ece", "len-acc", "len-agr"
    );
    for t in tables.as_array().into_iter().flatten() {
        let name: Vec<char> = t["file"].as_str().unwrap_or("").chars().collect();
        let short: String = name[name.len().saturating_sub(36)..].iter().collect();
        out += &report_line(&short, &t["labels"]);
        out += &by_source(&t["labels"], 2);
        if !t["gold"].is_null() {
            out += &report_line("  (vs gold order)", &t["gold"]);
            // Gold rows are grouped by what they ask (right vs wrong, near misses, …).
            out += &by_source(&t["gold"], 1);
        }
    }
    for t in tables.as_array().into_iter().flatten() {
        let a = &t["against_length"];
        if a.is_null() {
            continue;
        }
        let ci = |c: &Value| {
            let f = |k: &str| c[k].as_f64().unwrap_or(f64::NAN);
            format!("{:.4} [{:.4}, {:.4}]", f("mean"), f("lo"), f("hi"))
        };
        out += &format!(
            "{}: model {}, longer answer {}, model − longer {} (95% bootstrap CIs over {} pairs)\n",
            t["file"].as_str().unwrap_or(""),
            ci(&a["model"]),
            ci(&a["longer"]),
            ci(&a["difference"]),
            a["pairs"]
        );
    }
    out
}

fn report_line(name: &str, r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "{name:<36} {:>6} {:>8.4} {:>8.3} {:>7.3} {:>8.4} {:>8.4}\n",
        r["pairs"],
        f("accuracy"),
        f("mean_gap"),
        f("ece"),
        f("length_heuristic_accuracy"),
        r["length_agreement"].as_f64().unwrap_or(f64::NAN)
    )
}

/// Accuracy per `source` of a report, one indented line each, when it has at least `min` sources.
fn by_source(report: &Value, min: usize) -> String {
    let Some(src) = report["by_source"].as_object().filter(|s| s.len() >= min) else {
        return String::new();
    };
    src.iter()
        .map(|(s, v)| {
            let acc = v["accuracy"].as_f64().unwrap_or(f64::NAN);
            format!("    {s:<32} {:>6} {acc:>8.4}\n", v["pairs"])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_named_by_file_name_unless_two_share_it() {
        let p = |s: &str| PathBuf::from(s);
        let names = table_names(&[p("run/01-data/val.parquet"), p("run/01-data/test.parquet")]);
        assert_eq!(names, ["val.parquet", "test.parquet"]);
        let names = table_names(&[p("a/test.parquet"), p("b/test.parquet"), p("c/x.jsonl")]);
        assert_eq!(names, ["a/test.parquet", "b/test.parquet", "x.jsonl"]);
    }
}
