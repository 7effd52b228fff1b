//! The global steps of the ingest, on candidate keys alone (ids are sha256 of the texts, so equal
//! ids stand for equal texts): averaging the judgments of a pair into one row, for formats where
//! several judges label the same pair, and keeping one row per (prompt, chosen, rejected). Rows
//! they drop become [`LateDrop`]s, which name the kept candidate whose texts they carry.
use std::collections::HashMap;

use crate::adapters::Reason;

use super::prepare::Key;

/// A row quarantined by a global step. Its raw text is the pair's JSON ([`super::output`]),
/// with the answers swapped when `swap` is set.
#[derive(Debug, Clone)]
pub(super) struct LateDrop {
    pub file: usize,
    pub line: usize,
    pub reason: Reason,
    pub detail: String,
    /// The candidate (index into the keys) whose texts are the raw text.
    pub key: usize,
    pub swap: bool,
}

impl LateDrop {
    fn new(k: &Key, key: usize, reason: Reason, detail: String, swap: bool) -> Self {
        Self {
            file: k.file as usize,
            line: k.line as usize,
            reason,
            detail,
            key,
            swap,
        }
    }
}

fn at(sources: &[String], k: &Key) -> String {
    format!("{}:{}", sources[k.file as usize], k.line)
}

/// Averages the judgments of each pair (same prompt, same two answers in either order) into one
/// row, for formats where several judges label the same pair. A judgment votes `+margin` for
/// its chosen answer (a tie votes 0); the row's chosen answer is the one with the positive mean,
/// its margin the mean's size. The first judgment in (file, line) order carries the row; the
/// others are quarantined as `duplicate`, naming it. A pair whose judgments cancel out is a tie
/// (kept with `--keep-ties`, else quarantined). `keys` are in (file, line) order; returns the
/// carriers kept, in that order.
pub(super) fn aggregate(
    keys: &mut [Key],
    sources: &[String],
    late: &mut Vec<LateDrop>,
    keep_ties: bool,
) -> Vec<usize> {
    let n = keys.len();
    // Each judgment's carrier (the first judgment of its pair), and at each carrier the sum of
    // the votes for the pair's first answer (in sorted order) and the number of judgments.
    let mut first_of: HashMap<[u8; 16], usize> = HashMap::with_capacity(n);
    let (mut carrier, mut votes, mut count) = (Vec::with_capacity(n), vec![0.0; n], vec![0; n]);
    for (i, k) in keys.iter().enumerate() {
        let pair = if k.chosen_first { k.id } else { k.swapped_id };
        let first = *first_of.entry(pair).or_insert(i);
        let vote = f64::from(k.margin.unwrap_or(1.0));
        votes[first] += if k.chosen_first { vote } else { -vote };
        count[first] += 1;
        carrier.push(first);
    }
    let mut out = Vec::new();
    for i in 0..n {
        if carrier[i] != i {
            let detail = format!(
                "another judgment of the pair at {}, averaged into it",
                at(sources, &keys[carrier[i]])
            );
            late.push(LateDrop::new(&keys[i], i, Reason::Duplicate, detail, false));
            continue;
        }
        let mean = votes[i] / count[i] as f64;
        let k = &mut keys[i];
        k.swapped = k.chosen_first != (mean >= 0.0);
        k.margin = Some(mean.abs() as f32);
        k.tie = mean == 0.0;
        if k.tie && !keep_ties {
            let detail = match count[i] {
                1 => "the judge found no winner".to_string(),
                n => format!("the {n} judgments cancel out"),
            };
            late.push(LateDrop::new(k, i, Reason::Tie, detail, k.swapped));
            continue;
        }
        if k.swapped {
            std::mem::swap(&mut k.id, &mut k.swapped_id);
            k.chars.swap(1, 2);
        }
        out.push(i);
    }
    out
}

/// Keeps one row per (prompt, chosen, rejected): the first by (id, source, line), so the
/// result does not depend on input order. When degenerate rows are kept (curated benchmarks,
/// where a repeated pair is another judge's vote) repeats stay, with `-2`, `-3`… appended to
/// their id. `order` lists the candidates in (file, line) order; returns the kept ones sorted
/// by id, and the number of repeats kept.
pub(super) fn dedup(
    keys: &mut [Key],
    mut order: Vec<usize>,
    sources: &[String],
    late: &mut Vec<LateDrop>,
    drop: bool,
) -> (Vec<usize>, usize) {
    let rank = source_ranks(sources);
    order.sort_by_key(|&i| {
        let k = &keys[i];
        (k.id, rank[k.file as usize], k.line)
    });
    let mut out: Vec<usize> = Vec::with_capacity(order.len());
    let (mut repeat, mut repeats_kept) = (1, 0);
    for i in order {
        if let Some(&prev) = out.last() {
            let same = keys[prev].id == keys[i].id;
            if same && !drop {
                repeat += 1;
                repeats_kept += 1;
                keys[i].repeat = repeat;
                out.push(i);
                continue;
            }
            repeat = 1;
            if same {
                let detail = format!("duplicate of {}", at(sources, &keys[prev]));
                let swap = keys[i].swapped;
                late.push(LateDrop::new(&keys[i], i, Reason::Duplicate, detail, swap));
                continue;
            }
        }
        out.push(i);
    }
    (out, repeats_kept)
}

/// Each source's rank in string order (equal names, equal ranks), so that sorting by rank sorts
/// by name.
fn source_ranks(sources: &[String]) -> Vec<usize> {
    let mut sorted: Vec<&String> = sources.iter().collect();
    sorted.sort();
    sorted.dedup();
    sources
        .iter()
        .map(|s| sorted.binary_search(&s).unwrap_or(0))
        .collect()
}
