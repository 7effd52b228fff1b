//! The run report: `report.md` plus its plots (PNG + SVG) beside it, built from the finished
//! stages' manifests and artifacts (Parquet read with Polars, JSONL metrics line by line).
//! Nothing is recomputed: every number in the report is one a stage wrote.
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use polars::prelude::{
    col, len, Column, DataFrame, DataType, IntoLazy, ParquetReader, SerReader, SortMultipleOptions,
};
use serde_json::Value;
use tracing::{instrument, warn};

use crate::plot::{self, LinePlot, Series};
use crate::stage::{self, Manifest};
use crate::stages::report::Config;
use crate::status;

/// One finished stage the report covers.
struct Stage {
    dir: PathBuf,
    m: Manifest,
}

/// The report being written: Markdown text and the plots drawn so far.
struct Doc<'a> {
    cfg: &'a Config,
    out: &'a Path,
    md: String,
    plots: Vec<String>,
    /// Why plots were skipped (e.g. no font), said once.
    plot_error: Option<String>,
}

/// Writes `out/report.md` (and plots) for the stage directories `dirs`; returns the report
/// stage's metrics (stages covered, plots drawn).
#[instrument(skip_all)]
pub fn write(cfg: &Config, dirs: &[&Path], out: &Path) -> Result<Value> {
    let mut stages = Vec::new();
    for dir in dirs {
        let m = stage::read_manifest(dir)?
            .with_context(|| format!("{} has no manifest.json", dir.display()))?;
        stages.push(Stage {
            dir: dir.to_path_buf(),
            m,
        });
    }
    let mut doc = Doc {
        cfg,
        out,
        md: String::new(),
        plots: Vec::new(),
        plot_error: None,
    };
    writeln!(doc.md, "# {}\n", cfg.title)?;
    summary_table(&mut doc.md, &stages)?;
    for s in &stages {
        writeln!(doc.md, "## {}\n", s.m.stage)?;
        let fp = &s.m.fingerprint[..12.min(s.m.fingerprint.len())];
        writeln!(doc.md, "Fingerprint `{fp}`, {:.1} s.\n", s.m.duration_s)?;
        match s.m.stage.as_str() {
            "synth" | "ingest" => data_section(&mut doc, s)?,
            "sft" => curves_section(
                &mut doc,
                s,
                "sft_loss",
                "SFT loss",
                &["loss", "val_loss"],
                None,
            )?,
            "reward" => reward_section(&mut doc, s)?,
            "rank" => rank_section(&mut doc, s)?,
            "finetune" => finetune_section(&mut doc, s)?,
            "refine" => refine_section(&mut doc, s)?,
            _ => {}
        }
        if s.m.stage == "compare" {
            include_markdown(&mut doc, &s.dir.join("report.md"))?;
        }
        metrics_table(&mut doc.md, &s.m)?;
    }
    if let Some(e) = &doc.plot_error {
        writeln!(doc.md, "_Plots skipped: {e}_\n")?;
    }
    let path = out.join("report.md");
    fs::write(&path, &doc.md).with_context(|| format!("writing {}", path.display()))?;
    Ok(serde_json::json!({ "stages": stages.len(), "plots": doc.plots.len() }))
}

