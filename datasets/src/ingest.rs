//! The ingest pipeline: read every input file, adapt records to candidate pairs in parallel
//! (rayon), filter, de-duplicate, split by prompt, and write `train/val/test.parquet`,
//! `quarantine.parquet` and `stats.json`. Nothing is lost silently: every candidate is either
//! kept or quarantined with a reason, so `rows_read == kept + quarantined`.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use crate::adapters::{Format, Pair, Reason, Rejection, Turn};
use crate::error::{DatasetError, Result};
use crate::read::{read_file, RawRecord};
use crate::split::{length_stats, pair_id, split_of, LengthStats, Split};
use crate::table::{write_pairs, write_quarantine, PairRow, QuarantineRow};

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

/// A candidate that survived the per-row filters.
struct Candidate {
    file: usize,
    line: usize,
    id: String,
    pair: Pair,
}

struct Dropped {
    file: usize,
    line: usize,
    rejection: Rejection,
    raw: String,
}

/// Runs the pipeline over `files` and writes the tables into `out_dir` (which must exist).
#[instrument(skip_all, fields(format = opts.format.name(), files = files.len()))]
pub fn ingest(files: &[PathBuf], opts: &IngestOptions, out_dir: &Path) -> Result<IngestStats> {
    let sources = source_names(files);
    let drop_degenerate = opts
        .drop_degenerate
        .unwrap_or_else(|| opts.format.drops_degenerate());
    let (mut kept, mut dropped, mut records_read, mut degenerate_kept) =
        (Vec::new(), Vec::new(), 0, 0);
    for (fi, path) in files.iter().enumerate() {
        let records = read_file(path)?;
        if records.is_empty() {
            if opts.strict {
                return Err(DatasetError::Empty {
                    what: path.display().to_string(),
                });
            }
            tracing::warn!(path = %path.display(), "the file has no records (--strict makes this an error)");
        }
        records_read += records.len();
        let adapted = adapt_file(&records, &opts.format);
        check_format(path, &opts.format, &adapted)?;
        for (ri, results) in adapted.into_iter().enumerate() {
            let record = &records[ri];
            for result in results {
                match result.and_then(|p| filter(p, opts, drop_degenerate)) {
                    Ok((pair, degenerate)) => {
                        degenerate_kept += degenerate as usize;
                        let id = pair_id(&pair.prompt, &pair.chosen, &pair.rejected);
                        kept.push(Candidate {
                            file: fi,
                            line: record.line,
                            id,
                            pair,
                        });
                    }
                    Err(rejection) => dropped.push(Dropped {
                        file: fi,
                        line: record.line,
                        rejection,
                        raw: record.raw_text(),
                    }),
                }
            }
        }
    }
    let rows_read = kept.len() + dropped.len();
    if opts.format.aggregates() {
        kept = aggregate(kept, &sources, &mut dropped, opts.keep_ties);
    }
    let (kept, duplicates_kept) = dedup(kept, &sources, &mut dropped, drop_degenerate);
    dropped.sort_by_key(|d| (d.file, d.line));
    if opts.strict {
        if let Some(d) = dropped.first() {
            return Err(DatasetError::BadRow {
                path: files[d.file].display().to_string(),
                line: d.line,
                reason: d.rejection.reason.as_str().into(),
                detail: d.rejection.detail.clone(),
            });
        }
    }
    if kept.is_empty() {
        let what = format!("{} input file(s)", files.len());
        if opts.strict {
            return Err(DatasetError::Empty { what });
        }
        tracing::warn!(
            rows_read,
            quarantined = dropped.len(),
            "no row was kept: every split is empty (see quarantine.parquet; --strict makes this an error)"
        );
    }
    let counts = (records_read, rows_read, degenerate_kept + duplicates_kept);
    let stats = summarize(files, &sources, opts, &kept, &dropped, counts);
    write_outputs(out_dir, opts, &sources, kept, &dropped)?;
    info!(
        rows_read,
        kept = stats.kept,
        quarantined = stats.quarantined,
        "ingested"
    );
    Ok(stats)
}

