//! The data section of the run report (`ingest`, `synth`): rows per table, quarantine by reason.
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use datasets::table::read_parquet;
use polars::prelude::{col, len, DataType, IntoLazy, SortMultipleOptions};

use super::{Doc, Stage};

/// Rows of each split, demonstrations and evaluation prompts, and quarantine counts by reason.
pub(super) fn data_section(doc: &mut Doc, s: &Stage) -> Result<()> {
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
