//! Held-out evaluation of a policy during fine-tuning, logged once per round: mean energy and
//! gold of fresh samples and of greedy answers, Monte-Carlo KL(π‖π_ref) of the fresh samples
//! (k1 and k3 on the same tokens under both models), and the share of distinct answers.
use datasets::stats::{mean, mean_distinct_share};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::kl::{k1, k3};
use super::update::{sampled_sequence, sequence_logprobs};
use crate::error::Result;
use crate::pool::{by_prompt, draw, gold_of, Candidate};
use crate::sample::{greedy, SampleConfig};
use crate::score::Scorer;
use crate::Policy;

/// The held-out numbers of one round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub sample_energy: Option<f64>,
    pub sample_gold: Option<f64>,
    pub greedy_energy: Option<f64>,
    pub greedy_gold: Option<f64>,
    /// k1 = mean(log π − log π_ref) over the fresh samples; can be negative.
    pub kl_k1: Option<f64>,
    /// k3 = mean((r − 1) − log r), r = π_ref/π; never negative.
    pub kl_k3: Option<f64>,
    /// Mean over prompts of the share of distinct fresh answers.
    pub distinct_share: Option<f64>,
}

/// Fresh samples (`sampling`), greedy answers, their energies and gold, KL to `reference`.
/// Also returns the fresh candidates (for per-prompt comparisons across rounds).
#[instrument(skip_all, fields(prompts = prompts.len()))]
pub fn evaluate(
    policy: &Policy,
    reference: &Policy,
    scorer: &dyn Scorer,
    prompts: &[String],
    sampling: &SampleConfig,
    score_batch: usize,
) -> Result<(HeldOut, Vec<Candidate>)> {
    let fresh = draw(policy, scorer, prompts, sampling, score_batch)?;
    let greedy = greedy(policy, prompts, sampling.max_new_tokens, sampling.batch)?;
    let greedy_answers: Vec<String> = greedy.iter().map(|s| s.answer.clone()).collect();
    let greedy_energy = scorer.energies(prompts, &greedy_answers, score_batch)?;
    let greedy_gold: Option<Vec<f64>> = prompts
        .iter()
        .zip(&greedy_answers)
        .map(|(p, a)| gold_of(p, a).map(f64::from))
        .collect();

    let seqs: Vec<_> = fresh
        .iter()
        .map(|c| sampled_sequence(policy, &c.prompt, &c.answer_ids))
        .collect();
    let pad = policy.tokenizer.pad_id();
    let logp = sequence_logprobs(&policy.model, &seqs, pad, policy.device, score_batch)?;
    let logp_ref = sequence_logprobs(&reference.model, &seqs, pad, reference.device, score_batch)?;

    let energies: Vec<f64> = fresh.iter().map(|c| c.energy as f64).collect();
    let golds: Option<Vec<f64>> = fresh.iter().map(|c| c.gold.map(f64::from)).collect();
    let answers: Vec<&str> = fresh.iter().map(|c| c.answer.as_str()).collect();
    let held = HeldOut {
        sample_energy: mean(&energies),
        sample_gold: golds.as_deref().and_then(mean),
        greedy_energy: mean(&greedy_energy.iter().map(|&e| e as f64).collect::<Vec<_>>()),
        greedy_gold: greedy_gold.as_deref().and_then(mean),
        kl_k1: k1(&logp, &logp_ref),
        kl_k3: k3(&logp, &logp_ref),
        distinct_share: mean_distinct_share(&answers, sampling.n),
    };
    Ok((held, fresh))
}

/// Per-prompt mean gold of a pool (`None` unless every candidate has gold).
pub fn per_prompt_gold(cands: &[Candidate]) -> Option<Vec<f64>> {
    by_prompt(cands)
        .into_iter()
        .map(|g| {
            let v: Option<Vec<f64>> = g.iter().map(|c| c.gold.map(f64::from)).collect();
            v.and_then(|v| mean(&v))
        })
        .collect()
}
