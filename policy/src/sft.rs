//! Supervised fine-tuning (InstructGPT's SFT step, Ouyang et al. 2022): next-token
//! cross-entropy on answer tokens (and the EOS) only, AdamW + warmup/cosine, global-norm
//! clipping, gradient accumulation, validation loss every N steps, metrics JSONL and atomic
//! checkpoints, all from the training-loop toolkit [`crate::train`] (which also says what
//! happens to a non-finite loss).
//!
//! Resume is bit-exact on CPU: the batch order of every step is a pure function of
//! `(seed, step)`, dropout is reseeded from `(seed, step)`, and the checkpoint holds the
//! weights and the optimizer moments.
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use tracing::{info, instrument};

use crate::batch::pad_right;
use crate::error::{PolicyError, Result};
use crate::model::{GptConfig, Trunk};
use crate::score::encode_pair_fitting;
use crate::tokenizer::{EncodedPair, Tokenizer};
use crate::train::{
    checkpoint_due, clip_grad_norm, eval_due, load_checkpoint, lr_at, save_checkpoint, AdamW,
    EpochSampler, MetricsLog, NonFiniteGuard, OptimConfig, NONFINITE_LIMIT,
};
use crate::{rng, Policy};

/// SFT settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SftConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    pub optim: OptimConfig,
    /// Validation loss every this many steps (and at the end).
    pub eval_every: u64,
    /// At most this many validation pairs are scored.
    pub eval_max: usize,
    /// Checkpoint every this many steps (0 = only the final weights).
    pub checkpoint_every: u64,
    /// Seed of initialisation, batch order and dropout.
    pub seed: u64,
    /// Model shape for a fresh model; `vocab_size` is raised to the tokenizer's if smaller.
    pub model: GptConfig,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            steps: 300,
            batch: 32,
            grad_accum: 1,
            optim: OptimConfig::default(),
            eval_every: 50,
            eval_max: 512,
            checkpoint_every: 100,
            seed: 0,
            model: GptConfig {
                vocab_size: 0,
                n_ctx: 64,
                d_model: 96,
                n_layer: 3,
                n_head: 4,
                dropout: 0.0,
                layer_norm_eps: 1e-5,
            },
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SftReport {
    pub steps: u64,
    pub resumed_from: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_ppl: f64,
    /// The starting model's validation loss, when the run started from one (`init`).
    pub init_val_loss: Option<f64>,
    pub train_pairs: usize,
    pub val_pairs: usize,
    pub dropped_pairs: usize,
    pub tokens_per_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResumeState {
    step: u64,
}

/// Right-padded inputs `[B, T-1]` and the flat indices/targets of answer positions.
pub struct SftBatch {
    pub ids: Tensor,
    pub mask: Tensor,
    /// Indices into the flattened `[B * (T-1)]` positions whose next token is an answer token.
    pub select: Tensor,
    pub targets: Tensor,
}

impl SftBatch {
    pub fn new(pairs: &[&EncodedPair], pad: i64, device: Device) -> Self {
        let inputs: Vec<Vec<i64>> = pairs
            .iter()
            .map(|p| p.ids[..p.ids.len() - 1].to_vec())
            .collect();
        let (ids, mask) = pad_right(&inputs, pad, device);
        let width = ids.size()[1] as usize;
        let (mut select, mut targets) = (Vec::new(), Vec::new());
        for (b, p) in pairs.iter().enumerate() {
            // input position t predicts token t + 1; answer tokens start at answer_start
            for t in p.answer_start - 1..p.ids.len() - 1 {
                select.push((b * width + t) as i64);
                targets.push(p.ids[t + 1]);
            }
        }
        Self {
            ids,
            mask,
            select: Tensor::from_slice(&select).to_device(device),
            targets: Tensor::from_slice(&targets).to_device(device),
        }
    }

    /// Mean cross-entropy over answer tokens; the LM head only runs on those positions.
    pub fn loss(&self, model: &Trunk, train: bool) -> Tensor {
        let d = model.wte().size()[1];
        let h = model
            .hidden(&self.ids, &self.mask, train)
            .view([-1, d])
            .index_select(0, &self.select); // [N, D]
        crate::train::chunked_lm_loss(
            &h,
            model.head(),
            &self.targets,
            crate::train::lm_loss::CHUNK_ELEMENTS,
        )
    }

    pub fn n_targets(&self) -> i64 {
        self.targets.size()[0]
    }

    pub fn n_tokens(&self) -> i64 {
        self.ids.numel() as i64
    }
}

fn encode_all(
    tok: &Tokenizer,
    rows: &[(String, String)],
    n_ctx: usize,
) -> (Vec<EncodedPair>, usize) {
    let mut dropped = 0;
    let pairs = rows
        .iter()
        .filter_map(|(p, a)| {
            encode_pair_fitting(tok, p, a, n_ctx)
                .map_err(|_| dropped += 1)
                .ok()
        })
        .collect();
    (pairs, dropped)
}

/// Mean answer-token loss over `pairs` (no grad). Under a process group the ranks share the
/// batches ([`crate::dist::map_chunks`]) and every rank gets the same value as one process.
pub fn eval_loss(
    model: &Trunk,
    pairs: &[EncodedPair],
    batch: usize,
    pad: i64,
    device: Device,
) -> Result<f64> {
    let chunks: Vec<&[EncodedPair]> = pairs.chunks(batch.max(1)).collect();
    let parts = crate::dist::map_chunks(crate::dist::group(), chunks.len(), |i| {
        tch::no_grad(|| {
            let refs: Vec<&EncodedPair> = chunks[i].iter().collect();
            let b = SftBatch::new(&refs, pad, device);
            let n = b.n_targets();
            (b.loss(model, false).double_value(&[]) * n as f64, n)
        })
    })?;
    let (sum, count) = parts
        .iter()
        .fold((0.0, 0i64), |(s, c), &(ps, pc)| (s + ps, c + pc));
    Ok(if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    })
}

