//! Batched, KV-cached generation. Prompts are left-padded so every row's next token sits in the
//! last column; positions come from the mask, so a row's result does not depend on its batch.
//! Sampling draws one uniform per (row, step) from a ChaCha8 stream keyed by
//! `(seed, prompt_id, k)` and inverts the CDF of the filtered distribution, so a prompt's
//! samples do not depend on batch composition either (a global libtorch generator would).
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tracing::instrument;

use crate::batch::pad_left;
use crate::error::{PolicyError, Result};
use crate::model::KvCache;
use crate::{Policy, Tokenizer};

/// How to sample.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SampleConfig {
    /// Samples per prompt.
    pub n: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f64,
    /// Keep only the k most likely tokens.
    pub top_k: Option<i64>,
    /// Keep the smallest set of tokens whose probability reaches p (nucleus sampling).
    pub top_p: Option<f64>,
    /// Longest answer, EOS included.
    pub max_new_tokens: usize,
    /// Sequences generated together.
    pub batch: usize,
    /// Seed of the per-sample streams.
    pub seed: u64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            n: 4,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            max_new_tokens: 32,
            batch: 16,
            seed: 0,
        }
    }
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub prompt_id: usize,
    pub k: usize,
    pub answer: String,
    /// Generated ids, the EOS included when one was generated.
    pub answer_ids: Vec<i64>,
    /// `log p(token)` of each answer id under the policy at temperature 1, no filtering.
    pub answer_logprobs: Vec<f32>,
    pub logprob_sum: f32,
}

/// The decoding rule of one call.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Greedy,
    Sample {
        temperature: f64,
        top_k: Option<i64>,
        top_p: Option<f64>,
        seed: u64,
    },
}

/// `cfg.n` samples for each prompt, ordered by (prompt_id, k).
#[instrument(skip_all, fields(prompts = prompts.len(), n = cfg.n))]
pub fn sample(policy: &Policy, prompts: &[String], cfg: &SampleConfig) -> Result<Vec<Sample>> {
    check(cfg)?;
    let rule = if cfg.temperature == 0.0 {
        Rule::Greedy
    } else {
        Rule::Sample {
            temperature: cfg.temperature,
            top_k: cfg.top_k,
            top_p: cfg.top_p,
            seed: cfg.seed,
        }
    };
    let rows: Vec<(usize, usize)> = (0..prompts.len())
        .flat_map(|p| (0..cfg.n).map(move |k| (p, k)))
        .collect();
    generate(policy, prompts, &rows, rule, cfg.max_new_tokens, cfg.batch)
}

/// The most likely token at every step (k = 0), one answer per prompt.
pub fn greedy(
    policy: &Policy,
    prompts: &[String],
    max_new_tokens: usize,
    batch: usize,
) -> Result<Vec<Sample>> {
    let rows: Vec<(usize, usize)> = (0..prompts.len()).map(|p| (p, 0)).collect();
    generate(policy, prompts, &rows, Rule::Greedy, max_new_tokens, batch)
}

fn check(cfg: &SampleConfig) -> Result<()> {
    let bad = |m: String| Err(PolicyError::Invalid(m));
    if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
        return bad(format!("temperature must be ≥ 0, got {}", cfg.temperature));
    }
    if matches!(cfg.top_k, Some(k) if k < 1) {
        return bad(format!("top_k must be ≥ 1, got {:?}", cfg.top_k));
    }
    if matches!(cfg.top_p, Some(p) if !(p > 0.0 && p <= 1.0)) {
        return bad(format!("top_p must be in (0, 1], got {:?}", cfg.top_p));
    }
    if cfg.n == 0 || cfg.batch == 0 || cfg.max_new_tokens == 0 {
        return bad("n, batch and max_new_tokens must be > 0".into());
    }
    Ok(())
}

fn generate(
    policy: &Policy,
    prompts: &[String],
    rows: &[(usize, usize)],
    rule: Rule,
    max_new: usize,
    batch: usize,
) -> Result<Vec<Sample>> {
    let n_ctx = policy.config.n_ctx() as usize;
    if max_new >= n_ctx {
        return Err(PolicyError::Invalid(format!(
            "max_new_tokens {max_new} must be < n_ctx {n_ctx}"
        )));
    }
    let mut truncated = 0usize;
    let encoded: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| {
            let ids = policy.tokenizer.encode_prompt(p);
            let keep = n_ctx - max_new;
            if ids.len() > keep {
                truncated += 1;
                ids[ids.len() - keep..].to_vec()
            } else {
                ids
            }
        })
        .collect();
    if truncated > 0 {
        tracing::warn!("{truncated} prompts were cut from the left to fit n_ctx {n_ctx} with {max_new} new tokens");
    }
    // Similar lengths together: less padding. The result does not depend on the grouping.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| encoded[rows[i].0].len());
    // Under a process group the ranks share the batches (crate::dist::map_chunks): each batch
    // is the one a single process forms, so the samples are the same bytes.
    let chunks: Vec<&[usize]> = order.chunks(batch.max(1)).collect();
    let generated = tch::no_grad(|| {
        crate::dist::map_chunks(crate::dist::group(), chunks.len(), |c| {
            if crate::interrupt::requested().is_some() {
                return Vec::new(); // reported below, once out of no_grad
            }
            let chunk_rows: Vec<(usize, usize)> = chunks[c].iter().map(|&i| rows[i]).collect();
            let seqs: Vec<Vec<i64>> = chunk_rows.iter().map(|r| encoded[r.0].clone()).collect();
            generate_batch(policy, &seqs, &chunk_rows, rule, max_new)
        })
    })?;
    crate::interrupt::check(None)?;
    let mut out: Vec<Option<Sample>> = vec![None; rows.len()];
    for (chunk, samples) in chunks.iter().zip(generated) {
        for (&i, s) in chunk.iter().zip(samples) {
            out[i] = Some(s);
        }
    }
    Ok(out
        .into_iter()
        .map(|s| s.expect("every row generated"))
        .collect())
}