impl Doc<'_> {
    /// Draws a line plot as `STEM.png` + `STEM.svg` and links the PNG; a missing font (or any
    /// drawing error) skips the plot with a note instead of failing the report.
    fn plot(&mut self, stem: &str, plot: &LinePlot) -> Result<()> {
        if !self.cfg.plots || plot.series.iter().all(|s| s.points.is_empty()) {
            return Ok(());
        }
        match plot::draw_line_plot(plot, &self.out.join(stem)) {
            Ok(_) => {
                writeln!(
                    self.md,
                    "![{}]({stem}.png) ([svg]({stem}.svg))\n",
                    plot.title
                )?;
                self.plots.push(stem.to_string());
            }
            Err(e) => {
                warn!(plot = stem, "plot skipped: {e:#}");
                self.plot_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        Ok(())
    }
}

/// One row per stage: its headline number.
fn summary_table(md: &mut String, stages: &[Stage]) -> Result<()> {
    writeln!(md, "| stage | headline | seconds |\n|---|---|---|")?;
    for s in stages {
        let head = status::headline(&s.m.stage, &s.m.metrics)
            .map(|(k, v)| format!("{k} = {}", status::fmt_num(v)))
            .unwrap_or_else(|| "—".into());
        writeln!(md, "| {} | {head} | {:.1} |", s.m.stage, s.m.duration_s)?;
    }
    writeln!(md)?;
    Ok(())
}

/// The stage's scalar metrics (nested objects flattened as `a.b`), as a two-column table.
fn metrics_table(md: &mut String, m: &Manifest) -> Result<()> {
    let rows = status::scalars(&m.metrics);
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(
        md,
        "<details><summary>All metrics</summary>\n\n| metric | value |\n|---|---|"
    )?;
    for (k, v) in rows {
        writeln!(md, "| {k} | {v} |")?;
    }
    writeln!(md, "\n</details>\n")?;
    Ok(())
}

/// A Parquet file as a DataFrame.
fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    ParquetReader::new(file)
        .finish()
        .with_context(|| format!("reading {}", path.display()))
}

/// Rows of each split, demonstrations and evaluation prompts, and quarantine counts by reason.
fn data_section(doc: &mut Doc, s: &Stage) -> Result<()> {
    writeln!(doc.md, "| table | rows |\n|---|---|")?;
    for name in ["train", "val", "test", "sft", "eval_prompts"] {
        let path = s.dir.join(format!("{name}.parquet"));
        if path.exists() {
            writeln!(doc.md, "| {name} | {} |", read_parquet(&path)?.height())?;
        }
    }
    writeln!(doc.md)?;
    let quarantine = s.dir.join("quarantine.parquet");
    if quarantine.exists() {
        let df = read_parquet(&quarantine)?;
        if df.height() == 0 {
            writeln!(doc.md, "Quarantine: empty (no row dropped).\n")?;
        } else if df.column("reason").is_ok() {
            let counts = df
                .lazy()
                .group_by([col("reason")])
                .agg([len().alias("rows")])
                .sort(["reason"], SortMultipleOptions::default())
                .collect()
                .with_context(|| format!("counting {}", quarantine.display()))?;
            writeln!(
                doc.md,
                "Quarantined rows by reason:\n\n| reason | rows |\n|---|---|"
            )?;
            let reasons = counts.column("reason")?.str()?.clone();
            let rows = counts.column("rows")?.cast(&DataType::UInt64)?;
            for (r, n) in reasons.iter().zip(rows.u64()?.iter()) {
                writeln!(doc.md, "| {} | {} |", r.unwrap_or("?"), n.unwrap_or(0))?;
            }
            writeln!(doc.md)?;
        }
    }
    Ok(())
}

/// Numeric metrics of a stage's `metrics.jsonl` as curves over `step`: one series per key,
/// from the lines where `filter` (key, value) holds, if given.
fn jsonl_series(path: &Path, keys: &[&str], filter: Option<(&str, &str)>) -> Result<Vec<Series>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(_) => return Ok(Vec::new()),
    };
    let mut series: Vec<Series> = keys
        .iter()
        .map(|k| Series {
            name: k.to_string(),
            ..Series::default()
        })
        .collect();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some((k, want)) = filter {
            if v.get(k).and_then(Value::as_str) != Some(want) {
                continue;
            }
        }
        let Some(step) = v.get("step").and_then(Value::as_f64) else {
            continue;
        };
        for (s, key) in series.iter_mut().zip(keys) {
            if let Some(y) = v
                .get(*key)
                .and_then(Value::as_f64)
                .filter(|y| y.is_finite())
            {
                s.points.push((step, y, None));
            }
        }
    }
    series.retain(|s| !s.points.is_empty());
    Ok(series)
}

