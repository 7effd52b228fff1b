//! `ember reward doctor`: preflight checks of the reward-model bugs most reported in TRL,
//! OpenRLHF and DeepSpeed-Chat issues, each PASS/FAIL with its numbers:
//! energies that change with batch size or padding side, a score read at a pad (or the first
//! pad) instead of the end-of-answer token, a head lost on save/reload, and the accuracy of the
//! choose-the-longer-answer baseline next to the model's.
use std::fmt;

use datasets::table::PairRow;
use serde::{Deserialize, Serialize};
use tch::Device;

use crate::batch::{fit_left, Fit};
use crate::error::Result;
use crate::eval::to_vec;
use crate::metrics::{length_heuristic_accuracy, pairwise_accuracy};
use crate::scorer::EnergyScorer;
use crate::store;

/// One check's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    /// The numbers behind the verdict, human-readable.
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = if self.pass { "PASS" } else { "FAIL" };
        write!(f, "{v}  {:<22} {}", self.name, self.detail)
    }
}

/// Padding side of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
}

/// Energies of `seqs` padded as one batch on `side`.
pub type EnergyFn<'a> = dyn Fn(&[Vec<i64>], Side) -> Vec<f32> + 'a;

/// Largest |a − b| / max(1, |a|).
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// Every energy must be a finite number (a NaN compares false with everything, so the other
/// checks would pass on it).
pub fn check_finite_energies(f: &EnergyFn, seqs: &[Vec<i64>]) -> Check {
    let energies = f(seqs, Side::Right);
    let bad = energies.iter().filter(|e| !e.is_finite()).count();
    Check {
        name: "finite energies".into(),
        pass: bad == 0 && !energies.is_empty(),
        detail: format!("{bad} of {} energies are NaN or infinite", energies.len()),
    }
}

/// Energies must not depend on the batch: each sequence alone (no padding) against the whole
/// set as one right-padded batch, one left-padded batch, and batches of 3.
pub fn check_batch_invariance(f: &EnergyFn, seqs: &[Vec<i64>], tol: f32) -> Check {
    let alone: Vec<f32> = seqs
        .iter()
        .flat_map(|s| f(std::slice::from_ref(s), Side::Right))
        .collect();
    let right = f(seqs, Side::Right);
    let left = f(seqs, Side::Left);
    let threes: Vec<f32> = seqs.chunks(3).flat_map(|c| f(c, Side::Right)).collect();
    let (dr, dl, d3) = (
        max_rel_diff(&alone, &right),
        max_rel_diff(&alone, &left),
        max_rel_diff(&alone, &threes),
    );
    let worst = dr.max(dl).max(d3);
    Check {
        name: "batch/padding invariance".into(),
        pass: worst <= tol,
        detail: format!(
            "max rel. diff vs batch of 1: right-padded {dr:.2e}, left-padded {dl:.2e}, batches of 3 {d3:.2e} (tol {tol:.0e}, {} seqs)",
            seqs.len()
        ),
    }
}

/// The head must read the end-of-answer token: in a right-padded batch the pooled position of
/// every row holds EOS, and changing what the pad positions contain does not move any energy.
pub fn check_pooling(scorer: &EnergyScorer, seqs: &[Vec<i64>], tol: f32) -> Check {
    let tok = &scorer.tokenizer;
    let (ids, mask) = policy::batch::pad_right(seqs, tok.pad_id(), scorer.device);
    let idx = scorer.model.pool_index(&mask);
    let read: Vec<i64> = Vec::try_from(
        ids.gather(1, &idx.unsqueeze(1), false)
            .view([-1])
            .to_device(Device::Cpu),
    )
    .expect("i64 ids");
    let not_eos = read.iter().filter(|&&i| i != tok.eos_id()).count();
    let other_pad = if tok.pad_id() == tok.sep_id() {
        tok.eos_id()
    } else {
        tok.sep_id()
    };
    let (ids2, _) = policy::batch::pad_right(seqs, other_pad, scorer.device);
    let (e1, e2) = tch::no_grad(|| {
        (
            to_vec(&scorer.model.energy(&ids, &mask, false)),
            to_vec(&scorer.model.energy(&ids2, &mask, false)),
        )
    });
    let d = max_rel_diff(&e1, &e2);
    Check {
        name: "pooling reads EOS".into(),
        pass: not_eos == 0 && d <= tol,
        detail: format!(
            "{not_eos}/{} rows pooled at a token other than EOS; energy change when pad contents change {d:.2e}",
            seqs.len()
        ),
    }
}

