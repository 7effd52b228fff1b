//! The sections of the run report about choosing and improving answers: the best-of-n table
//! (`rank`), fine-tuning rounds (`finetune`) and gradient refinement (`refine`).
use std::fmt::Write as _;
use std::fs;

use anyhow::Result;
use serde_json::Value;

use super::tables::numeric_table;
use super::{Doc, Stage};
use crate::plot::{LinePlot, Series};
use crate::status;

/// The best-of-n table (`summary.json` rows) and gold/energy against n.
pub(super) fn rank_section(doc: &mut Doc, s: &Stage) -> Result<()> {
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

/// One row per fine-tuning round from `rounds.jsonl` (round 0 = the starting policy): held-out
/// energy and gold of fresh samples and greedy answers, KL to the reference, what was kept.
pub(super) fn finetune_section(doc: &mut Doc, s: &Stage) -> Result<()> {
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
pub(super) fn refine_section(doc: &mut Doc, s: &Stage) -> Result<()> {
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