/// A line plot of `keys` over steps from the stage's `metrics.jsonl`.
fn curves_section(
    doc: &mut Doc,
    s: &Stage,
    stem: &str,
    title: &str,
    keys: &[&str],
    filter: Option<(&str, &str)>,
) -> Result<()> {
    let series = jsonl_series(&s.dir.join("metrics.jsonl"), keys, filter)?;
    let plot = LinePlot {
        title: title.into(),
        x_label: "step".into(),
        y_label: keys.join(", "),
        log_x: false,
        series,
    };
    doc.plot(stem, &plot)
}

/// Validation accuracy/ECE, training curves, and the chosen vs rejected energy distributions.
fn reward_section(doc: &mut Doc, s: &Stage) -> Result<()> {
    let val = s.m.metrics.get("val");
    let get = |k: &str| val.and_then(|v| v.get(k)).and_then(Value::as_f64);
    if let (Some(acc), Some(ece)) = (get("accuracy"), get("ece")) {
        writeln!(
            doc.md,
            "Validation: accuracy **{:.3}**, ECE {:.3}, mean energy chosen {} vs rejected {}.\n",
            acc,
            ece,
            get("mean_e_chosen")
                .map(status::fmt_num)
                .unwrap_or_default(),
            get("mean_e_rejected")
                .map(status::fmt_num)
                .unwrap_or_default(),
        )?;
    }
    curves_section(
        doc,
        s,
        "reward_loss",
        "Energy model: training loss",
        &["loss"],
        Some(("split", "train")),
    )?;
    curves_section(
        doc,
        s,
        "reward_val",
        "Energy model: validation",
        &["accuracy", "ece"],
        Some(("split", "val")),
    )?;
    energy_histogram(doc, s)?;
    Ok(())
}

/// Histograms (as frequency polygons) of chosen vs rejected energies from a per-pair table the
/// reward stage wrote (a Parquet file with `e_chosen` and `e_rejected` columns); without one,
/// the percentiles of `energy_stats.json`.
fn energy_histogram(doc: &mut Doc, s: &Stage) -> Result<()> {
    for rel in s.m.artifacts.keys().filter(|k| k.ends_with(".parquet")) {
        let df = read_parquet(&s.dir.join(rel))?;
        let (Ok(c), Ok(r)) = (df.column("e_chosen"), df.column("e_rejected")) else {
            continue;
        };
        let to_vec = |c: &Column| -> Result<Vec<f64>> {
            Ok(c.cast(&DataType::Float64)?
                .f64()?
                .iter()
                .flatten()
                .collect())
        };
        let (c, r) = (to_vec(c)?, to_vec(r)?);
        let plot = LinePlot {
            title: "Energies of chosen vs rejected answers".into(),
            x_label: "energy".into(),
            y_label: "share of pairs".into(),
            log_x: false,
            series: histogram_series(&[("chosen", &c), ("rejected", &r)], doc.cfg.histogram_bins),
        };
        return doc.plot("reward_energy_hist", &plot);
    }
    let stats = s.dir.join("energy_stats.json");
    if let Ok(text) = fs::read_to_string(&stats) {
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", stats.display()))?;
        writeln!(doc.md, "Training-set energies:\n\n| answers | mean | std | p05 | p50 | p95 |\n|---|---|---|---|---|---|")?;
        for side in ["chosen", "rejected"] {
            let f = |k: &str| v[side][k].as_f64().map(status::fmt_num).unwrap_or_default();
            writeln!(
                doc.md,
                "| {side} | {} | {} | {} | {} | {} |",
                f("mean"),
                f("std"),
                f("p05"),
                f("p50"),
                f("p95")
            )?;
        }
        writeln!(doc.md)?;
    }
    Ok(())
}

