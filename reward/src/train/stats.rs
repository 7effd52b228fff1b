//! What a finished run measures with its final model: every validation pair's energies and
//! report, and summary statistics of the training set's energies (`energy_stats.json`: mean,
//! standard deviation and nearest-rank percentiles).
use serde::{Deserialize, Serialize};
use tch::Device;

use super::setup::Prepared;
use super::TrainConfig;
use crate::batch::EncodedPairRow;
use crate::data::encode_rows;
use crate::error::Result;
use crate::eval::{pair_energies, report_from_energies};
use crate::loss::TieMode;
use crate::metrics::EvalReport;
use crate::model::EnergyModel;

/// Energies of one validation pair; `row` indexes the rows of `val.parquet`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValEnergy {
    pub row: usize,
    pub chosen: f32,
    pub rejected: f32,
}

/// The report and energies of the model on every validation pair that fits.
pub(super) fn final_validation(
    cfg: &TrainConfig,
    data: &Prepared,
    model: &EnergyModel,
    device: Device,
) -> Result<(EvalReport, Vec<ValEnergy>)> {
    let (tok, rows) = (&data.tok, &data.val_rows);
    let val_all = encode_rows(tok, rows, data.ecfg.max_len, TieMode::Skip).0;
    let batch = cfg.batch.max(16);
    let (e_pos, e_neg) = pair_energies(model, &val_all, batch, tok.pad_id(), device)?;
    let val = report_from_energies(rows, &val_all, &e_pos, &e_neg, cfg.thresholds());
    let energies = val_all
        .iter()
        .zip(e_pos.iter().zip(&e_neg))
        .map(|(p, (&chosen, &rejected))| ValEnergy {
            row: p.row,
            chosen,
            rejected,
        })
        .collect();
    Ok((val, energies))
}

/// Summary statistics of the energies of the training set (saved as `energy_stats.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnergyStats {
    pub pairs: usize,
    pub chosen: Dist,
    pub rejected: Dist,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dist {
    pub mean: f64,
    pub std: f64,
    pub p05: f64,
    pub p50: f64,
    pub p95: f64,
}

impl Dist {
    /// Mean, standard deviation and nearest-rank percentiles.
    pub fn of(x: &[f32]) -> Self {
        if x.is_empty() {
            return Self {
                mean: 0.0,
                std: 0.0,
                p05: 0.0,
                p50: 0.0,
                p95: 0.0,
            };
        }
        let n = x.len() as f64;
        let mean = x.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
        let mut s: Vec<f32> = x.to_vec();
        s.sort_by(f32::total_cmp);
        let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize] as f64;
        Self {
            mean,
            std: var.sqrt(),
            p05: q(0.05),
            p50: q(0.5),
            p95: q(0.95),
        }
    }
}

/// Energy statistics over (at most 2048 of) the training pairs.
pub fn energy_stats(
    model: &EnergyModel,
    pairs: &[EncodedPairRow],
    limit: usize,
    pad: i64,
    device: Device,
) -> Result<EnergyStats> {
    let take = &pairs[..pairs.len().min(limit)];
    let (p, n) = pair_energies(model, take, 32, pad, device)?;
    Ok(EnergyStats {
        pairs: take.len(),
        chosen: Dist::of(&p),
        rejected: Dist::of(&n),
    })
}

/// Warns when the final validation accuracy is below 0.5: an untrained head orders pairs like a
/// coin, so a model below that learned them backwards.
pub(super) fn warn_below_chance(val: &EvalReport) {
    if val.pairs > 0 && val.accuracy < 0.5 {
        tracing::warn!(
            accuracy = val.accuracy,
            pairs = val.pairs,
            "the model's validation accuracy is below chance: it ranks more pairs the wrong way \
             round than a coin would (check chosen/rejected order, the learning rate and \
             metrics.jsonl)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_is_hand_computed() {
        let d = Dist::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!((d.mean, d.p05, d.p50, d.p95), (3.0, 1.0, 3.0, 5.0));
        assert!((d.std - 2f64.sqrt()).abs() < 1e-12);
    }
}
