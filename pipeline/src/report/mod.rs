//! The run report: `report.md` plus its plots (PNG + SVG) beside it, built from the finished
//! stages' manifests and artifacts (Parquet read through `datasets::table`, JSONL metrics line
//! by line). Nothing is recomputed: every number in the report is one a stage wrote.
//!
//! This file assembles the document (summary, one section per stage, all metrics); the
//! sections are in `data` (ingest, synth), `training` (SFT and reward curves, energies) and
//! `selection` (best-of-n, fine-tuning rounds, refinement); `tables` holds the table and
//! histogram helpers they share.
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::Value;
use tracing::{instrument, warn};

use crate::plot::{self, LinePlot};
use crate::stage::{self, Manifest};
use crate::stages::report::Config;
use crate::status;

mod data;
mod eval;
mod selection;
mod tables;
mod training;

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
            "synth" | "ingest" => data::data_section(&mut doc, s)?,
            "sft" => training::curves_section(
                &mut doc,
                s,
                "sft_loss",
                "SFT loss",
                &["loss", "val_loss"],
                None,
            )?,
            "reward" => training::reward_section(&mut doc, s)?,
            "rank" => selection::rank_section(&mut doc, s)?,
            "finetune" => selection::finetune_section(&mut doc, s)?,
            "refine" => selection::refine_section(&mut doc, s)?,
            "eval" => eval::eval_section(&mut doc, s)?,
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