/// Shared-bin histograms of several samples as series of (bin centre, share of the sample).
pub fn histogram_series(samples: &[(&str, &[f64])], bins: usize) -> Vec<Series> {
    let all = samples
        .iter()
        .flat_map(|(_, x)| x.iter().copied())
        .filter(|x| x.is_finite());
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let bins = bins.max(1);
    if !lo.is_finite() {
        return Vec::new();
    }
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    samples
        .iter()
        .map(|(name, x)| {
            let mut counts = vec![0usize; bins];
            for v in x.iter().filter(|v| v.is_finite()) {
                counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
            }
            let n = x.len().max(1) as f64;
            let points = counts
                .iter()
                .enumerate()
                .map(|(i, c)| (lo + (i as f64 + 0.5) * width, *c as f64 / n, None))
                .collect();
            Series {
                name: name.to_string(),
                points,
                markers_only: false,
            }
        })
        .collect()
}

/// The best-of-n table (`summary.json` rows) and gold/energy against n.
fn rank_section(doc: &mut Doc, s: &Stage) -> Result<()> {
    let Some(rows) = s.m.metrics.get("rows").and_then(Value::as_array) else {
        return Ok(());
    };
    let cols = [
        "n",
        "prompts",
        "energy",
        "gold",
        "win_rate",
        "win_rate_bound",
        "kl_empirical",
        "kl_bound",
    ];
    writeln!(doc.md, "Best-of-n by lowest energy (mean over prompts):\n")?;
    numeric_table(&mut doc.md, &cols, &cols, rows)?;
    type Curve = Vec<(f64, f64, Option<(f64, f64)>)>;
    let curve = |key: &str, se: &str| -> Curve {
        rows.iter()
            .filter_map(|r| {
                let (n, y) = (r.get("n")?.as_f64()?, r.get(key)?.as_f64()?);
                let ci = r
                    .get(se)
                    .and_then(Value::as_f64)
                    .map(|e| (y - 1.96 * e, y + 1.96 * e));
                Some((n, y, ci))
            })
            .collect()
    };
    let gold = curve("gold", "gold_se");
    if !gold.is_empty() {
        let plot = LinePlot {
            title: "Best-of-n: gold reward of the lowest-energy answer".into(),
            x_label: "n".into(),
            y_label: "gold (95% CI)".into(),
            log_x: true,
            series: vec![Series {
                name: "gold".into(),
                points: gold,
                markers_only: false,
            }],
        };
        doc.plot("rank_gold", &plot)?;
    }
    Ok(())
}

/// A Markdown table with one column per key of `rows` (JSON objects), numbers formatted and
/// missing values as "—".
fn numeric_table(md: &mut String, header: &[&str], keys: &[&str], rows: &[Value]) -> Result<()> {
    writeln!(
        md,
        "| {} |\n|{}",
        header.join(" | "),
        "---|".repeat(keys.len())
    )?;
    for r in rows {
        let cells: Vec<String> = keys
            .iter()
            .map(|k| {
                r.get(*k)
                    .and_then(Value::as_f64)
                    .map(status::fmt_num)
                    .unwrap_or_else(|| "—".into())
            })
            .collect();
        writeln!(md, "| {} |", cells.join(" | "))?;
    }
    writeln!(md)?;
    Ok(())
}

