//! The evaluation section of the run report: the energy model on the held-out test split,
//! against the longer answer with bootstrap CIs, by source, and its energies of chosen vs
//! rejected answers.
use std::fmt::Write as _;

use anyhow::Result;
use serde_json::Value;

use super::training::energy_histogram;
use super::{Doc, Stage};

/// One row per evaluated table, then accuracy per source when a table has several.
pub(super) fn eval_section(doc: &mut Doc, s: &Stage) -> Result<()> {
    let tables = s.m.metrics["tables"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    writeln!(
        doc.md,
        "| table | pairs | accuracy [95% CI] | longer answer [95% CI] | model − longer [95% CI] | vs gold |\n|---|---|---|---|---|---|"
    )?;
    for t in &tables {
        let a = &t["against_length"];
        let gold = t["gold"]["accuracy"].as_f64().map(|g| format!("{g:.3}"));
        writeln!(
            doc.md,
            "| {} | {} | {} | {} | {} | {} |",
            file_name(&t["file"]),
            t["labels"]["pairs"],
            ci(&a["model"]),
            ci(&a["longer"]),
            ci(&a["difference"]),
            gold.unwrap_or_else(|| "—".into())
        )?;
    }
    writeln!(doc.md)?;
    for t in &tables {
        let name = file_name(&t["file"]);
        // Several sources (HH's subsets); the gold order is grouped by what each pair asks.
        by_source(doc, &t["labels"], 2, &format!("{name} by source"))?;
        by_source(
            doc,
            &t["gold"],
            1,
            &format!("{name} against the gold order"),
        )?;
    }
    let title = "Held-out energies of chosen vs rejected answers";
    energy_histogram(doc, s, "eval_energy_hist", title)
}

/// Accuracy per source of `report` under `title`, when it has at least `min` sources.
fn by_source(doc: &mut Doc, report: &Value, min: usize, title: &str) -> Result<()> {
    let Some(src) = report["by_source"].as_object().filter(|s| s.len() >= min) else {
        return Ok(());
    };
    writeln!(
        doc.md,
        "{title}:\n\n| pairs of | n | accuracy |\n|---|---|---|"
    )?;
    for (name, v) in src {
        let acc = v["accuracy"].as_f64().unwrap_or(f64::NAN);
        writeln!(doc.md, "| {name} | {} | {acc:.3} |", v["pairs"])?;
    }
    Ok(writeln!(doc.md)?)
}

/// `mean [lo, hi]` of a serialised CI, or a dash.
fn ci(c: &Value) -> String {
    match (c["mean"].as_f64(), c["lo"].as_f64(), c["hi"].as_f64()) {
        (Some(m), Some(lo), Some(hi)) => format!("{m:.3} [{lo:.3}, {hi:.3}]"),
        _ => "—".into(),
    }
}

fn file_name(v: &Value) -> String {
    let path = std::path::Path::new(v.as_str().unwrap_or(""));
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
