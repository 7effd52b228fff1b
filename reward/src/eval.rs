//! Evaluation of an energy model on preference pairs: energies of both answers (one forward pass
//! per batch, no gradients) and the metrics of [`crate::metrics`].
use datasets::table::PairRow;
use tch::{Device, Tensor};
use tracing::instrument;

use crate::batch::{EncodedPairRow, PairBatch};
use crate::metrics::{EvalInputs, EvalReport, Thresholds};
use crate::model::EnergyModel;

/// (E⁺, E⁻) of every pair, `batch` pairs per forward pass.
#[instrument(skip_all, fields(pairs = pairs.len()))]
pub fn pair_energies(
    model: &EnergyModel,
    pairs: &[EncodedPairRow],
    batch: usize,
    pad: i64,
    device: Device,
) -> (Vec<f32>, Vec<f32>) {
    let mut pos = Vec::with_capacity(pairs.len());
    let mut neg = Vec::with_capacity(pairs.len());
    tch::no_grad(|| {
        for chunk in pairs.chunks(batch.max(1)) {
            let refs: Vec<&EncodedPairRow> = chunk.iter().collect();
            let b = PairBatch::new(&refs, &[], pad, device);
            let e = model.energy(&b.ids, &b.mask, false);
            let (p, n, _) = b.split(&e);
            pos.extend(to_vec(&p));
            neg.extend(to_vec(&n));
        }
    });
    (pos, neg)
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
) -> EvalReport {
    let (e_pos, e_neg) = pair_energies(model, pairs, batch, pad, device);
    report_from_energies(rows, pairs, &e_pos, &e_neg, th)
}

/// The evaluation report of `pairs` whose energies are already known (E⁺, E⁻ per pair).
pub fn report_from_energies(
    rows: &[PairRow],
    pairs: &[EncodedPairRow],
    e_pos: &[f32],
    e_neg: &[f32],
    th: Thresholds,
) -> EvalReport {
    let len_chosen: Vec<usize> = pairs
        .iter()
        .map(|p| rows[p.row].chosen.chars().count())
        .collect();
    let len_rejected: Vec<usize> = pairs
        .iter()
        .map(|p| rows[p.row].rejected.chars().count())
        .collect();
    let sources: Vec<String> = pairs.iter().map(|p| rows[p.row].source.clone()).collect();
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