/// Parses and adapts the records of one file in parallel, keeping record order.
fn adapt_file(records: &[RawRecord], format: &Format) -> Vec<Vec<Result<Pair, Rejection>>> {
    records
        .par_iter()
        .map(|r| match r.parse() {
            Ok(v) => format.adapt(&v),
            Err(e) if matches!(r.body, crate::read::RawBody::NotUtf8 { .. }) => {
                vec![Err(Rejection::new(Reason::InvalidUtf8, e))]
            }
            Err(e) => vec![Err(Rejection::new(Reason::InvalidJson, e))],
        })
        .collect()
}

/// A file in which no record has the shape of the format is the wrong file, not bad rows.
fn check_format(
    path: &Path,
    format: &Format,
    adapted: &[Vec<Result<Pair, Rejection>>],
) -> Result<()> {
    let all_structural = adapted
        .iter()
        .flatten()
        .all(|r| matches!(r, Err(e) if e.reason.is_structural()));
    match adapted.iter().flatten().next() {
        Some(Err(first)) if all_structural => Err(DatasetError::FormatMismatch {
            path: path.to_path_buf(),
            expected: format!("--format {} records", format.name()),
            reason: format!(
                "no row matches; first row: {}: {}",
                first.reason.as_str(),
                first.detail
            ),
        }),
        _ => Ok(()),
    }
}

/// The per-row quality filters, in order: identical, empty, too long, tie. Returns the pair
/// and whether it is degenerate but kept.
fn filter(
    pair: Pair,
    opts: &IngestOptions,
    drop_degenerate: bool,
) -> Result<(Pair, bool), Rejection> {
    let identical = pair.chosen == pair.rejected;
    let empty = pair.chosen.trim().is_empty() || pair.rejected.trim().is_empty();
    if drop_degenerate && identical {
        return Err(Rejection::new(
            Reason::IdenticalAnswers,
            "chosen and rejected are identical",
        ));
    }
    if drop_degenerate && empty {
        let which = if pair.chosen.trim().is_empty() {
            "chosen"
        } else {
            "rejected"
        };
        return Err(Rejection::new(
            Reason::EmptyAnswer,
            format!("{which} is empty after trimming"),
        ));
    }
    if let Some(max) = opts.max_chars {
        let len = pair.prompt.chars().count()
            + pair
                .chosen
                .chars()
                .count()
                .max(pair.rejected.chars().count());
        if len > max {
            return Err(Rejection::new(
                Reason::TooLong,
                format!("{len} characters > --max-chars {max}"),
            ));
        }
    }
    // A format that averages judgments decides ties after averaging ([`aggregate`]).
    if pair.tie && !opts.keep_ties && !opts.format.aggregates() {
        return Err(Rejection::new(
            Reason::Tie,
            "the annotators tied (use --keep-ties to keep)",
        ));
    }
    Ok((pair, identical || empty))
}

