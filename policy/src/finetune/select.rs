//! What one rejection-sampling round trains on: its prompts (consecutive slices of one seeded
//! shuffle), the selected answers (the lowest-energy sample per prompt, or refined answers scored
//! by the energy model) filtered by the keep rule, saved as `round-R/kept.parquet` so a resumed
//! round trains on the same pairs, and the SFT pairs mixed in.
use std::path::Path;

use rand::seq::SliceRandom;

use super::FinetuneConfig;
use crate::error::{PolicyError, Result};
use crate::pool::{best_per_prompt, draw, gold_of, read_candidates, write_candidates, Candidate};
use crate::rng;
use crate::score::Scorer;
use crate::Policy;

/// The prompts of round `round` (1-based): consecutive slices of one seeded shuffle, cyclic.
pub fn round_prompts(prompts: &[String], per_round: usize, seed: u64, round: usize) -> Vec<String> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.shuffle(&mut rng::stream(seed, "finetune-prompts", 0));
    let per_round = if per_round == 0 {
        prompts.len()
    } else {
        per_round
    };
    (0..per_round)
        .map(|j| prompts[order[((round - 1) * per_round + j) % prompts.len()]].clone())
        .collect()
}

/// Refined answers scored by the energy model, one candidate per pair.
fn score_refined(
    scorer: &dyn Scorer,
    pairs: &[(String, String)],
    batch: usize,
) -> Result<Vec<Candidate>> {
    let (prompts, answers): (Vec<String>, Vec<String>) = pairs.iter().cloned().unzip();
    let energies = scorer.energies(&prompts, &answers, batch)?;
    Ok(prompts
        .into_iter()
        .zip(answers)
        .zip(energies)
        .enumerate()
        .map(|(i, ((prompt, answer), energy))| Candidate {
            prompt_id: i,
            k: 0,
            gold: gold_of(&prompt, &answer),
            prompt,
            answer,
            energy,
            logprob_sum: f32::NAN,
            answer_ids: vec![],
        })
        .collect())
}

/// The selected answers of a round: the lowest-energy sample per prompt, or the refined answers
/// scored by the energy model; then the keep rule.
pub fn select_round(
    cfg: &FinetuneConfig,
    policy: &Policy,
    scorer: &dyn Scorer,
    prompts: &[String],
    refined: Option<&[(String, String)]>,
    seed: u64,
) -> Result<Vec<Candidate>> {
    let best = match refined {
        None => {
            let sampling = cfg.sampling(cfg.sampling.n, seed);
            best_per_prompt(&draw(policy, scorer, prompts, &sampling, cfg.score_batch)?)
        }
        Some(pairs) => score_refined(scorer, pairs, cfg.score_batch)?,
    };
    let keep = cfg
        .keep
        .apply(&best.iter().map(|c| c.energy).collect::<Vec<_>>());
    Ok(best
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(c, _)| c)
        .collect())
}

/// The kept answers of a round: read back from `round_dir/kept.parquet` when a previous attempt
/// wrote it, else selected by `select` and written there (atomically, by a rename).
pub fn kept_for_round(
    round_dir: &Path,
    select: impl FnOnce() -> Result<Vec<Candidate>>,
) -> Result<Vec<Candidate>> {
    let kept_path = round_dir.join("kept.parquet");
    // In a job only rank 0 keeps the files; it says whether the round's answers were kept.
    let cached =
        crate::dist::from_root(
            crate::dist::group(),
            "reading kept.parquet",
            || match kept_path.exists() {
                true => read_candidates(&kept_path).map(Some),
                false => Ok(None),
            },
        )?;
    if let Some(kept) = cached {
        return Ok(kept);
    }
    let kept = select()?;
    if !crate::dist::is_writer() {
        return Ok(kept);
    }
    std::fs::create_dir_all(round_dir).map_err(|e| PolicyError::io("creating", round_dir, e))?;
    let tmp = round_dir.join("kept.parquet.tmp");
    write_candidates(&tmp, &kept)?;
    std::fs::rename(&tmp, &kept_path).map_err(|e| PolicyError::io("writing", &kept_path, e))?;
    Ok(kept)
}

/// The kept (prompt, answer) pairs followed by `round(kept · mix_ratio)` SFT pairs drawn without
/// replacement from `mix` (at most all of them) with the round's `finetune-mix` stream.
pub fn training_pairs(
    kept: &[Candidate],
    mix: Option<&[(String, String)]>,
    mix_ratio: f64,
    seed: u64,
    round: usize,
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = kept
        .iter()
        .map(|c| (c.prompt.clone(), c.answer.clone()))
        .collect();
    if let Some(mix) = mix {
        let count = ((kept.len() as f64 * mix_ratio).round() as usize).min(mix.len());
        let mut r = rng::stream(seed, "finetune-mix", round as u64);
        pairs.extend(
            rand::seq::index::sample(&mut r, mix.len(), count)
                .iter()
                .map(|i| mix[i].clone()),
        );
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    #[test]
    fn rounds_walk_one_shuffle_cyclically() {
        let all = prompts(5);
        let (r1, r2, r3) = (
            round_prompts(&all, 2, 7, 1),
            round_prompts(&all, 2, 7, 2),
            round_prompts(&all, 2, 7, 3),
        );
        // Five distinct prompts over rounds 1..=2 and the first of round 3; then it wraps.
        let mut seen: Vec<&String> = r1.iter().chain(&r2).chain(&r3[..1]).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5);
        assert_eq!(round_prompts(&all, 2, 7, 4)[0], r1[1]);
        assert_eq!(round_prompts(&all, 0, 7, 1).len(), 5);
    }

    #[test]
    fn mix_adds_a_seeded_share_of_sft_pairs() {
        let cand = |i: usize| Candidate {
            prompt_id: i,
            k: 0,
            prompt: format!("p{i}"),
            answer: format!("a{i}"),
            energy: 0.0,
            logprob_sum: 0.0,
            gold: None,
            answer_ids: vec![],
        };
        let kept = vec![cand(0), cand(1)];
        let mix: Vec<(String, String)> = (0..10).map(|i| (format!("m{i}"), "x".into())).collect();
        let pairs = training_pairs(&kept, Some(&mix), 1.5, 3, 1);
        assert_eq!(pairs.len(), 2 + 3);
        assert_eq!(
            pairs[..2],
            [("p0".into(), "a0".into()), ("p1".into(), "a1".into())]
        );
        assert_eq!(pairs, training_pairs(&kept, Some(&mix), 1.5, 3, 1));
        assert_eq!(training_pairs(&kept, Some(&mix[..1]), 1.5, 3, 1).len(), 3);
        assert_eq!(training_pairs(&kept, None, 1.5, 3, 1).len(), 2);
    }
}
