//! The outputs of `ember compare`: `compare.parquet`, `compare.json`, `report.md` and its plots
//! (energy vs compute, gold vs compute, and gold vs √KL with the Gao et al. (2022) fit
//! R(d) = d(α − β·d) for best-of-N). The numbers come from `reward::search::compare`.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use datasets::stats::Ci;
use reward::search::compare::{
    aggregate, gao_summary, head_to_head, verdicts, Cell, GaoSummary, HeadToHead, Row, Verdict,
    METHODS,
};
use reward::search::io::write_rows;
use serde::Serialize;

use crate::plot::{draw_line_plot, LinePlot, Series};

fn series(
    cells: &[Cell],
    method: &str,
    xy: impl Fn(&Cell) -> Option<(f64, f64, Option<(f64, f64)>)>,
) -> Series {
    let points = cells
        .iter()
        .filter(|c| c.method == method)
        .filter_map(xy)
        .collect();
    Series {
        name: method.to_string(),
        points,
        markers_only: false,
    }
}

/// Draws the three plots into `dir`; returns the files written.
pub fn draw_plots(dir: &Path, cells: &[Cell], gao: Option<&GaoSummary>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let energy = LinePlot {
        title: "Energy of the chosen answer vs compute".into(),
        x_label: "energy-model forward passes per prompt (budget)".into(),
        y_label: "energy (lower is better), 95% CI".into(),
        log_x: true,
        series: METHODS
            .iter()
            .map(|m| {
                series(cells, m, |c| {
                    Some((
                        c.budget as f64,
                        c.energy.mean,
                        Some((c.energy.lo, c.energy.hi)),
                    ))
                })
            })
            .collect(),
    };
    files.extend(draw_line_plot(&energy, &dir.join("energy_vs_compute"))?);
    if cells.iter().all(|c| c.gold.is_none()) {
        return Ok(files);
    }
    let gold_xy = |c: &Cell| {
        c.gold
            .map(|g| (c.budget as f64, g.mean, Some((g.lo, g.hi))))
    };
    let gold = LinePlot {
        title: "Gold reward vs compute".into(),
        x_label: "energy-model forward passes per prompt (budget)".into(),
        y_label: "gold reward (higher is better), 95% CI".into(),
        log_x: true,
        series: METHODS.iter().map(|m| series(cells, m, gold_xy)).collect(),
    };
    files.extend(draw_line_plot(&gold, &dir.join("gold_vs_compute"))?);
    let mut kl_series: Vec<Series> = METHODS
        .iter()
        .map(|m| {
            let mut s = series(cells, m, |c| {
                c.gold
                    .map(|g| (c.kl.max(0.0).sqrt(), g.mean, Some((g.lo, g.hi))))
            });
            s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
            s.markers_only = true;
            s
        })
        .collect();
    if let Some(g) = gao {
        let d_max = g.points.iter().map(|p| p.0).fold(0.0, f64::max);
        let curve = (0..=40).map(|i| {
            let d = d_max * 1.1 * i as f64 / 40.0;
            (d, g.gold_at_1 + g.fit.predict(d), None)
        });
        kl_series.push(Series {
            name: format!(
                "Gao fit (best-of-N): a={:.3}, b={:.3}",
                g.fit.alpha, g.fit.beta
            ),
            points: curve.collect(),
            markers_only: false,
        });
    }
    let kl = LinePlot {
        title: "Gold reward vs sqrt(KL) from the policy".into(),
        x_label: "sqrt(KL): best-of-N bound; refine from policy log-probs".into(),
        y_label: "gold reward, 95% CI".into(),
        log_x: false,
        series: kl_series,
    };
    files.extend(draw_line_plot(&kl, &dir.join("gold_vs_sqrt_kl"))?);
    Ok(files)
}

fn fmt_ci(ci: &Ci) -> String {
    format!("{:.3} [{:.3}, {:.3}]", ci.mean, ci.lo, ci.hi)
}

/// The results table: one line per (budget, method).
pub fn table(cells: &[Cell]) -> String {
    let mut s = String::from(
        "| budget | method | energy (95% CI) | gold (95% CI) | KL | energy fwd | policy fwd | wall s |\n\
         |---:|---|---|---|---:|---:|---:|---:|\n",
    );
    let mut sorted: Vec<&Cell> = cells.iter().collect();
    sorted.sort_by_key(|c| (c.budget, METHODS.iter().position(|m| *m == c.method)));
    for c in sorted {
        let gold = c.gold.as_ref().map(fmt_ci).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.3} | {:.1} | {:.1} | {:.3} |",
            c.budget,
            c.method,
            fmt_ci(&c.energy),
            gold,
            c.kl,
            c.energy_fwd,
            c.policy_fwd,
            c.wall_s
        );
    }
    s
}