/// One row per fine-tuning round from `rounds.jsonl` (round 0 = the starting policy): held-out
/// energy and gold of fresh samples and greedy answers, KL to the reference, what was kept.
fn finetune_section(doc: &mut Doc, s: &Stage) -> Result<()> {
    let text = fs::read_to_string(s.dir.join("rounds.jsonl")).unwrap_or_default();
    let rows: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let cols = [
        ("round", "round"),
        ("sample_energy", "energy"),
        ("sample_gold", "gold"),
        ("greedy_energy", "greedy energy"),
        ("greedy_gold", "greedy gold"),
        ("kl_k3", "KL(π‖π_ref)"),
        ("kept_energy", "kept energy"),
        ("kept_gold", "kept gold"),
        ("gold_gain", "gold gain"),
        ("gold_gain_se", "± se"),
        ("distinct_share", "distinct"),
    ];
    writeln!(
        doc.md,
        "Fine-tuning rounds, evaluated on held-out prompts with fresh samples (round 0 is the \
         starting policy):\n"
    )?;
    let header: Vec<&str> = cols.iter().map(|(_, h)| *h).collect();
    let keys: Vec<&str> = cols.iter().map(|(k, _)| *k).collect();
    numeric_table(&mut doc.md, &header, &keys, &rows)?;
    let series = |key: &str, name: &str| Series {
        name: name.into(),
        points: rows
            .iter()
            .filter_map(|r| Some((r.get("round")?.as_f64()?, r.get(key)?.as_f64()?, None)))
            .collect(),
        markers_only: false,
    };
    let gold = vec![
        series("sample_gold", "sample gold"),
        series("greedy_gold", "greedy gold"),
    ];
    let plot = LinePlot {
        title: "Fine-tuning: held-out gold per round".into(),
        x_label: "round".into(),
        y_label: "gold".into(),
        log_x: false,
        series: gold.into_iter().filter(|s| !s.points.is_empty()).collect(),
    };
    doc.plot("finetune_gold", &plot)?;
    let plot = LinePlot {
        title: "Fine-tuning: held-out energy and KL per round".into(),
        x_label: "round".into(),
        y_label: "energy, KL".into(),
        log_x: false,
        series: vec![
            series("sample_energy", "sample energy"),
            series("kl_k3", "KL"),
        ],
    };
    doc.plot("finetune_energy", &plot)
}

/// Start vs refined answers: energy and gold before and after gradient refinement.
fn refine_section(doc: &mut Doc, s: &Stage) -> Result<()> {
    let m = &s.m.metrics;
    let get = |k: &str| m.get(k).and_then(Value::as_f64);
    let (Some(e0), Some(e1), Some(p)) = (get("start_energy"), get("best_energy"), get("prompts"))
    else {
        return Ok(());
    };
    writeln!(
        doc.md,
        "Gradient refinement of one sampled answer per prompt ({p} prompts, {} steps): energy \
         {} → {}, changed {} of answers, improved {}.",
        get("steps").map(status::fmt_num).unwrap_or_default(),
        status::fmt_num(e0),
        status::fmt_num(e1),
        get("changed").map(status::fmt_num).unwrap_or_default(),
        get("improved").map(status::fmt_num).unwrap_or_default(),
    )?;
    if let (Some(g0), Some(g1)) = (get("start_gold"), get("gold")) {
        writeln!(
            doc.md,
            "Gold {} → {}.",
            status::fmt_num(g0),
            status::fmt_num(g1)
        )?;
    }
    writeln!(doc.md)?;
    Ok(())
}

/// Copies a stage's own Markdown report in, one heading level down, its images linked from
/// where they are.
fn include_markdown(doc: &mut Doc, path: &Path) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let dir = path
        .parent()
        .and_then(Path::file_name)
        .map(|d| d.to_string_lossy().into_owned());
    for line in text.lines() {
        let line = if line.starts_with('#') {
            format!("#{line}")
        } else {
            line.to_string()
        };
        let line = match &dir {
            Some(d) => line
                .replace("](", &format!("](../{d}/"))
                .replace(&format!("](../{d}/http"), "](http"),
            None => line,
        };
        writeln!(doc.md, "{line}")?;
    }
    writeln!(doc.md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_shares_hand_case() {
        let a = [0.0, 0.0, 1.0, 2.0];
        let b = [2.0, 2.0];
        let s = histogram_series(&[("a", &a), ("b", &b)], 2);
        // Bins [0, 1) and [1, 2]; centres 0.5 and 1.5.
        assert_eq!(s[0].points, vec![(0.5, 0.5, None), (1.5, 0.5, None)]);
        assert_eq!(s[1].points, vec![(0.5, 0.0, None), (1.5, 1.0, None)]);
    }

    #[test]
    fn jsonl_series_filters_and_skips_bad_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.jsonl");
        fs::write(
            &p,
            "{\"step\":1,\"split\":\"train\",\"loss\":2.0}\nnot json\n{\"step\":2,\"split\":\"val\",\"loss\":1.0}\n",
        )
        .unwrap();
        let s = jsonl_series(&p, &["loss"], Some(("split", "train"))).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].points, vec![(1.0, 2.0, None)]);
    }
}
