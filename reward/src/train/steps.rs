//! The step loop of reward training, on the toolkit of [`policy::train`]: batches from the
//! seeded [`EpochSampler`], one contrastive update per step, validation with early stopping on
//! pairwise accuracy, checkpoints (with the best weights beside them) at every validation and
//! every `checkpoint_every` steps, and the non-finite policy of [`NonFiniteGuard`].
use std::path::Path;

use policy::dist::ProcessGroup;
use policy::train::{
    checkpoint_due, clip_grad_norm, eval_due, global_counts, load_checkpoint, lr_at, replicate,
    save_checkpoint, AdamW, Averager, EpochSampler, MetricsLog, NonFiniteGuard, NONFINITE_LIMIT,
};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};
use tracing::info;

use super::frozen::Frozen;
use super::mine::{MineStats, Miner, MinerState, Negatives};
use super::negatives::batch_negatives;
use super::relaxed::Relaxed;
use super::setup::Prepared;
use super::TrainConfig;
use crate::batch::{EncodedPairRow, PairBatch};
use crate::error::Result;
use crate::eval::{evaluate, to_vec};
use crate::loss::{batch_loss_over, loss_counts};
use crate::metrics::pairwise_accuracy;
use crate::model::EnergyModel;
use crate::store::{self, TrainState};

/// Mixed into the seed for the batch order's generator ("reward" in ASCII).
const SHUFFLE_KEY: u64 = 0x7265_7761_7264;

/// What a checkpoint's `state.json` holds: the scalar state, and the mined negatives' replay
/// buffer when mining.
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    #[serde(flatten)]
    state: TrainState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mined: Option<MinerState>,
}

/// Where a run stands: its checkpoint state and the best weights validation has seen.
pub(super) struct Progress {
    pub state: TrainState,
    /// The replay buffer and counts of `--negatives refine` (empty otherwise).
    pub mined: MinerState,
    pub best: Option<Vec<(String, Tensor)>>,
    /// The step of the checkpoint this run resumed from.
    pub resumed_from: Option<u64>,
}

impl Progress {
    /// Restores `out/ckpt` (and its best weights) into `vs` and `opt` when present.
    pub fn load(out: &Path, vs: &mut nn::VarStore, opt: &mut AdamW) -> Result<Self> {
        let Some(Saved { state, mined }) =
            load_checkpoint::<Saved>(&out.join(store::CKPT_DIR), vs, opt)?
        else {
            return Ok(Self {
                state: TrainState::default(),
                mined: MinerState::default(),
                best: None,
                resumed_from: None,
            });
        };
        let best = match state.best_accuracy {
            Some(_) => Some(store::load_best(out, state.best_step)?),
            None => None,
        };
        info!(step = state.step, "resuming from checkpoint");
        Ok(Self {
            resumed_from: Some(state.step),
            state,
            mined: mined.unwrap_or_default(),
            best,
        })
    }
}

/// What one finite step measured.
struct StepStats {
    loss: f64,
    accuracy: f64,
    e_chosen: f64,
    e_rejected: f64,
    grad_norm: f64,
    /// Mined negatives in the step and their mean energy.
    mined: Option<(usize, f64)>,
}

/// Everything the steps of a run read, and the optimizer they update.
pub(super) struct Trainer<'a> {
    pub cfg: &'a TrainConfig,
    pub data: &'a Prepared,
    /// Sampled negatives of each training row (empty when off).
    pub sampled: &'a [Vec<Vec<i64>>],
    pub model: &'a EnergyModel,
    /// The frozen bottom of the trunk and its cache (`train_blocks`).
    pub frozen: Frozen,
    pub vs: &'a nn::VarStore,
    pub opt: AdamW,
    pub out: &'a Path,
    pub device: Device,
}