/// The head survives save → load: reloaded energies are bit-identical.
pub fn check_save_reload(scorer: &EnergyScorer, seqs: &[Vec<i64>]) -> Result<Check> {
    let tmp = std::env::temp_dir().join(format!("ember-doctor-{}", std::process::id()));
    store::save_model(&tmp, &scorer.vs, &scorer.config, &scorer.tokenizer)?;
    let reloaded = EnergyScorer::load(&tmp, scorer.device);
    let _ = std::fs::remove_dir_all(&tmp);
    let reloaded = reloaded?;
    let a = scorer.energies_of_ids(seqs, 8);
    let b = reloaded.energies_of_ids(seqs, 8);
    let differ = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    let head = |s: &EnergyScorer| s.vs.variables().get("head.weight").map(to_vec);
    let same_head = head(scorer) == head(&reloaded);
    Ok(Check {
        name: "save/reload".into(),
        pass: differ == 0 && same_head,
        detail: format!(
            "{differ}/{} energies differ bitwise after reload; head weights equal: {same_head}",
            seqs.len()
        ),
    })
}

/// The model against the length-only baseline on the same pairs (PASS when the model wins).
pub fn check_length_baseline(scorer: &EnergyScorer, rows: &[PairRow]) -> Result<Check> {
    let prompts: Vec<String> = rows.iter().map(|r| r.prompt.clone()).collect();
    let chosen: Vec<String> = rows.iter().map(|r| r.chosen.clone()).collect();
    let rejected: Vec<String> = rows.iter().map(|r| r.rejected.clone()).collect();
    let ep = scorer.score(&prompts, &chosen, 32)?;
    let en = scorer.score(&prompts, &rejected, 32)?;
    let model = pairwise_accuracy(&ep, &en);
    let lc: Vec<usize> = chosen.iter().map(|s| s.chars().count()).collect();
    let lr: Vec<usize> = rejected.iter().map(|s| s.chars().count()).collect();
    let length = length_heuristic_accuracy(&lc, &lr);
    Ok(Check {
        name: "beats length baseline".into(),
        pass: model > length,
        detail: format!(
            "model accuracy {model:.3} vs longer-answer heuristic {length:.3} on {} pairs",
            rows.len()
        ),
    })
}

/// Sequences for the checks: chosen and rejected answers of the first rows, fitted to the model.
pub fn probe_sequences(scorer: &EnergyScorer, rows: &[PairRow], n: usize) -> Vec<Vec<i64>> {
    let mut out = Vec::new();
    for r in rows {
        for a in [&r.chosen, &r.rejected] {
            let enc = scorer.tokenizer.encode_pair(&r.prompt, a);
            if let (ids, Fit::Whole | Fit::PromptTruncated) =
                fit_left(enc.ids, enc.answer_start, scorer.config.max_len)
            {
                out.push(ids);
            }
        }
        if out.len() >= n {
            break;
        }
    }
    out.truncate(n);
    out
}

/// The energy function of a scorer for [`check_batch_invariance`].
pub fn scorer_energy_fn(scorer: &EnergyScorer) -> impl Fn(&[Vec<i64>], Side) -> Vec<f32> + '_ {
    move |seqs, side| {
        let pad = scorer.tokenizer.pad_id();
        let (ids, mask) = match side {
            Side::Right => policy::batch::pad_right(seqs, pad, scorer.device),
            Side::Left => policy::batch::pad_left(seqs, pad, scorer.device),
        };
        tch::no_grad(|| to_vec(&scorer.model.energy(&ids, &mask, false)))
    }
}

/// Runs every check on (at most `n` pairs of) `rows`.
pub fn run(scorer: &EnergyScorer, rows: &[PairRow], n: usize) -> Result<Vec<Check>> {
    let rows = &rows[..rows.len().min(n)];
    let seqs = probe_sequences(scorer, rows, 24);
    let f = scorer_energy_fn(scorer);
    Ok(vec![
        check_finite_energies(&f, &seqs),
        check_batch_invariance(&f, &seqs, 1e-4),
        check_pooling(scorer, &seqs, 1e-4),
        check_save_reload(scorer, &seqs)?,
        check_length_baseline(scorer, rows)?,
    ])
}
