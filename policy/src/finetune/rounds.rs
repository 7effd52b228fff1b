//! The policy updates of one fine-tuning round, resumable at any step:
//! - [`sft_steps`]: rejection-sampling fine-tuning (expert iteration, Anthony et al. 2017;
//!   RAFT, Dong et al. 2023): supervised steps on the kept (prompt, answer) pairs, with a KL
//!   penalty to the reference policy on the same tokens ([`super::update::sft_kl_loss`]);
//! - [`rloo_steps`]: REINFORCE leave-one-out (Ahmadian et al. 2024): per step, k samples for
//!   each of a batch of prompts, reward −E − β(log π − log π_ref), leave-one-out advantages,
//!   one policy-gradient step.
//!
//! Both reuse the crate's AdamW, schedule, clipping and checkpoints. Batch order, sampling and
//! dropout are pure functions of (seed, round, step), so a run resumed from a checkpoint takes
//! the same steps as one that was never interrupted.
use rand::seq::index::sample as sample_indices;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tracing::debug;

use super::rloo::{grouped_advantages, kl_penalized};
use super::update::{
    policy_gradient_loss, sampled_sequence, sequence_logprobs, sft_kl_loss, TokenBatch,
};
use crate::error::{PolicyError, Result};
use crate::pool::{draw, Candidate};
use crate::rng;
use crate::sample::SampleConfig;
use crate::score::Scorer;
use crate::tokenizer::EncodedPair;
use crate::train::{clip_grad_norm, lr_at, AdamW, OptimConfig};
use crate::Policy;

/// Running sums of a round's training, saved in checkpoints so a resumed round reports the
/// same means as an uninterrupted one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainSums {
    pub steps: u64,
    pub loss: f64,
    /// SFT: the KL term; RLOO: the mean log π − log π_ref of the samples.
    pub kl: f64,
    /// RLOO: the mean KL-penalised reward and energy of the samples.
    pub reward: f64,
    pub energy: f64,
    /// RLOO: answers sampled for training.
    pub samples: u64,
}

impl TrainSums {
    pub fn mean(&self, sum: f64) -> Option<f64> {
        (self.steps > 0).then(|| sum / self.steps as f64)
    }
}

/// The optimisation settings of a round.
#[derive(Debug, Clone)]
pub struct Steps {
    /// Optimizer steps in the round.
    pub total: u64,
    pub optim: OptimConfig,
    pub seed: u64,
    pub round: usize,
    /// Checkpoint every this many steps (0 = never inside a round).
    pub checkpoint_every: u64,
}

impl Steps {
    fn stream_index(&self, step: u64) -> u64 {
        ((self.round as u64) << 32) | step
    }

    /// Clips, steps at the scheduled rate, zeroes the gradients; returns the gradient norm.
    fn apply(&self, opt: &mut AdamW, step: u64) -> f64 {
        let norm = clip_grad_norm(opt.params(), self.optim.grad_clip);
        opt.step(lr_at(step, self.total, &self.optim));
        opt.zero_grad();
        norm
    }

    fn checkpoint_due(&self, done: u64) -> bool {
        self.checkpoint_every > 0 && done.is_multiple_of(self.checkpoint_every) && done < self.total
    }
}

/// `batch` distinct indices in 0..n (all of them, shuffled, when n ≤ batch) for one step.
pub fn step_batch(seed: u64, stream: u64, n: usize, batch: usize) -> Vec<usize> {
    let mut rng = rng::stream(seed, "finetune-batch", stream);
    sample_indices(&mut rng, n, batch.min(n)).into_vec()
}

/// The data-parallel side of a step on the default process group (a no-op alone): each rank
/// trains on its share of the step's rows, scales its mean loss so that the averaged gradients
/// are one process's on all the rows ([`crate::train::global_counts`]), averages the gradients
/// during the backward pass ([`crate::train::Averager`]), and reports the job's values. The
/// rows vary from round to round (the kept answers), so shares may be uneven.
struct Replicas(
    Option<&'static crate::dist::ProcessGroup>,
    crate::train::Averager,
);

impl Replicas {
    fn new(opt: &AdamW) -> Result<Self> {
        let averager = crate::train::Averager::new(opt.params())?;
        Ok(Self(crate::dist::group(), averager))
    }

    /// Bits that make this rank's dropout stream its own (none for rank 0 or alone).
    fn seed_bits(&self) -> i64 {
        self.0.map_or(0, |g| g.rank() << 32)
    }

