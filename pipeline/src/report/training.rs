//! The training sections of the run report: loss and validation curves from a stage's
//! `metrics.jsonl` (SFT, reward) and the energies of chosen vs rejected answers (reward).
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};
use datasets::table::read_parquet;
use polars::prelude::{Column, DataType};
use serde_json::Value;

use super::tables::histogram_series;
use super::{Doc, Stage};
use crate::plot::{LinePlot, Series};
use crate::status;

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
pub(super) fn curves_section(
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
pub(super) fn reward_section(doc: &mut Doc, s: &Stage) -> Result<()> {
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
    mined_line(doc, s)?;
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
    let title = "Validation energies of chosen vs rejected answers";
    energy_histogram(doc, s, "reward_energy_hist", title)?;
    Ok(())
}

/// With `negatives = "refine"`: what mining added, what it cost, and what gold says of it.
fn mined_line(doc: &mut Doc, s: &Stage) -> Result<()> {
    let Some(m) = s.m.metrics.get("mined") else {
        return Ok(());
    };
    let n = |k: &str| m.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    write!(
        doc.md,
        "Mined negatives (`negatives = \"refine\"`): {:.0} answers refined, {:.0} joined the \
         replay buffer, {:.0} uses in the loss; cost {:.0} energy forward equivalents, {:.0} s.",
        n("refined"),
        n("joined"),
        n("used"),
        n("energy_fwd"),
        n("seconds"),
    )?;
    if n("gold_known") > 0.0 {
        write!(
            doc.md,
            " By gold, {:.1} % are really worse than the chosen answer, {:.1} % as good, \
             {:.1} % better (false negatives).",
            100.0 * n("gold_worse") / n("gold_known"),
            100.0 * n("gold_equal") / n("gold_known"),
            100.0 * n("gold_better") / n("gold_known"),
        )?;
    }
    writeln!(doc.md, "\n")?;
    Ok(())
}

/// Histograms (as frequency polygons) of chosen vs rejected energies from a per-pair table the
/// stage wrote (a Parquet file with `e_chosen` and `e_rejected` columns), drawn as `stem`;
/// without one, the percentiles of `energy_stats.json`.
pub(super) fn energy_histogram(doc: &mut Doc, s: &Stage, stem: &str, title: &str) -> Result<()> {
    for rel in s.m.artifacts.keys().filter(|k| k.ends_with(".parquet")) {
        let df = read_parquet(s.dir.join(rel))?;
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
            title: title.into(),
            x_label: "energy".into(),
            y_label: "share of pairs".into(),
            log_x: false,
            series: histogram_series(&[("chosen", &c), ("rejected", &r)], doc.cfg.histogram_bins),
        };
        return doc.plot(stem, &plot);
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

#[cfg(test)]
mod tests {
    use super::*;

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