/// Averages the judgments of each pair (same prompt, same two answers in either order) into one
/// row, for formats where several judges label the same pair ([`Format::aggregates`]). A
/// judgment votes `+margin` for its chosen answer (a tie votes 0); the row's chosen answer is
/// the one with the positive mean, its margin the mean's size. The first judgment in (file,
/// line) order carries the row; the others are quarantined as `duplicate`, naming it. A pair
/// whose judgments cancel out is a tie (kept with `--keep-ties`, else quarantined).
fn aggregate(
    mut kept: Vec<Candidate>,
    sources: &[String],
    dropped: &mut Vec<Dropped>,
    keep_ties: bool,
) -> Vec<Candidate> {
    kept.sort_by_key(|c| (c.file, c.line));
    let n = kept.len();
    // Each judgment's carrier (the first judgment of its pair), and at each carrier the sum of
    // the votes for the pair's first answer (in sorted order) and the number of judgments.
    let mut first_of: HashMap<(&str, &str, &str), usize> = HashMap::new();
    let (mut carrier, mut votes, mut count) = (Vec::with_capacity(n), vec![0.0; n], vec![0; n]);
    for (i, c) in kept.iter().enumerate() {
        let p = &c.pair;
        let chosen_first = p.chosen <= p.rejected;
        let (a, b) = if chosen_first {
            (&p.chosen, &p.rejected)
        } else {
            (&p.rejected, &p.chosen)
        };
        let first = *first_of.entry((&p.prompt, a, b)).or_insert(i);
        let vote = f64::from(p.margin.unwrap_or(1.0));
        votes[first] += if chosen_first { vote } else { -vote };
        count[first] += 1;
        carrier.push(first);
    }
    drop(first_of); // it borrows the pairs, which move out below
    let at: Vec<String> = kept
        .iter()
        .map(|c| format!("{}:{}", sources[c.file], c.line))
        .collect();
    let mut out = Vec::new();
    for (i, mut c) in kept.into_iter().enumerate() {
        if carrier[i] != i {
            dropped.push(Dropped {
                file: c.file,
                line: c.line,
                rejection: Rejection::new(
                    Reason::Duplicate,
                    format!(
                        "another judgment of the pair at {}, averaged into it",
                        at[carrier[i]]
                    ),
                ),
                raw: pair_json(&c.pair),
            });
            continue;
        }
        let mean = votes[i] / count[i] as f64;
        let p = &mut c.pair;
        if (p.chosen <= p.rejected) != (mean >= 0.0) {
            std::mem::swap(&mut p.chosen, &mut p.rejected);
        }
        p.margin = Some(mean.abs() as f32);
        p.tie = mean == 0.0;
        if p.tie && !keep_ties {
            let detail = match count[i] {
                1 => "the judge found no winner".to_string(),
                n => format!("the {n} judgments cancel out"),
            };
            dropped.push(Dropped {
                file: c.file,
                line: c.line,
                rejection: Rejection::new(Reason::Tie, detail),
                raw: pair_json(p),
            });
            continue;
        }
        c.id = pair_id(&p.prompt, &p.chosen, &p.rejected);
        out.push(c);
    }
    out
}

/// A pair as the `raw` text of a quarantined row that no single input line stands for.
fn pair_json(p: &Pair) -> String {
    serde_json::json!({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}).to_string()
}

/// Keeps one row per (prompt, chosen, rejected): the first by (id, source, line), so the
/// result does not depend on input order. When degenerate rows are kept (curated benchmarks,
/// where a repeated pair is another judge's vote) repeats stay, with `-2`, `-3`… appended to
/// their id. Returns the kept rows sorted by id and the number of repeats kept.
fn dedup(
    mut kept: Vec<Candidate>,
    sources: &[String],
    dropped: &mut Vec<Dropped>,
    drop: bool,
) -> (Vec<Candidate>, usize) {
    kept.sort_by(|a, b| (&a.id, &sources[a.file], a.line).cmp(&(&b.id, &sources[b.file], b.line)));
    let mut out: Vec<Candidate> = Vec::with_capacity(kept.len());
    let (mut repeat, mut repeats_kept) = (1, 0);
    for mut c in kept {
        if let Some(prev) = out.last() {
            let p = &prev.pair;
            let same = prev.id.starts_with(&c.id)
                && (&p.prompt, &p.chosen, &p.rejected)
                    == (&c.pair.prompt, &c.pair.chosen, &c.pair.rejected);
            if same && !drop {
                repeat += 1;
                repeats_kept += 1;
                c.id = format!("{}-{repeat}", c.id);
                out.push(c);
                continue;
            }
            repeat = 1;
            if same {
                dropped.push(Dropped {
                    file: c.file,
                    line: c.line,
                    rejection: Rejection::new(
                        Reason::Duplicate,
                        format!("duplicate of {}:{}", sources[prev.file], prev.line),
                    ),
                    raw: pair_json(&c.pair),
                });
                continue;
            }
        }
        out.push(c);
    }
    (out, repeats_kept)
}