    /// This rank's rows of a step's `rows` (not empty), and whether they count. A rank whose
    /// share is empty trains on the first row with weight 0: it still joins the gradient
    /// average, with zeros.
    fn share<T: Clone>(&self, rows: &[T]) -> (Vec<T>, bool) {
        let Some(g) = self.0 else {
            return (rows.to_vec(), true);
        };
        let mine = crate::dist::split(rows.len(), g.world_size(), g.rank());
        match mine.is_empty() {
            true => (rows[..1].to_vec(), false),
            false => (rows[mine].to_vec(), true),
        }
    }

    /// The factor of this rank's mean over `count` items: count / (global count / world).
    fn scale(&self, count: f64) -> Result<f64> {
        let Some(g) = self.0 else {
            return Ok(1.0);
        };
        let global = crate::train::global_counts(g, &Tensor::from_slice(&[count]))?;
        Ok(count / global.double_value(&[0]))
    }

    /// The mean over the ranks of their scaled values: the job's values.
    fn means<const N: usize>(&self, values: [f64; N]) -> Result<[f64; N]> {
        let Some(g) = self.0 else {
            return Ok(values);
        };
        let t = Tensor::from_slice(&values);
        g.all_reduce_sum(&t)?;
        let world = g.world_size() as f64;
        Ok(std::array::from_fn(|i| t.double_value(&[i as i64]) / world))
    }

    /// The loss's backward pass, with the gradients averaged over the ranks (during it).
    fn backward(&self, loss: &Tensor, opt: &AdamW) -> Result<()> {
        self.1.arm();
        loss.backward();
        Ok(self.1.finish(opt.params())?)
    }
}

/// Supervised steps `start..steps.total` on `pairs` (batch of `batch`), KL weight `kl_coef`
/// to `reference`. `checkpoint(done, policy, opt, sums)` is called when one is due.
#[allow(clippy::too_many_arguments)]
pub fn sft_steps(
    policy: &mut Policy,
    reference: &Policy,
    opt: &mut AdamW,
    pairs: &[EncodedPair],
    batch: usize,
    kl_coef: f64,
    steps: &Steps,
    start: u64,
    sums: &mut TrainSums,
    mut checkpoint: impl FnMut(u64, &Policy, &AdamW, &TrainSums) -> Result<()>,
) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let pad = policy.tokenizer.pad_id();
    let replicas = Replicas::new(opt)?;
    for step in start..steps.total {
        let index = steps.stream_index(step);
        let seed = rng::torch_seed(steps.seed, "finetune-dropout", index);
        tch::manual_seed(seed ^ replicas.seed_bits());
        let idx = step_batch(steps.seed, index, pairs.len(), batch);
        let (idx, counts) = replicas.share(&idx);
        let rows: Vec<EncodedPair> = idx.iter().map(|&i| pairs[i].clone()).collect();
        let b = TokenBatch::new(&rows, pad, policy.device);
        let out = sft_kl_loss(&policy.model, Some(&reference.model), &b, kl_coef, true);
        let scale = replicas.scale(if counts { b.answer_tokens() } else { 0.0 })?;
        let [value, kl] = replicas.means([out.loss.double_value(&[]) * scale, out.kl * scale])?;
        if !value.is_finite() {
            return Err(PolicyError::RoundNonFinite {
                round: steps.round,
                step,
                loss: value,
            });
        }
        replicas.backward(&(out.loss * scale), opt)?;
        let norm = steps.apply(opt, step);
        sums.steps += 1;
        sums.loss += value;
        sums.kl += kl;
        tracing::trace!(target: "progress", task = "finetune", step = step + 1, total = steps.total, loss = value);
        debug!(step, loss = value, kl, grad_norm = norm, "finetune sft");
        if steps.checkpoint_due(step + 1) {
            checkpoint(step + 1, policy, opt, sums)?;
        }
    }
    Ok(())
}

/// What an RLOO round samples with.
#[derive(Debug, Clone)]
pub struct RlooSampling {
    /// Settings of the sampler (`n` = k samples per prompt, ≥ 2).
    pub sampling: SampleConfig,
    /// Prompts per policy-gradient step.
    pub prompts_per_step: usize,
    /// β of the KL penalty in the reward.
    pub beta: f64,
    pub score_batch: usize,
}

/// One RLOO step's samples: the scored pool, its sequences, their log-probs under the policy
/// and the reference, and the KL-penalised rewards.
struct RlooBatch {
    pool: Vec<Candidate>,
    seqs: Vec<EncodedPair>,
    logp: Vec<f32>,
    logp_ref: Vec<f32>,
    rewards: Vec<f64>,
}