impl Trainer<'_> {
    /// Steps from `p.state.step` to `cfg.steps` (or an early stop), logging to
    /// `out/metrics.jsonl`; returns the tokens trained on.
    pub fn run(&mut self, p: &mut Progress) -> Result<i64> {
        let cfg = self.cfg;
        let metrics_path = self.out.join("metrics.jsonl");
        let mut metrics = MetricsLog::open(&metrics_path, "step", Some(p.state.step))?;
        let mut guard = NonFiniteGuard::new(NONFINITE_LIMIT, p.resumed_from);
        let n = self.data.train_pairs.len();
        let mut sampler = EpochSampler::clamped(cfg.seed ^ SHUFFLE_KEY, n, cfg.batch);
        let dist = policy::dist::group();
        if let Some(pg) = dist {
            self.replicate(pg, p)?;
        }
        let averager = Averager::new(self.opt.params())?;
        let mut tokens = 0i64;
        let mut saved = p.resumed_from;
        while p.state.step < cfg.steps && !p.state.stopped_early {
            let step = p.state.step;
            if let Some(signal) = policy::interrupt::requested_in_job()? {
                if step > 0 && saved != Some(step) && policy::dist::is_writer() {
                    self.checkpoint(p)?;
                    saved = Some(step);
                }
                let checkpoint = saved.map(|s| format!("step {s}"));
                return Err(policy::interrupt::Interrupted { signal, checkpoint }.into());
            }
            // One stream per step: mining draws from it as one process does; then dropout, with
            // a stream of its own on each rank other than 0.
            let seed = (cfg.seed as i64).wrapping_add(step as i64 + 1);
            tch::manual_seed(seed);
            let global = sampler.indices(step);
            let mine = match dist {
                Some(pg) => policy::dist::shard(global.len(), pg.world_size(), pg.rank())?,
                None => 0..global.len(),
            };
            let first = mine.start;
            let batch = self.batch(&global, mine, step, &mut p.mined);
            if let Some(rank) = dist.map(ProcessGroup::rank).filter(|&r| r != 0) {
                tch::manual_seed(seed ^ (rank << 32));
            }
            tokens += batch.tokens;
            let lr = lr_at(step, cfg.steps, &cfg.optim);
            let cacheable = batch.cacheable_rows();
            let e = (self.frozen).energy(self.model, &batch.ids, &batch.mask, cacheable, true); // [R]
            let relaxed = self.relaxed(&batch, first, step, &mut p.mined.stats);
            let opt = &mut self.opt;
            let trained = train_step(e, relaxed.as_ref(), opt, &batch, cfg, lr, &averager)?;
            if trained.is_none() {
                p.state.nonfinite += 1;
            }
            guard.record(step + 1, trained.is_some())?;
            if let Some(s) = trained {
                // For progress bars (`ember`'s `progress` tracing layer).
                tracing::trace!(target: "progress", task = "reward", step = step + 1, total = cfg.steps, loss = s.loss);
                let mut row = serde_json::json!({
                    "step": step + 1, "split": "train", "loss": s.loss, "accuracy": s.accuracy,
                    "e_chosen": s.e_chosen, "e_rejected": s.e_rejected, "grad_norm": s.grad_norm,
                    "lr": lr,
                });
                if let Some((n, e)) = s.mined {
                    row["mined"] = n.into();
                    row["e_mined"] = e.into();
                }
                metrics.write(&row)?;
            }
            p.state.step += 1;
            let done = p.state.step;
            if eval_due(done, cfg.eval_every, cfg.steps) {
                self.validate(p, &mut metrics)?;
            }
            if (checkpoint_due(done, cfg.checkpoint_every, cfg.steps)
                || checkpoint_due(done, cfg.eval_every, cfg.steps))
                && policy::dist::is_writer()
            {
                self.checkpoint(p)?;
                guard.saved(done);
                saved = Some(done);
            }
        }
        Ok(policy::dist::sum_over_ranks(tokens)?)
    }

    /// Starts every rank from rank 0's state: its weights, optimizer and step (it may have
    /// resumed from its checkpoint; the other ranks write no checkpoints).
    /// Starts every rank from rank 0's state: its weights, optimizer, step and replay buffer (it
    /// may have resumed from its checkpoint; the other ranks write no checkpoints).
    fn replicate(&mut self, pg: &ProcessGroup, p: &mut Progress) -> Result<()> {
        replicate(pg, self.vs, &mut self.opt)?;
        let state = (&p.state, p.resumed_from, &p.mined);
        let state = serde_json::to_vec(&state).expect("state serialises");
        let root = pg.all_gather_bytes(&state)?.swap_remove(0);
        (p.state, p.resumed_from, p.mined) =
            serde_json::from_slice(&root).expect("rank 0's state parses");
        Ok(())
    }

    /// The rows `rows` of the global batch `global` (all of it alone; a rank's shard) with
    /// their extra negatives and their mined ones. Mining (on a mining step) runs on the whole
    /// global batch on every rank, as one process mines it, so the replay buffers agree.
    fn batch(
        &self,
        global: &[usize],
        rows: std::ops::Range<usize>,
        step: u64,
        mined: &mut MinerState,
    ) -> PairBatch {
        let d = self.data;
        let idx = &global[rows.clone()];
        let refs: Vec<&EncodedPairRow> = idx.iter().map(|&i| &d.train_pairs[i]).collect();
        let max_len = d.ecfg.max_len;
        let negatives = batch_negatives(
            self.cfg,
            &d.tok,
            &d.train_rows,
            &refs,
            self.sampled,
            max_len,
        );
        let mined = match self.cfg.negatives {
            Negatives::Refine => Miner {
                cfg: &self.cfg.mine,
                state: mined,
            }
            .negatives(self.model, d, global, step)[rows]
                .to_vec(),
            Negatives::None | Negatives::Relaxed => Vec::new(),
        };
        PairBatch::with_mined(&refs, &negatives, &mined, d.tok.pad_id(), self.device)
    }

    /// With `--negatives relaxed`: the energies `[B]` of the continuous answers descent reaches
    /// from the batch's noised chosen answers (counted into `stats`). Each pair's noise has its
    /// own seed, from the step and the pair's place in the global batch (`first` is the place of
    /// the batch's first pair), so ranks draw what one process draws.
    fn relaxed(
        &self,
        batch: &PairBatch,
        first: usize,
        step: u64,
        stats: &mut MineStats,
    ) -> Option<Tensor> {
        if self.cfg.negatives != Negatives::Relaxed {
            return None;
        }
        let clock = std::time::Instant::now();
        let m = &self.cfg.mine;
        let relaxed = Relaxed {
            steps: m.steps,
            lr: m.lr,
            noise: m.noise,
            sep: self.data.tok.sep_id(),
            max_len: self.data.ecfg.max_len,
        };
        let b = batch.pairs;
        let (ids, mask) = (batch.ids.narrow(0, 0, b), batch.mask.narrow(0, 0, b));
        let seed = |j: usize| {
            let index = (step << 32) | (first + j) as u64;
            policy::rng::torch_seed(self.cfg.seed, "relaxed-noise", index)
        };
        let seeds: Vec<i64> = (0..b as usize).map(seed).collect();
        let e = relaxed.energies(self.model, &ids, &mask, true, &seeds);
        stats.refined += b as u64;
        stats.used += b as u64;
        stats.energy_fwd += (b as f64) * (3.0 * m.steps as f64 + 1.0);
        stats.seconds += clock.elapsed().as_secs_f64();
        Some(e)
    }

    /// Scores the validation pairs, logs them, and keeps the best weights (or counts towards
    /// early stopping).
    fn validate(&self, p: &mut Progress, metrics: &mut MetricsLog) -> Result<()> {
        let (cfg, d, st) = (self.cfg, self.data, &mut p.state);
        let batch = cfg.batch.max(16);
        let (pad, th) = (d.tok.pad_id(), cfg.thresholds());
        let r = evaluate(
            self.model,
            &d.val_rows,
            &d.val_pairs,
            batch,
            pad,
            self.device,
            th,
        )?;
        info!(
            step = st.step,
            accuracy = r.accuracy,
            gap = r.mean_gap,
            "validation"
        );
        metrics.write(&serde_json::json!({
            "step": st.step, "split": "val", "accuracy": r.accuracy, "mean_gap": r.mean_gap,
            "ece": r.ece, "e_chosen": r.mean_e_chosen, "e_rejected": r.mean_e_rejected,
        }))?;
        if st.best_accuracy.is_none_or(|b| r.accuracy > b) {
            st.best_accuracy = Some(r.accuracy);
            st.best_step = st.step;
            st.evals_since_best = 0;
            p.best = Some(store::snapshot(self.vs));
        } else {
            st.evals_since_best += 1;
            if cfg.patience > 0 && st.evals_since_best >= cfg.patience {
                info!(step = st.step, "early stopping");
                st.stopped_early = true;
            }
        }
        Ok(())
    }

    /// Writes the best weights (when not on disk yet), then the checkpoint, then drops older
    /// best weights.
    fn checkpoint(&self, p: &Progress) -> Result<()> {
        let best_step = p.state.best_step;
        if let Some(b) = p
            .best
            .as_ref()
            .filter(|_| !store::best_path(self.out, best_step).exists())
        {
            store::save_best(self.out, best_step, b)?;
        }
        let saved = Saved {
            state: p.state.clone(),
            mined: (self.cfg.negatives != Negatives::None).then(|| p.mined.clone()),
        };
        save_checkpoint(&self.out.join(store::CKPT_DIR), self.vs, &self.opt, &saved)?;
        store::prune_best(self.out, best_step);
        Ok(())
    }
}

