//! Contrastive training of the energy model (LeCun et al. 2006): each step pushes the energy of
//! the chosen answers down and of the rejected ones (and in-batch or sampled negatives) up, with
//! AdamW, warmup + cosine, global-norm clipping, periodic validation with early stopping on
//! pairwise accuracy, metrics JSONL and atomic checkpoints that resume bit-identically, all on
//! the training-loop toolkit [`policy::train`] (which also says what happens to a non-finite
//! loss).
//!
//! [`config`] (the settings), [`setup`] (tokenizer, model shape, encoded pairs), [`negatives`]
//! (in-batch and sampled), [`mine`] (negatives mined by token swaps, `--negatives refine`),
//! [`relaxed`] (continuous negatives, `--negatives relaxed`), [`steps`] (the loop), [`stats`]
//! (what the final model measures).
use std::path::Path;
use std::time::Instant;

use policy::train::AdamW;
use serde::{Deserialize, Serialize};
use tch::{nn, Device};
use tracing::instrument;

use crate::data::FitCounts;
use crate::error::Result;
use crate::metrics::EvalReport;
use crate::model::EnergyModel;
use crate::store;

mod config;
mod frozen;
mod mine;
mod negatives;
mod relaxed;
mod setup;
mod stats;
mod steps;

pub use config::{TrainConfig, TrainInputs};
pub use mine::{MineConfig, MineFrom, MineStats, Negatives};
pub use stats::{energy_stats, Dist, EnergyStats, ValEnergy};

use frozen::Frozen;
use negatives::sample_negatives;
use setup::{load_trunk, Prepared};
use steps::{Progress, Trainer};

/// What a training run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps_done: u64,
    pub best_step: u64,
    pub stopped_early: bool,
    pub resumed_from: Option<u64>,
    pub nonfinite_skipped: u64,
    pub train_fit: FitCounts,
    pub val_fit: FitCounts,
    pub val: EvalReport,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// Answers sampled as extra negatives (per training prompt × prompts).
    pub sampled_negatives: usize,
    /// What `--negatives refine` mined and what it cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mined: Option<MineStats>,
    /// The final model's energies of the validation pairs it was evaluated on (not in the JSON).
    #[serde(skip)]
    pub val_energies: Vec<ValEnergy>,
}

/// Puts the best weights validation saw (if any) into `vs`. Only rank 0 of a job may hold them
/// (a resumed run reads them from its checkpoint): its weights then reach every rank, which
/// share the final validation.
fn restore_best(vs: &nn::VarStore, best: Option<&[(String, tch::Tensor)]>) -> Result<()> {
    if let Some(b) = best {
        store::restore(vs, b)?;
    }
    if let Some(pg) = policy::dist::group() {
        policy::train::ddp::broadcast_variables(pg, vs)?;
    }
    Ok(())
}

/// Trains into `out` (the stage's staging directory; `out/ckpt` makes it resumable) and writes
/// the model directory there.
#[instrument(skip_all)]
pub fn train(
    cfg: &TrainConfig,
    inputs: &TrainInputs,
    out: &Path,
    device: Device,
) -> Result<TrainSummary> {
    cfg.check()?;
    let started = Instant::now();
    let data = Prepared::load(cfg, inputs)?;
    let max_len = data.ecfg.max_len;
    let sampled = sample_negatives(cfg, inputs, &data.tok, &data.train_rows, max_len, device)?;
    tch::manual_seed(cfg.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let model = EnergyModel::new(vs.root(), &data.ecfg);
    if let Some(init) = &inputs.init {
        load_trunk(&mut vs, init)?;
    }
    let frozen = Frozen::new(cfg, &model, &vs);
    let mut opt = AdamW::new(&vs, &cfg.optim);
    let mut progress = Progress::load(out, &mut vs, &mut opt)?;
    let mut trainer = Trainer {
        cfg,
        data: &data,
        sampled: &sampled,
        model: &model,
        frozen,
        vs: &vs,
        opt,
        out,
        device,
    };
    let clock = Instant::now();
    let tokens = trainer.run(&mut progress)?;
    if trainer.frozen.blocks() > 0 {
        tracing::info!(
            frozen_blocks = trainer.frozen.blocks(),
            cached_sequences = trainer.frozen.cached(),
            "trained the top blocks only"
        );
    }
    let loop_s = clock.elapsed().as_secs_f64();
    restore_best(&vs, progress.best.as_deref())?;
    let (val, val_energies) = stats::final_validation(cfg, &data, &model, device)?;
    stats::warn_below_chance(&val);
    store::save_model(out, &vs, &data.ecfg, &data.tok)?;
    store::write_json(&out.join(store::TRAIN_CONFIG_FILE), cfg)?;
    let stats = energy_stats(
        &model,
        &data.train_pairs,
        cfg.stats_pairs,
        data.tok.pad_id(),
        device,
    )?;
    store::write_json(&out.join(store::STATS_FILE), &stats)?;
    if cfg.negatives != Negatives::None {
        log_mined(&progress.mined.stats);
    }
    let state = progress.state.clone();
    Ok(TrainSummary {
        steps_done: state.step,
        best_step: state.best_step,
        stopped_early: state.stopped_early,
        resumed_from: progress.resumed_from,
        nonfinite_skipped: state.nonfinite,
        train_fit: data.train_fit,
        val_fit: data.val_fit,
        val,
        tokens_per_s: tokens as f64 / loop_s.max(1e-9),
        seconds: started.elapsed().as_secs_f64(),
        sampled_negatives: sampled.iter().map(Vec::len).sum(),
        mined: (cfg.negatives != Negatives::None).then(|| progress.mined.stats.clone()),
        val_energies,
    })
}

/// What mining added and cost, for the log.
fn log_mined(m: &MineStats) {
    tracing::info!(
        refined = m.refined,
        joined = m.joined,
        energy_fwd = m.energy_fwd,
        seconds = m.seconds,
        gold_worse = m.gold_worse,
        gold_known = m.gold_known,
        "mined negatives"
    );
}
