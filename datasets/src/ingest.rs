//! The ingest pipeline: stream every input file in bounded batches, adapt records to candidate
//! pairs in parallel (rayon), filter, average judgments, de-duplicate, split by prompt, and write
//! `train/val/test.parquet`, `quarantine.parquet` and `stats.json`. Nothing is lost silently:
//! every candidate is either kept or quarantined with a reason, so `rows_read == kept +
//! quarantined`.
//!
//! Memory stays flat as the input grows: texts go to scratch files in the output directory as
//! they stream by ([`scan`]), the global steps work on per-candidate keys of a few dozen bytes
//! ([`resolve`]), and the tables are written in row groups ([`output`]). The outputs are those
//! of a whole-input pass: same rows, same order, same counts.
mod output;
mod prepare;
mod resolve;
mod scan;
mod spill;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use crate::adapters::{Format, Reason};
use crate::error::{DatasetError, Result};
use crate::split::{length_stats, LengthStats, Split};

use prepare::Key;
use resolve::LateDrop;
use scan::{reason_index, FirstDrop, Scanned};

/// Everything `ingest` needs besides the input files.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestOptions {
    pub format: Format,
    /// `[train, val, test]` fractions.
    pub split: [f64; 3],
    pub seed: u64,
    /// Fail at the first bad row instead of quarantining it.
    pub strict: bool,
    /// Keep ties (`tie = true`) instead of quarantining them.
    pub keep_ties: bool,
    /// Drop pairs whose prompt plus longer answer exceeds this many characters.
    pub max_chars: Option<usize>,
    /// Drop empty answers, identical answers and repeated pairs; `None` = the format's default.
    pub drop_degenerate: Option<bool>,
}

/// Per-file counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileStats {
    pub path: String,
    pub source: String,
    pub rows_read: usize,
    pub kept: usize,
    pub quarantined: usize,
}

/// `stats.json`. `records_read` counts input records; `rows_read` counts candidate pairs
/// (equal except for rating formats, where one record yields one pair per lower-rated answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestStats {
    pub format: String,
    pub records_read: usize,
    pub rows_read: usize,
    pub kept: usize,
    pub quarantined: usize,
    pub reasons: BTreeMap<String, usize>,
    pub splits: BTreeMap<String, usize>,
    /// Empty, identical or repeated pairs kept because the format keeps them (LLMBar).
    pub degenerate_kept: usize,
    pub ties_kept: usize,
    pub chars: BTreeMap<String, LengthStats>,
    pub files: Vec<FileStats>,
}

/// Runs the pipeline over `files` and writes the tables into `out_dir` (which must exist).
#[instrument(skip_all, fields(format = opts.format.name(), files = files.len()))]
pub fn ingest(files: &[PathBuf], opts: &IngestOptions, out_dir: &Path) -> Result<IngestStats> {
    let sources = source_names(files);
    let drop_degenerate = opts
        .drop_degenerate
        .unwrap_or_else(|| opts.format.drops_degenerate());
    let mut scanned = scan::scan(files, opts, out_dir)?;
    let rows_read = scanned.keys.len() + scanned.counts.per_file.iter().sum::<usize>();
    let mut late = Vec::new();
    let keys = &mut scanned.keys;
    let order = match opts.format.aggregates() {
        true => resolve::aggregate(keys, &sources, &mut late, opts.keep_ties),
        false => (0..keys.len()).collect(),
    };
    let (kept, repeats_kept) = resolve::dedup(keys, order, &sources, &mut late, drop_degenerate);
    if opts.strict {
        if let Some(d) = first_drop(&scanned.counts.first, &late) {
            return Err(DatasetError::BadRow {
                path: files[d.file].display().to_string(),
                line: d.line,
                reason: d.reason.as_str().into(),
                detail: d.detail,
            });
        }
    }
    let quarantined = rows_read - kept.len();
    if kept.is_empty() {
        let what = format!("{} input file(s)", files.len());
        if opts.strict {
            return Err(DatasetError::Empty { what });
        }
        tracing::warn!(
            rows_read,
            quarantined,
            "no row was kept: every split is empty (see quarantine.parquet; --strict makes this an error)"
        );
    }
    let tables = output::Tables {
        opts,
        keys: &scanned.keys,
        texts: &scanned.texts,
        sources: &sources,
    };
    let splits = tables.write(out_dir, &kept, &scanned.dropped, &mut late)?;
    let kept = Kept {
        keys: kept.iter().map(|&i| &scanned.keys[i]).collect(),
        splits,
        repeats: repeats_kept,
    };
    let stats = summarize(files, &sources, opts, &scanned, &kept, &late);
    info!(
        rows_read,
        kept = stats.kept,
        quarantined = stats.quarantined,
        "ingested"
    );
    Ok(stats)
}