/// One optimisation step on `batch` with energies `e` `[R]`, or `None` when the loss or the gradient norm is not
/// finite (the gradients are cleared and nothing is updated). With a process group, `batch` is
/// this rank's shard: the loss averages over the global batch's pairs, the gradients are
/// averaged over the ranks before clipping, and the statistics are the global batch's.
fn train_step(
    e: Tensor,
    relaxed: Option<&Tensor>,
    opt: &mut AdamW,
    batch: &PairBatch,
    cfg: &TrainConfig,
    lr: f64,
    averager: &Averager,
) -> Result<Option<StepStats>> {
    let dist = policy::dist::group();
    let (pos, neg, extra) = batch.split(&e);
    let negs = extra.map(|x| Tensor::cat(&[neg.unsqueeze(1), x], 1)); // [B, 1+k]
    let counts = match dist {
        Some(pg) => global_counts(pg, &loss_counts(&batch.tie))?,
        None => loss_counts(&batch.tie),
    };
    let mut loss = batch_loss_over(
        &cfg.loss,
        &pos,
        &neg,
        &batch.margin,
        &batch.tie,
        negs.as_ref(),
        &counts,
    );
    let mined = batch.split_mined(&e);
    let mined_count = job_mined_count(batch, cfg, dist)?;
    if let Some((chosen, m)) = &mined {
        let term = (chosen - m).softplus();
        loss += match mined_count {
            Some(n) => term.sum(Kind::Float) / n,
            None => term.mean(Kind::Float),
        } * cfg.mine.weight;
    }
    let mined = mined
        .map(|(_, m)| m)
        .or_else(|| relaxed.map(Tensor::shallow_clone));
    if let Some(r) = relaxed {
        loss += (&pos - r).softplus().mean(Kind::Float) * cfg.mine.weight;
    }
    let loss_v = loss.double_value(&[]);
    opt.zero_grad();
    // Under a process group every rank takes part in the averaging, whatever its own loss: a
    // non-finite one makes the averaged gradients non-finite, so every rank skips the step.
    if !loss_v.is_finite() && dist.is_none() {
        return Ok(None);
    }
    // The gradients' all-reduce starts during the backward pass, bucket by bucket.
    averager.arm();
    loss.backward();
    averager.finish(opt.params())?;
    let grad_norm = clip_grad_norm(opt.params(), cfg.optim.grad_clip);
    if !grad_norm.is_finite() {
        opt.zero_grad();
        return Ok(None);
    }
    opt.step(lr);
    let (p, n) = (to_vec(&pos), to_vec(&neg));
    let mut s = StepStats {
        loss: loss_v,
        accuracy: pairwise_accuracy(&p, &n),
        e_chosen: mean(&p),
        e_rejected: mean(&n),
        grad_norm,
        mined: mined.map(|m| (m.size()[0] as usize, mean(&to_vec(&m)))),
    };
    if let Some(pg) = dist {
        // Equal shards: the mean of the ranks' means is the global batch's.
        let all = Tensor::from_slice(&[s.loss, s.accuracy, s.e_chosen, s.e_rejected]);
        pg.all_reduce_sum(&all)?;
        let all = Vec::<f64>::try_from(all / pg.world_size() as f64).expect("4 floats");
        (s.loss, s.accuracy, s.e_chosen, s.e_rejected) = (all[0], all[1], all[2], all[3]);
    }
    if let (Some(pg), Some(_)) = (dist, mined_count) {
        s.mined = job_mined(pg, s.mined)?;
    }
    Ok(Some(s))
}

