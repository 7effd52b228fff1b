//! The extra negatives of a training step (the `nll` loss only): the chosen answers of other
//! prompts of the batch, and answers sampled from a policy once before training, the model's
//! own contrastive samples (LeCun et al. 2006, §2.2).
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use datasets::table::PairRow;
use policy::sample::{Sample, SampleConfig};
use policy::{Policy, Tokenizer};
use tch::Device;
use tracing::info;

use super::{TrainConfig, TrainInputs};
use crate::batch::{encode_negative, in_batch_negatives, EncodedPairRow};
use crate::error::{Result, RewardError};
use crate::loss::LossKind;

/// The extra negatives of each pair of a batch: with the `nll` loss, the chosen answers of
/// `in_batch_negatives` other pairs of the batch, then the answers sampled for its prompt.
pub(super) fn batch_negatives(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    rows: &[PairRow],
    refs: &[&EncodedPairRow],
    sampled: &[Vec<Vec<i64>>],
    max_len: usize,
) -> Vec<Vec<Vec<i64>>> {
    let mut negatives =
        if cfg.loss.kind == LossKind::Nll && cfg.in_batch_negatives > 0 && refs.len() > 1 {
            let prompts: Vec<&str> = refs.iter().map(|p| rows[p.row].prompt.as_str()).collect();
            let answers: Vec<&str> = refs.iter().map(|p| rows[p.row].chosen.as_str()).collect();
            let k = cfg.in_batch_negatives.min(refs.len() - 1);
            in_batch_negatives(tok, &prompts, &answers, k, max_len)
        } else {
            vec![Vec::new(); refs.len()]
        };
    if !sampled.is_empty() {
        for (n, p) in negatives.iter_mut().zip(refs) {
            n.extend(sampled[p.row].iter().cloned());
        }
    }
    negatives
}

/// `cfg.sampled_negatives` answers per training row's prompt, sampled from the
/// `negatives_from` policy (one draw per distinct prompt, deterministic for the seed), each
/// encoded as prompt + SEP + answer + EOS and fitted like the pairs. Empty when off.
pub(super) fn sample_negatives(
    cfg: &TrainConfig,
    inputs: &TrainInputs,
    tok: &Tokenizer,
    rows: &[PairRow],
    max_len: usize,
    device: Device,
) -> Result<Vec<Vec<Vec<i64>>>> {
    let k = cfg.sampled_negatives;
    if k == 0 {
        return Ok(Vec::new());
    }
    let dir = inputs.negatives_from.as_deref().ok_or_else(|| {
        RewardError::Config(
            "sampled negatives need a policy to sample from (--negatives-from DIR)".into(),
        )
    })?;
    let policy = load_policy(dir, tok, rows, device)?;
    let mut prompts: Vec<&str> = rows.iter().map(|r| r.prompt.as_str()).collect();
    prompts.sort_unstable();
    prompts.dedup();
    let sampling = sampling_config(cfg, tok, rows, max_len);
    let clock = Instant::now();
    let owned: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
    let samples =
        policy::sample::sample(&policy, &owned, &sampling).map_err(|e| RewardError::Input {
            path: dir.to_path_buf(),
            message: format!("sampling negatives: {e}"),
        })?;
    let by_prompt = encode_samples(tok, &prompts, &samples, max_len);
    info!(
        prompts = prompts.len(),
        per_prompt = k,
        seconds = clock.elapsed().as_secs_f64(),
        "sampled negatives"
    );
    Ok(rows
        .iter()
        .map(|r| {
            by_prompt
                .get(r.prompt.as_str())
                .cloned()
                .unwrap_or_default()
        })
        .collect())
}

/// Loads the policy in `dir`, which must tokenize like `tok` (probed on the first rows).
fn load_policy(dir: &Path, tok: &Tokenizer, rows: &[PairRow], device: Device) -> Result<Policy> {
    let policy = Policy::load(dir, device).map_err(|e| RewardError::Input {
        path: dir.to_path_buf(),
        message: format!("loading the policy for sampled negatives: {e}"),
    })?;
    let (a, b) = (&policy.tokenizer, tok);
    let probe = rows.iter().take(16).all(|r| {
        a.encode_pair(&r.prompt, &r.chosen).ids == b.encode_pair(&r.prompt, &r.chosen).ids
    });
    let specials = |t: &Tokenizer| (t.vocab_size(), t.pad_id(), t.sep_id(), t.eos_id());
    if !probe || specials(a) != specials(b) {
        return Err(RewardError::Input {
            path: dir.to_path_buf(),
            message: "the negatives policy's tokenizer differs from the energy model's".into(),
        });
    }
    Ok(policy)
}

/// Temperature-1 sampling of `cfg.sampled_negatives` answers, at most as long as the longest
/// answer the data holds.
fn sampling_config(
    cfg: &TrainConfig,
    tok: &Tokenizer,
    rows: &[PairRow],
    max_len: usize,
) -> SampleConfig {
    let longest = rows
        .iter()
        .flat_map(|r| [&r.chosen, &r.rejected])
        .map(|a| tok.encode_pair("", a).ids.len())
        .max()
        .unwrap_or(8);
    SampleConfig {
        n: cfg.sampled_negatives,
        temperature: 1.0,
        top_k: None,
        top_p: None,
        max_new_tokens: longest.clamp(2, max_len.saturating_sub(2).max(2)),
        batch: 64,
        seed: cfg.seed ^ 0x6e65_6761_7469_7665, // "negative"
    }
}

/// The encoded samples of each prompt (`prompts[s.prompt_id]`).
fn encode_samples<'p>(
    tok: &Tokenizer,
    prompts: &[&'p str],
    samples: &[Sample],
    max_len: usize,
) -> HashMap<&'p str, Vec<Vec<i64>>> {
    let mut by_prompt: HashMap<&str, Vec<Vec<i64>>> = HashMap::new();
    for s in samples {
        let prompt = prompts[s.prompt_id];
        by_prompt
            .entry(prompt)
            .or_default()
            .push(encode_negative(tok, prompt, &s.answer, max_len));
    }
    by_prompt
}