/// One sentence per budget and metric: who is ahead and whether the CIs overlap.
pub fn verdict_lines(verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    for v in verdicts {
        let sep = if v.overlap {
            "the 95% CIs overlap (not separated)"
        } else {
            "the 95% CIs do not overlap"
        };
        let _ = writeln!(
            s,
            "- budget {}, {}: **{}** ahead of {}; {sep}.",
            v.budget, v.metric, v.leader, v.runner_up
        );
    }
    s
}

/// The plain answer on `metric`: at how many budgets the better refinement method beats
/// best-of-N (and with separated CIs), at how many it loses, and the numbers at the largest
/// budget.
pub fn head_to_head_reading(h2h: &[HeadToHead], metric: &str) -> Option<String> {
    let hs: Vec<&HeadToHead> = h2h.iter().filter(|h| h.metric == metric).collect();
    let largest = hs.iter().max_by_key(|h| h.budget)?;
    let tie = |h: &HeadToHead| h.challenger_mean == h.best_of_n_mean;
    let count = |ahead: bool| {
        let side: Vec<&&HeadToHead> = hs
            .iter()
            .filter(|h| h.challenger_ahead == ahead && !tie(h))
            .collect();
        (side.len(), side.iter().filter(|h| h.separated).count())
    };
    let ((won, won_sep), (lost, lost_sep)) = (count(true), count(false));
    let tied = hs.iter().filter(|h| tie(h)).count();
    let winner = if largest.challenger_ahead {
        largest.challenger.as_str()
    } else {
        "best-of-n"
    };
    Some(format!(
        "**Refinement vs best-of-N on {metric}:** the better of refine and hybrid beats best-of-N \
         at {won} of {n} budgets ({won_sep} with separated 95% CIs), trails it at {lost} \
         ({lost_sep} separated) and ties at {tied} (the same answers). At the largest budget \
         ({b}): best-of-N {bon:.3}, {c} {cm:.3} \
         ({d:+.3}); **{winner}** is ahead{sep}.",
        n = hs.len(),
        b = largest.budget,
        bon = largest.best_of_n_mean,
        c = largest.challenger,
        cm = largest.challenger_mean,
        d = largest.challenger_mean - largest.best_of_n_mean,
        sep = match (largest.separated, largest.difference) {
            (true, _) => ", with separated CIs".to_string(),
            (false, Some(d)) => format!(
                "; the CIs overlap, and the paired difference over prompts is {:+.3} [{:+.3}, {:+.3}]{}",
                d.mean,
                d.lo,
                d.hi,
                if d.lo > 0.0 || d.hi < 0.0 { ", which excludes 0" } else { ", which includes 0" }
            ),
            (false, None) => ", but the CIs overlap".to_string(),
        },
    ))
}

/// A paragraph reading the result from the verdicts, whichever method wins.
pub fn reading(verdicts: &[Verdict], metric: &str) -> String {
    let vs: Vec<&Verdict> = verdicts.iter().filter(|v| v.metric == metric).collect();
    if vs.is_empty() {
        return format!("No {metric} comparison was possible.");
    }
    let mut wins: Vec<(&str, usize, usize)> = METHODS.iter().map(|m| (*m, 0, 0)).collect();
    for v in &vs {
        if let Some(w) = wins.iter_mut().find(|w| w.0 == v.leader) {
            w.1 += 1;
            w.2 += usize::from(!v.overlap);
        }
    }
    wins.sort_by_key(|w| std::cmp::Reverse(w.1));
    let parts: Vec<String> = wins
        .iter()
        .filter(|w| w.1 > 0)
        .map(|w| {
            format!(
                "{} leads at {} of {} budgets ({} with non-overlapping CIs)",
                w.0,
                w.1,
                vs.len(),
                w.2
            )
        })
        .collect();
    let largest = vs.iter().max_by_key(|v| v.budget).expect("non-empty");
    format!(
        "On {metric}, {}. At the largest budget ({}) {} is ahead of {}{}.",
        parts.join("; "),
        largest.budget,
        largest.leader,
        largest.runner_up,
        if largest.overlap {
            ", but their CIs overlap, so the data do not separate them"
        } else {
            " with separated CIs"
        }
    )
}