/// Samples and scores the prompts of step `step` (prompts `step·P .. (step+1)·P`, cyclically).
fn rloo_batch(
    policy: &Policy,
    reference: &Policy,
    scorer: &dyn Scorer,
    prompts: &[String],
    cfg: &RlooSampling,
    steps: &Steps,
    step: u64,
) -> Result<RlooBatch> {
    let pad = policy.tokenizer.pad_id();
    let chunk: Vec<String> = (0..cfg.prompts_per_step)
        .map(|j| prompts[(step as usize * cfg.prompts_per_step + j) % prompts.len()].clone())
        .collect();
    let index = steps.stream_index(step);
    let seed = rng::stream(steps.seed, "finetune-rloo-sample", index).random::<u64>();
    let sampling = SampleConfig {
        seed,
        ..cfg.sampling.clone()
    };
    let pool = draw(policy, scorer, &chunk, &sampling, cfg.score_batch)?;
    let seqs: Vec<EncodedPair> = pool
        .iter()
        .map(|c| sampled_sequence(policy, &c.prompt, &c.answer_ids))
        .collect();
    let logp = sequence_logprobs(&policy.model, &seqs, pad, policy.device, cfg.score_batch)?;
    let logp_ref = sequence_logprobs(
        &reference.model,
        &seqs,
        pad,
        reference.device,
        cfg.score_batch,
    )?;
    let rewards: Vec<f64> = pool
        .iter()
        .zip(logp.iter().zip(&logp_ref))
        .map(|(c, (&lp, &lr))| {
            kl_penalized(
                scorer.reward(c.energy as f64),
                lp as f64,
                lr as f64,
                cfg.beta,
            )
        })
        .collect();
    Ok(RlooBatch {
        pool,
        seqs,
        logp,
        logp_ref,
        rewards,
    })
}

/// RLOO steps `start..steps.total`: step s uses prompts `s·P .. (s+1)·P` (cyclically).
#[allow(clippy::too_many_arguments)]
pub fn rloo_steps(
    policy: &mut Policy,
    reference: &Policy,
    scorer: &dyn Scorer,
    opt: &mut AdamW,
    prompts: &[String],
    cfg: &RlooSampling,
    steps: &Steps,
    start: u64,
    sums: &mut TrainSums,
    mut checkpoint: impl FnMut(u64, &Policy, &AdamW, &TrainSums) -> Result<()>,
) -> Result<()> {
    let k = cfg.sampling.n;
    let pad = policy.tokenizer.pad_id();
    let replicas = Replicas::new(opt)?;
    for step in start..steps.total {
        // Every rank samples and scores the whole step (sharing the batches) and trains on its
        // share of the sequences.
        let b = rloo_batch(policy, reference, scorer, prompts, cfg, steps, step)?;
        let adv: Vec<(EncodedPair, f32)> = grouped_advantages(&b.rewards, k)
            .iter()
            .zip(&b.seqs)
            .map(|(&a, s)| (s.clone(), a as f32))
            .collect();
        let (mine, counts) = replicas.share(&adv);
        let (seqs, adv): (Vec<EncodedPair>, Vec<f32>) = mine.into_iter().unzip();
        let batch = TokenBatch::new(&seqs, pad, policy.device);
        let loss = policy_gradient_loss(
            &policy.model,
            &batch,
            &Tensor::from_slice(&adv).to_device(policy.device),
        );
        let scale = replicas.scale(if counts { seqs.len() as f64 } else { 0.0 })?;
        let [value] = replicas.means([loss.double_value(&[]) * scale])?;
        replicas.backward(&(loss * scale), opt)?;
        steps.apply(opt, step);
        let n = b.pool.len() as f64;
        sums.steps += 1;
        sums.loss += value;
        tracing::trace!(target: "progress", task = "finetune", step = step + 1, total = steps.total, loss = value);
        sums.kl += b
            .logp
            .iter()
            .zip(&b.logp_ref)
            .map(|(a, b)| (a - b) as f64)
            .sum::<f64>()
            / n;
        sums.reward += b.rewards.iter().sum::<f64>() / n;
        sums.energy += b.pool.iter().map(|c| c.energy as f64).sum::<f64>() / n;
        sums.samples += b.pool.len() as u64;
        debug!(step, loss = value, "finetune rloo");
        if steps.checkpoint_due(step + 1) {
            checkpoint(step + 1, policy, opt, sums)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_batches_are_reproducible_distinct_and_bounded() {
        let a = step_batch(1, 7, 10, 4);
        assert_eq!(a, step_batch(1, 7, 10, 4));
        assert_ne!(a, step_batch(1, 8, 10, 4));
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert!(a.iter().all(|&i| i < 10));
        let mut all = step_batch(1, 7, 3, 8);
        all.sort();
        assert_eq!(all, vec![0, 1, 2]);
    }
}