/// One left-padded batch: prefill, then one cached step per new token.
fn generate_batch(
    policy: &Policy,
    seqs: &[Vec<i64>],
    rows: &[(usize, usize)],
    rule: Rule,
    max_new: usize,
) -> Vec<Sample> {
    let (dev, tok) = (policy.device, &policy.tokenizer);
    let b = seqs.len() as i64;
    let (ids, mask) = pad_left(seqs, tok.pad_id(), dev);
    let t0 = ids.size()[1];
    let full_mask = Tensor::cat(
        &[mask, Tensor::ones([b, max_new as i64], (Kind::Int64, dev))],
        1,
    ); // [B, T0 + M]
    let mut cache = KvCache::new(&policy.config, b, t0 + max_new as i64, dev, Kind::Float);
    let uniforms = match rule {
        Rule::Sample { seed, .. } => Some(draw_uniforms(seed, rows, max_new).to_device(dev)), // [B, M]
        Rule::Greedy => None,
    };
    let mut h = policy
        .model
        .forward(&ids, &full_mask.narrow(1, 0, t0), &mut cache)
        .select(1, t0 - 1); // [B, D]
    let mut done = Tensor::zeros([b], (Kind::Bool, dev));
    let (mut tokens, mut logps) = (Vec::new(), Vec::new());
    for step in 0..max_new {
        let logits = policy.model.step_logits(&h); // [B, V]
        let next = next_token(rule, uniforms.as_ref(), &logits, step); // [B]
        let lp = logits
            .log_softmax(-1, Kind::Float)
            .gather(1, &next.unsqueeze(1), false)
            .squeeze_dim(1); // [B]
        let next = next.masked_fill(&done, tok.pad_id());
        done = done.logical_or(&next.eq(tok.eos_id()));
        tokens.push(next.shallow_clone());
        logps.push(lp);
        // One host sync per step on CPU (free); every 8 steps elsewhere.
        let check = dev == Device::Cpu || step % 8 == 7;
        if step + 1 == max_new || (check && done.all().int64_value(&[]) == 1) {
            break;
        }
        let pos = t0 + step as i64 + 1;
        h = policy
            .model
            .forward(&next.unsqueeze(1), &full_mask.narrow(1, 0, pos), &mut cache)
            .select(1, 0);
    }
    to_samples(&tokens, &logps, rows, tok)
}

/// The token each row takes at `step`: sampled with the row's uniform, or the argmax.
fn next_token(rule: Rule, uniforms: Option<&Tensor>, logits: &Tensor, step: usize) -> Tensor {
    match (rule, uniforms) {
        (
            Rule::Sample {
                temperature,
                top_k,
                top_p,
                ..
            },
            Some(u),
        ) => pick(logits, &u.select(1, step as i64), temperature, top_k, top_p),
        _ => logits.argmax(-1, false),
    }
}

/// Per-step tokens and log-probs `[B]` of one batch as samples, each cut after its EOS.
fn to_samples(
    tokens: &[Tensor],
    logps: &[Tensor],
    rows: &[(usize, usize)],
    tok: &Tokenizer,
) -> Vec<Sample> {
    let steps = tokens.len();
    let tokens = Vec::<i64>::try_from(Tensor::stack(tokens, 1).to_device(Device::Cpu).view(-1))
        .expect("i64 tokens");
    let logps = Vec::<f32>::try_from(Tensor::stack(logps, 1).to_device(Device::Cpu).view(-1))
        .expect("f32 log-probs");
    rows.iter()
        .enumerate()
        .map(|(r, &(prompt_id, k))| {
            let row = &tokens[r * steps..(r + 1) * steps];
            let len = row
                .iter()
                .position(|&t| t == tok.eos_id())
                .map_or(steps, |p| p + 1);
            let answer_logprobs = logps[r * steps..r * steps + len].to_vec();
            Sample {
                prompt_id,
                k,
                answer: tok.decode(&row[..len]),
                answer_ids: row[..len].to_vec(),
                logprob_sum: answer_logprobs.iter().sum(),
                answer_logprobs,
            }
        })
        .collect()
}