/// With mined negatives on several ranks, the count their loss term divides by: the job's mined
/// negatives over the world size (they vary in number from rank to rank; see
/// [`global_counts`]). `None` alone or without mining: the term is a plain mean.
fn job_mined_count(
    batch: &PairBatch,
    cfg: &TrainConfig,
    dist: Option<&ProcessGroup>,
) -> Result<Option<f64>> {
    match dist.filter(|_| cfg.negatives == Negatives::Refine) {
        Some(pg) => {
            let n = Tensor::from_slice(&[batch.mined_pair.len() as f64]);
            Ok(Some(global_counts(pg, &n)?.double_value(&[0])))
        }
        None => Ok(None),
    }
}

/// The job's mined negatives of a step and their mean energy, from each rank's.
fn job_mined(pg: &ProcessGroup, local: Option<(usize, f64)>) -> Result<Option<(usize, f64)>> {
    let (n, e) = local.unwrap_or((0, 0.0));
    let sums = Tensor::from_slice(&[n as f64, n as f64 * e]);
    pg.all_reduce_sum(&sums)?;
    let (n, total) = (sums.double_value(&[0]), sums.double_value(&[1]));
    Ok((n > 0.0).then(|| (n as usize, total / n)))
}

fn mean(x: &[f32]) -> f64 {
    x.iter().map(|v| *v as f64).sum::<f64>() / x.len().max(1) as f64
}