fn summarize(
    files: &[PathBuf],
    sources: &[String],
    opts: &IngestOptions,
    kept: &[Candidate],
    dropped: &[Dropped],
    (records_read, rows_read, degenerate_kept): (usize, usize, usize),
) -> IngestStats {
    let mut reasons: BTreeMap<String, usize> = Reason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), 0))
        .collect();
    for d in dropped {
        *reasons
            .entry(d.rejection.reason.as_str().into())
            .or_default() += 1;
    }
    let mut splits: BTreeMap<String, usize> = BTreeMap::new();
    for s in Split::ALL {
        splits.insert(split_name(s).into(), 0);
    }
    for c in kept {
        *splits
            .entry(split_name(split_of(&c.pair.prompt, opts.seed, &opts.split)).into())
            .or_default() += 1;
    }
    let chars = [("prompt", 0), ("chosen", 1), ("rejected", 2)]
        .into_iter()
        .map(|(name, k)| {
            let lens = kept.iter().map(|c| {
                [&c.pair.prompt, &c.pair.chosen, &c.pair.rejected][k]
                    .chars()
                    .count()
            });
            (name.to_string(), length_stats(lens.collect()))
        })
        .collect();
    let files = files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let k = kept.iter().filter(|c| c.file == i).count();
            let q = dropped.iter().filter(|d| d.file == i).count();
            FileStats {
                path: p.display().to_string(),
                source: sources[i].clone(),
                rows_read: k + q,
                kept: k,
                quarantined: q,
            }
        })
        .collect();
    IngestStats {
        format: opts.format.name().into(),
        records_read,
        rows_read,
        kept: kept.len(),
        quarantined: dropped.len(),
        reasons,
        splits,
        degenerate_kept,
        ties_kept: kept.iter().filter(|c| c.pair.tie).count(),
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

fn write_outputs(
    out_dir: &Path,
    opts: &IngestOptions,
    sources: &[String],
    kept: Vec<Candidate>,
    dropped: &[Dropped],
) -> Result<()> {
    let with_turns = kept.iter().any(|c| c.pair.turns.is_some());
    let mut by_split: BTreeMap<Split, (Vec<PairRow>, Vec<Vec<Turn>>)> = BTreeMap::new();
    for s in Split::ALL {
        by_split.insert(s, (Vec::new(), Vec::new()));
    }
    for c in kept {
        let entry = by_split
            .get_mut(&split_of(&c.pair.prompt, opts.seed, &opts.split))
            .expect("all splits");
        let Pair {
            prompt,
            chosen,
            rejected,
            margin,
            tie,
            turns,
        } = c.pair;
        entry.1.push(turns.unwrap_or_default());
        entry.0.push(PairRow {
            id: c.id,
            source: sources[c.file].clone(),
            prompt,
            chosen,
            rejected,
            margin,
            tie,
            gold_chosen: None,
            gold_rejected: None,
        });
    }
    for (split, (rows, turns)) in &by_split {
        write_pairs(
            &out_dir.join(split.file_name()),
            rows,
            with_turns.then_some(turns.as_slice()),
            false,
        )?;
    }
    let quarantine: Vec<QuarantineRow> = dropped
        .iter()
        .map(|d| QuarantineRow {
            source: sources[d.file].clone(),
            line: d.line as u64,
            reason: d.rejection.reason.as_str().into(),
            detail: d.rejection.detail.clone(),
            raw: d.raw.clone(),
        })
        .collect();
    write_quarantine(&out_dir.join("quarantine.parquet"), &quarantine)
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