/// `[B, M]` uniforms in (0, 1): row r from the stream of its (prompt_id, k).
fn draw_uniforms(seed: u64, rows: &[(usize, usize)], max_new: usize) -> Tensor {
    let mut u = Vec::with_capacity(rows.len() * max_new);
    for &(p, k) in rows {
        let mut rng = crate::rng::stream(seed, "sample", ((p as u64) << 24) | k as u64);
        u.extend((0..max_new).map(|_| crate::rng::open_uniform(&mut rng) as f32));
    }
    Tensor::from_slice(&u).view([rows.len() as i64, max_new as i64])
}

/// Filters logits `[B, V]` (temperature, top-k, top-p) and picks the token whose CDF interval
/// holds `u` `[B]`: the first index with `cdf ≥ u · total`.
pub fn pick(
    logits: &Tensor,
    u: &Tensor,
    temperature: f64,
    top_k: Option<i64>,
    top_p: Option<f64>,
) -> Tensor {
    let v = logits.size()[1];
    let mut l = if temperature == 1.0 {
        logits.shallow_clone()
    } else {
        logits / temperature
    };
    if let Some(k) = top_k.filter(|&k| k < v) {
        let kth = l.topk(k, -1, true, true).0.narrow(1, k - 1, 1); // [B, 1]
        l = l.masked_fill(&l.lt_tensor(&kth), f64::NEG_INFINITY);
    }
    let mut probs = l.softmax(-1, Kind::Float); // [B, V]
    if let Some(p) = top_p.filter(|&p| p < 1.0) {
        let (sorted, idx) = probs.sort(-1, true);
        let before = sorted.cumsum(-1, Kind::Float) - &sorted; // mass strictly before each token
        let kept = sorted.masked_fill(&before.gt(p), 0.0);
        probs = probs.zeros_like().scatter(1, &idx, &kept);
    }
    let cdf = probs.cumsum(-1, Kind::Float); // [B, V], non-decreasing
    let target = (u * cdf.select(1, v - 1)).unsqueeze(1); // [B, 1]
                                                          // A binary search per row: the number of entries below the target, without a [B, V] pass.
    target
        .searchsorted(&cdf, false, false, "left", None::<Tensor>)
        .squeeze_dim(1)
        .clamp_max(v - 1) // [B]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_inverts_the_cdf() {
        let logits = Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4])
            .log()
            .view([1, 4]);
        let at = |u: f32, k: Option<i64>, p: Option<f64>| {
            pick(&logits, &Tensor::from_slice(&[u]), 1.0, k, p).int64_value(&[0])
        };
        // CDF 0.1, 0.3, 0.6, 1.0
        assert_eq!(at(0.05, None, None), 0);
        assert_eq!(at(0.25, None, None), 1);
        assert_eq!(at(0.31, None, None), 2);
        assert_eq!(at(0.99, None, None), 3);
        // top-k 2 keeps {0.3, 0.4} → renormalised CDF over ids 2, 3: 3/7, 1
        assert_eq!(at(0.01, Some(2), None), 2);
        assert_eq!(at(0.5, Some(2), None), 3);
        assert_eq!(at(0.99, Some(1), None), 3);
        // top-p 0.5: sorted 0.4, 0.3 (0.4 < 0.5 so 0.3 is kept), 0.2 dropped
        assert_eq!(at(0.01, None, Some(0.5)), 2);
        assert_eq!(at(0.99, None, Some(0.5)), 3);
        assert_eq!(at(0.5, None, Some(0.3)), 3);
    }

    #[test]
    fn the_binary_search_picks_what_counting_the_cdf_picks() {
        tch::manual_seed(5);
        let logits = Tensor::randn([64, 500], (Kind::Float, tch::Device::Cpu)) * 3.0;
        for (k, p) in [(None, None), (Some(20), None), (None, Some(0.7))] {
            for _ in 0..20 {
                let u = Tensor::rand([64], (Kind::Float, tch::Device::Cpu));
                let got = pick(&logits, &u, 0.8, k, p);
                // The earlier formulation: how many CDF entries lie below u · total.
                let mut l = &logits / 0.8;
                if let Some(k) = k {
                    let kth = l.topk(k, -1, true, true).0.narrow(1, k - 1, 1);
                    l = l.masked_fill(&l.lt_tensor(&kth), f64::NEG_INFINITY);
                }
                let mut probs = l.softmax(-1, Kind::Float);
                if let Some(p) = p {
                    let (sorted, idx) = probs.sort(-1, true);
                    let before = sorted.cumsum(-1, Kind::Float) - &sorted;
                    let kept = sorted.masked_fill(&before.gt(p), 0.0);
                    probs = probs.zeros_like().scatter(1, &idx, &kept);
                }
                let cdf = probs.cumsum(-1, Kind::Float);
                let target = (&u * cdf.select(1, 499)).unsqueeze(1);
                let want = cdf
                    .lt_tensor(&target)
                    .sum_dim_intlist(-1, false, Kind::Int64);
                assert_eq!(
                    Vec::<i64>::try_from(got).unwrap(),
                    Vec::<i64>::try_from(want).unwrap()
                );
            }
        }
    }
}
