//! Evaluation of an energy model on preference pairs: energies of both answers (one forward pass
//! per batch, no gradients) and the metrics of [`crate::metrics`].
use std::path::Path;

use datasets::table::PairRow;
use serde::Serialize;
use tch::{Device, Tensor};
use tracing::instrument;

use crate::batch::{EncodedPairRow, PairBatch};
use crate::data::{encode_rows, gold_ordered, load_pairs, FitCounts};
use crate::error::Result;
use crate::loss::TieMode;
use crate::metrics::{against_length, AgainstLength, EvalInputs, EvalReport, Thresholds};
use crate::model::EnergyModel;
use crate::scorer::EnergyScorer;

/// (E⁺, E⁻) of every pair, `batch` pairs per forward pass. Under a process group the ranks
/// share the batches ([`policy::dist::map_chunks`]; validation during data-parallel training)
/// and every rank gets every energy, the same bytes as one process's.
#[instrument(skip_all, fields(pairs = pairs.len()))]
pub fn pair_energies(
    model: &EnergyModel,
    pairs: &[EncodedPairRow],
    batch: usize,
    pad: i64,
    device: Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let chunks: Vec<&[EncodedPairRow]> = pairs.chunks(batch.max(1)).collect();
    let energies = policy::dist::map_chunks(policy::dist::group(), chunks.len(), |i| {
        tch::no_grad(|| {
            let refs: Vec<&EncodedPairRow> = chunks[i].iter().collect();
            let b = PairBatch::new(&refs, &[], pad, device);
            let e = model.energy(&b.ids, &b.mask, false);
            let (p, n, _) = b.split(&e);
            (to_vec(&p), to_vec(&n))
        })
    })?;
    Ok(energies.into_iter().fold(
        (
            Vec::with_capacity(pairs.len()),
            Vec::with_capacity(pairs.len()),
        ),
        |(mut pos, mut neg), (p, n)| {
            pos.extend(p);
            neg.extend(n);
            (pos, neg)
        },
    ))
}

/// A 1-D tensor as `Vec<f32>` on the CPU.
pub fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(
        t.to_device(Device::Cpu)
            .to_kind(tch::Kind::Float)
            .reshape([-1]),
    )
    .expect("1-D float tensor")
}

/// Every metric of the encoded `pairs` (rows of `rows` by index).
pub fn evaluate(
    model: &EnergyModel,
    rows: &[PairRow],
    pairs: &[EncodedPairRow],
    batch: usize,
    pad: i64,
    device: Device,
    th: Thresholds,
) -> Result<EvalReport> {
    let (e_pos, e_neg) = pair_energies(model, pairs, batch, pad, device)?;
    Ok(report_from_energies(rows, pairs, &e_pos, &e_neg, th))
}

/// The evaluation report of `pairs` whose energies are already known (E⁺, E⁻ per pair).
pub fn report_from_energies(
    rows: &[PairRow],
    pairs: &[EncodedPairRow],
    e_pos: &[f32],
    e_neg: &[f32],
    th: Thresholds,
) -> EvalReport {
    let (len_chosen, len_rejected, sources) = lengths_and_sources(rows, pairs);
    EvalReport::compute(
        &EvalInputs {
            e_pos,
            e_neg,
            len_chosen: &len_chosen,
            len_rejected: &len_rejected,
            sources: &sources,
        },
        th,
    )
}

/// The answers' lengths in characters (chosen, rejected) and the source of each pair.
fn lengths_and_sources(
    rows: &[PairRow],
    pairs: &[EncodedPairRow],
) -> (Vec<usize>, Vec<usize>, Vec<String>) {
    let len = |a: &str| a.chars().count();
    let len_chosen = pairs.iter().map(|p| len(&rows[p.row].chosen)).collect();
    let len_rejected = pairs.iter().map(|p| len(&rows[p.row].rejected)).collect();
    let sources = pairs.iter().map(|p| rows[p.row].source.clone()).collect();
    (len_chosen, len_rejected, sources)
}

/// One held-out table evaluated: the energies of its usable pairs (rows of `rows` by
/// `pairs[i].row`), every metric, the model against the longer answer with 95% bootstrap CIs,
/// and, for tables with gold scores, every metric against the noise-free gold order.
#[derive(Debug, Clone, Serialize)]
pub struct TableEval {
    pub fit: FitCounts,
    pub labels: EvalReport,
    pub against_length: Option<AgainstLength>,
    pub gold: Option<EvalReport>,
    #[serde(skip)]
    pub rows: Vec<PairRow>,
    #[serde(skip)]
    pub row_of_pair: Vec<usize>,
    #[serde(skip)]
    pub e_pos: Vec<f32>,
    #[serde(skip)]
    pub e_neg: Vec<f32>,
}

/// How [`evaluate_table`] scores and bootstraps.
#[derive(Debug, Clone, Copy)]
pub struct TableEvalConfig {
    /// Pairs per forward pass.
    pub batch: usize,
    /// Bootstrap resamples of the CIs.
    pub resamples: usize,
    /// The bootstrap's seed.
    pub seed: u64,
}

/// Evaluates `scorer` on the preference table at `path` (ties skipped, as in training).
#[instrument(skip_all, fields(path = %path.display()))]
pub fn evaluate_table(
    scorer: &EnergyScorer,
    path: &Path,
    cfg: TableEvalConfig,
) -> Result<TableEval> {
    let rows = load_pairs(path)?;
    let encode = |rows: &[PairRow]| {
        encode_rows(
            &scorer.tokenizer,
            rows,
            scorer.config.max_len,
            TieMode::Skip,
        )
    };
    let pad = scorer.tokenizer.pad_id();
    let energies = |pairs: &[EncodedPairRow]| {
        pair_energies(&scorer.model, pairs, cfg.batch, pad, scorer.device)
    };
    let (pairs, fit) = encode(&rows);
    let (e_pos, e_neg) = energies(&pairs)?;
    let (len_chosen, len_rejected, sources) = lengths_and_sources(&rows, &pairs);
    let inputs = EvalInputs {
        e_pos: &e_pos,
        e_neg: &e_neg,
        len_chosen: &len_chosen,
        len_rejected: &len_rejected,
        sources: &sources,
    };
    let labels = EvalReport::compute(&inputs, TABLE_THRESHOLDS);
    let against_length = against_length(&inputs, cfg.resamples, 0.95, cfg.seed);
    let gold = gold_ordered(&rows)
        .map(|gold| {
            let (pairs, _) = encode(&gold);
            let (p, n) = energies(&pairs)?;
            Ok::<_, crate::RewardError>(report_from_energies(
                &gold,
                &pairs,
                &p,
                &n,
                TABLE_THRESHOLDS,
            ))
        })
        .transpose()?;
    Ok(TableEval {
        fit,
        labels,
        against_length,
        gold,
        row_of_pair: pairs.iter().map(|p| p.row).collect(),
        rows,
        e_pos,
        e_neg,
    })
}

/// The share thresholds of held-out tables: ε = 0.1 for "chosen near zero", m = 1 for
/// "rejected pushed up".
const TABLE_THRESHOLDS: Thresholds = Thresholds {
    eps: 0.1,
    margin: 1.0,
};