/// The first quarantined row in (file, line) order, a row of the streaming pass first.
fn first_drop(early: &Option<FirstDrop>, late: &[LateDrop]) -> Option<FirstDrop> {
    let late = late
        .iter()
        .min_by_key(|d| (d.file, d.line))
        .map(|d| FirstDrop {
            file: d.file,
            line: d.line,
            reason: d.reason,
            detail: d.detail.clone(),
        });
    match (early.clone(), late) {
        (Some(e), Some(l)) if (l.file, l.line) < (e.file, e.line) => Some(l),
        (Some(e), _) => Some(e),
        (None, l) => l,
    }
}

/// The rows kept, in id order, with their splits, and the number of repeats among them.
struct Kept<'a> {
    keys: Vec<&'a Key>,
    splits: Vec<Split>,
    repeats: usize,
}

fn summarize(
    files: &[PathBuf],
    sources: &[String],
    opts: &IngestOptions,
    scanned: &Scanned,
    kept: &Kept,
    late: &[LateDrop],
) -> IngestStats {
    let keys = &kept.keys;
    let mut per_reason = scanned.counts.per_reason.clone();
    let mut dropped_per_file = scanned.counts.per_file.clone();
    for d in late {
        per_reason[reason_index(d.reason)] += 1;
        dropped_per_file[d.file] += 1;
    }
    let reasons = Reason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), per_reason[reason_index(*r)]))
        .collect();
    let mut splits: BTreeMap<String, usize> = Split::ALL
        .iter()
        .map(|s| (split_name(*s).into(), 0))
        .collect();
    for s in &kept.splits {
        *splits.entry(split_name(*s).into()).or_default() += 1;
    }
    let chars = [("prompt", 0), ("chosen", 1), ("rejected", 2)]
        .into_iter()
        .map(|(name, c)| {
            let lens = keys.iter().map(|k| k.chars[c] as usize).collect();
            (name.to_string(), length_stats(lens))
        })
        .collect();
    let mut kept_per_file = vec![0; files.len()];
    for k in keys {
        kept_per_file[k.file as usize] += 1;
    }
    let files = files
        .iter()
        .enumerate()
        .map(|(i, p)| FileStats {
            path: p.display().to_string(),
            source: sources[i].clone(),
            rows_read: kept_per_file[i] + dropped_per_file[i],
            kept: kept_per_file[i],
            quarantined: dropped_per_file[i],
        })
        .collect();
    IngestStats {
        format: opts.format.name().into(),
        records_read: scanned.records_read,
        rows_read: keys.len() + dropped_per_file.iter().sum::<usize>(),
        kept: keys.len(),
        quarantined: dropped_per_file.iter().sum(),
        reasons,
        splits,
        degenerate_kept: scanned.degenerate_kept + kept.repeats,
        ties_kept: keys.iter().filter(|k| k.tie).count(),
        chars,
        files,
    }
}

fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

/// Writes `stats.json`.
pub fn write_stats(path: &Path, stats: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(stats).expect("stats serialise");
    std::fs::write(path, json + "\n").map_err(|e| DatasetError::io(path, e))
}

/// The `source` of each file: its path relative to the inputs' common directory (the file
/// name alone for a single input).
pub fn source_names(files: &[PathBuf]) -> Vec<String> {
    let parents: Vec<&Path> = files
        .iter()
        .map(|f| f.parent().unwrap_or(Path::new("")))
        .collect();
    let mut common: PathBuf = parents.first().map(|p| p.to_path_buf()).unwrap_or_default();
    while !parents.iter().all(|p| p.starts_with(&common)) {
        if !common.pop() {
            break;
        }
    }
    files
        .iter()
        .map(|f| f.strip_prefix(&common).unwrap_or(f).display().to_string())
        .collect()
}