pub const PARQUET: &str = "compare.parquet";
pub const JSON: &str = "compare.json";
pub const REPORT: &str = "report.md";

/// Writes `compare.parquet`, `compare.json`, the plots and `report.md` into `dir`; returns the
/// headline metrics for the manifest.
pub fn write_outputs(
    dir: &Path,
    config: &impl Serialize,
    prompts: usize,
    seeds: usize,
    rows: &[Row],
    resamples: usize,
    seed: u64,
) -> Result<serde_json::Value> {
    write_rows(&dir.join(PARQUET), rows)?;
    let cells = aggregate(rows, resamples, seed);
    let verdicts = verdicts(&cells);
    let h2h = head_to_head(&cells, rows, resamples, seed);
    let gao = gao_summary(&cells);
    let json = serde_json::json!({
        "prompts": prompts,
        "seeds": seeds,
        "config": config,
        "cells": cells,
        "verdicts": verdicts,
        "head_to_head": h2h,
        "gao": gao,
    });
    let path = dir.join(JSON);
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    // A missing font must not lose the numbers: the report says why the plots are absent.
    let (plots, plot_error) = match draw_plots(dir, &cells, gao.as_ref()) {
        Ok(files) => (files, None),
        Err(e) => {
            tracing::warn!("plots skipped: {e:#}");
            (Vec::new(), Some(format!("{e:#}")))
        }
    };
    let mut md = markdown(
        prompts,
        seeds,
        &cells,
        &verdicts,
        &h2h,
        gao.as_ref(),
        &plots,
    );
    if let Some(e) = plot_error {
        let _ = writeln!(md, "_Plots skipped: {e}_");
    }
    let path = dir.join(REPORT);
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    Ok(
        serde_json::json!({ "prompts": prompts, "seeds": seeds, "cells": cells, "verdicts": verdicts, "head_to_head": h2h, "gao": gao }),
    )
}

/// The Markdown report.
pub fn markdown(
    prompts: usize,
    seeds: usize,
    cells: &[Cell],
    verdicts: &[Verdict],
    h2h: &[HeadToHead],
    gao: Option<&GaoSummary>,
    plots: &[PathBuf],
) -> String {
    let mut s = String::from("# Rank vs refine at equal compute\n\n");
    let _ = writeln!(
        s,
        "{prompts} prompts × {seeds} seed(s). Budget = energy-model forward passes per prompt \
         (backward = 2, each discrete re-score = 1). best-of-N: N = budget samples; refine: one \
         sample, then gradient steps on the relaxed energy; hybrid: best-of-m, then refine the \
         winner. Every result is a discrete answer scored on discrete tokens. Means over prompts \
         with bootstrap 95% CIs; KL: best-of-N from its bound log N − (N−1)/N, refinement as \
         log π(start) − log π(final).\n"
    );
    s.push_str(&table(cells));
    s.push_str("\n## Who is ahead\n\n");
    s.push_str(&verdict_lines(verdicts));
    s.push_str("\n## Reading\n\n");
    for metric in ["gold", "energy"] {
        if let Some(line) = head_to_head_reading(h2h, metric) {
            let _ = writeln!(s, "{line}\n");
        }
    }
    let metric = if cells.iter().any(|c| c.gold.is_some()) {
        "gold"
    } else {
        "energy"
    };
    let _ = writeln!(
        s,
        "{} {}\n",
        reading(verdicts, metric),
        if metric == "gold" {
            reading(verdicts, "energy")
        } else {
            String::new()
        }
    );
    match gao {
        Some(g) => {
            let _ = writeln!(
                s,
                "Gao et al. (2022) fit of best-of-N's gold gain over N = 1 against d = √KL: \
                 R(d) = d(α − β·d) with **α = {:.4}, β = {:.4}** ({} points).\n",
                g.fit.alpha,
                g.fit.beta,
                g.points.len()
            );
        }
        None => {
            s.push_str("No Gao fit: it needs gold rewards and at least two budgets above 1.\n\n")
        }
    }
    s.push_str("## Plots\n\n");
    for p in plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
    {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "![{}]({name}) ([svg]({}))\n",
            name.trim_end_matches(".png"),
            name.replace(".png", ".svg")
        );
    }
    s
}