/// The starting policy: the one in `init`, else a fresh model seeded from `cfg.seed`.
fn initial_policy(
    cfg: &SftConfig,
    tokenizer: Tokenizer,
    init: Option<&Path>,
    device: Device,
) -> Result<Policy> {
    tch::manual_seed(rng::torch_seed(cfg.seed, "sft-init", 0));
    match init {
        Some(dir) => Policy::load(dir, device),
        None => {
            let mut model = cfg.model.clone();
            model.vocab_size = model.vocab_size.max(tokenizer.vocab_size());
            Policy::new(model, tokenizer, device)
        }
    }
}

/// Trains a policy on (prompt, answer) rows and writes it into `out` (`config.json`,
/// `model.safetensors`, `tokenizer.json`), with `metrics.jsonl` and `checkpoint/`. Starts from
/// `init` (a policy directory) when given, else from a fresh model; resumes from
/// `out/checkpoint` when present.
#[instrument(skip_all, fields(steps = cfg.steps))]
pub fn train(
    cfg: &SftConfig,
    tokenizer: Tokenizer,
    train_rows: &[(String, String)],
    val_rows: &[(String, String)],
    init: Option<&Path>,
    out: &Path,
    device: Device,
) -> Result<SftReport> {
    if cfg.batch == 0 || cfg.grad_accum == 0 || cfg.steps == 0 {
        return Err(PolicyError::Invalid(
            "steps, batch and grad_accum must be > 0".into(),
        ));
    }
    let mut policy = initial_policy(cfg, tokenizer, init, device)?;
    let n_ctx = policy.config.n_ctx() as usize;
    let (train_pairs, d1) = encode_all(&policy.tokenizer, train_rows, n_ctx);
    let (mut val_pairs, d2) = encode_all(&policy.tokenizer, val_rows, n_ctx);
    val_pairs.truncate(cfg.eval_max);
    if train_pairs.is_empty() {
        return Err(PolicyError::Invalid(
            "no training pair fits the model context".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| PolicyError::io("creating", out, e))?;
    let mut opt = AdamW::new(&policy.vs, &cfg.optim);
    let ckpt = out.join("checkpoint");
    let start = resume(&ckpt, &mut policy, &mut opt)?;
    let mut metrics = MetricsLog::open(&out.join("metrics.jsonl"), "step", Some(start))?;
    if start > 0 {
        info!(step = start, "resuming from checkpoint");
    }
    let key = rng::key(cfg.seed, "sft-shuffle");
    let averager = crate::train::Averager::new(opt.params())?;
    let mut steps = Steps {
        cfg,
        policy: &policy,
        opt,
        averager,
        pairs: &train_pairs,
        val: &val_pairs,
        sampler: EpochSampler::wrapping(key, train_pairs.len(), cfg.batch),
        tokens: 0,
    };
    // From a pretrained model, its own validation loss is the bar the run must not fall under.
    let init_val_loss = match init.is_some() && start == 0 && !val_pairs.is_empty() {
        true => Some(steps.val_loss()?),
        false => None,
    };
    if let Some(v) = init_val_loss {
        info!(val_loss = v, "validation loss of the starting model");
        metrics.write(&serde_json::json!({ "step": 0, "val_loss": v, "val_ppl": v.exp() }))?;
    }
    let clock = Instant::now();
    let (train_loss, mut val_loss) = steps.run(start, &ckpt, &mut metrics)?;
    let tokens = crate::dist::sum_over_ranks(steps.tokens)?;
    let tokens_per_s = tokens as f64 / clock.elapsed().as_secs_f64().max(1e-9);
    if start >= cfg.steps {
        val_loss = steps.val_loss()?;
    }
    warn_if_worse(init_val_loss, val_loss);
    policy.save(out)?;
    Ok(SftReport {
        steps: cfg.steps,
        resumed_from: start,
        train_loss,
        val_loss,
        val_ppl: val_loss.exp(),
        init_val_loss,
        train_pairs: train_pairs.len(),
        val_pairs: val_pairs.len(),
        dropped_pairs: d1 + d2,
        tokens_per_s,
    })
}

/// Warns when SFT from a pretrained model ends with a higher validation loss than it started.
fn warn_if_worse(start: Option<f64>, end: f64) {
    if let Some(v) = start.filter(|v| end.is_finite() && end > *v) {
        tracing::warn!(
            start = v,
            end,
            "SFT ended with a higher validation loss than the model it started from: the \
             fine-tuned policy is worse on held-out data (lower the learning rate or the steps)"
        );
    }
}

/// The step to start from: the checkpoint's in `ckpt`, if any, restored into `policy` and
/// `opt`. Under a process group every rank starts from rank 0's weights, optimizer and step
/// (only rank 0 checkpoints).
fn resume(ckpt: &Path, policy: &mut Policy, opt: &mut AdamW) -> Result<u64> {
    let start = load_checkpoint::<ResumeState>(ckpt, &mut policy.vs, opt)?.map_or(0, |s| s.step);
    let Some(pg) = crate::dist::group() else {
        return Ok(start);
    };
    crate::train::replicate(pg, &policy.vs, opt)?;
    let step = Tensor::from_slice(&[start as i64]);
    pg.broadcast(&step, 0)?;
    Ok(step.int64_value(&[0]) as u64)
}

/// The step loop of one SFT run.
struct Steps<'a> {
    cfg: &'a SftConfig,
    policy: &'a Policy,
    opt: AdamW,
    /// Averages the gradients over the ranks (nothing alone).
    averager: crate::train::Averager,
    pairs: &'a [EncodedPair],
    val: &'a [EncodedPair],
    sampler: EpochSampler,
    /// Tokens in the micro-batches trained on so far.
    tokens: i64,
}

impl Steps<'_> {
    /// Steps `start..cfg.steps`, logging each to `metrics` and checkpointing into `ckpt` when
    /// due; returns the last training loss and the last validation loss (NaN when none).
    fn run(&mut self, start: u64, ckpt: &Path, metrics: &mut MetricsLog) -> Result<(f64, f64)> {
        let cfg = self.cfg;
        let mut guard = NonFiniteGuard::new(NONFINITE_LIMIT, (start > 0).then_some(start));
        let (mut train_loss, mut val_loss) = (f64::NAN, f64::NAN);
        let mut saved = (start > 0).then_some(start);
        for step in start..cfg.steps {
            if let Some(signal) = crate::interrupt::requested_in_job()? {
                if step > start && saved != Some(step) && crate::dist::is_writer() {
                    let state = ResumeState { step };
                    save_checkpoint(ckpt, &self.policy.vs, &self.opt, &state)?;
                    saved = Some(step);
                }
                let checkpoint = saved.map(|s| format!("step {s}"));
                return Err(crate::interrupt::Interrupted { signal, checkpoint }.into());
            }
            let done = step + 1;
            let trained = self.step(step)?;
            guard.record(done, trained.is_some())?;
            let mut line = serde_json::json!({ "step": done });
            if let Some((loss, lr, grad_norm)) = trained {
                train_loss = loss;
                // For progress bars (`ember`'s `progress` tracing layer); off unless a bar listens.
                tracing::trace!(target: "progress", task = "sft", step = done, total = cfg.steps, loss);
                line["loss"] = loss.into();
                line["lr"] = lr.into();
                line["grad_norm"] = grad_norm.into();
            }
            let evaluated = eval_due(done, cfg.eval_every.max(1), cfg.steps);
            if evaluated {
                val_loss = self.val_loss()?;
                line["val_loss"] = val_loss.into();
                line["val_ppl"] = val_loss.exp().into();
                info!(step = done, train_loss, val_loss, "sft");
            }
            if trained.is_some() || evaluated {
                metrics.write(&line)?;
            }
            if checkpoint_due(done, cfg.checkpoint_every, cfg.steps) && crate::dist::is_writer() {
                save_checkpoint(
                    ckpt,
                    &self.policy.vs,
                    &self.opt,
                    &ResumeState { step: done },
                )?;
                guard.saved(done);
                saved = Some(done);
            }
        }
        Ok((train_loss, val_loss))
    }

    /// One optimizer step over `grad_accum` micro-batches: (mean loss, lr, gradient norm), or
    /// `None` when a loss or the gradient norm is not finite (gradients cleared, no update).
    ///
    /// Under a process group each micro-batch is this rank's shard of the global one; its loss
    /// averages over the global micro-batch's answer tokens, and the gradients are averaged
    /// over the ranks once, after the last micro-batch, so the update is one process's on the
    /// whole batch. A non-finite loss on any rank makes the averaged gradients non-finite, and
    /// every rank skips the step.
    fn step(&mut self, step: u64) -> Result<Option<(f64, f64, f64)>> {
        let (cfg, policy) = (self.cfg, self.policy);
        let accum = cfg.grad_accum as u64;
        let dist = crate::dist::group();
        let rank = dist.map_or(0, |g| g.rank() << 32);
        tch::manual_seed(rng::torch_seed(cfg.seed, "sft-dropout", step) ^ rank);
        let mut loss_sum = 0.0;
        for m in 0..accum {
            let mut idx = self.sampler.indices(step * accum + m);
            if let Some(pg) = dist {
                idx = idx[crate::dist::shard(idx.len(), pg.world_size(), pg.rank())?].to_vec();
            }
            let refs: Vec<&EncodedPair> = idx.iter().map(|&i| &self.pairs[i]).collect();
            let batch = SftBatch::new(&refs, policy.tokenizer.pad_id(), policy.device);
            let mut loss = batch.loss(&policy.model, true);
            if let Some(pg) = dist {
                let n = Tensor::from_slice(&[batch.n_targets() as f64]);
                let global = crate::train::global_counts(pg, &n)?.double_value(&[0]);
                loss *= batch.n_targets() as f64 / global;
            }
            let value = loss.double_value(&[]);
            if !value.is_finite() && dist.is_none() {
                self.opt.zero_grad();
                return Ok(None);
            }
            if m + 1 == accum {
                self.averager.arm();
            }
            (loss / cfg.grad_accum as f64).backward();
            loss_sum += value;
            self.tokens += batch.n_tokens();
        }
        self.averager.finish(self.opt.params())?;
        if let Some(pg) = dist {
            let sum = Tensor::from_slice(&[loss_sum]);
            pg.all_reduce_sum(&sum)?;
            loss_sum = sum.double_value(&[0]) / pg.world_size() as f64;
        }
        let grad_norm = clip_grad_norm(self.opt.params(), cfg.optim.grad_clip);
        if !grad_norm.is_finite() {
            self.opt.zero_grad();
            return Ok(None);
        }
        let lr = lr_at(step, cfg.steps, &cfg.optim);
        self.opt.step(lr);
        self.opt.zero_grad();
        Ok(Some((loss_sum / cfg.grad_accum as f64, lr, grad_norm)))
    }

    fn val_loss(&self) -> Result<f64> {
        let p = self.policy;
        eval_loss(
            &p.model,
            self.val,
            self.cfg.batch,
            p.tokenizer.pad_id(),
            p.device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sft_batch_selects_answer_targets() {
        let p = EncodedPair {
            ids: vec![5, 6, 1, 7, 2],
            answer_start: 3,
        };
        let q = EncodedPair {
            ids: vec![5, 1, 8, 2],
            answer_start: 2,
        };
        let b = SftBatch::new(&[&p, &q], 0, Device::Cpu);
        assert_eq!(b.ids.size(), vec![2, 4]);
        // p: inputs at 2 (SEP) → 7, 3 → EOS; q: inputs at 1 → 8, 2 → EOS (row offset 4)
        assert_eq!(Vec::<i64>::try_from(&b.select).unwrap(), vec![2, 3, 5, 6]);
        assert_eq!(Vec::<i64>::try_from(&b.targets).unwrap(), vec![7, 2, 8, 2]);
    }
}
