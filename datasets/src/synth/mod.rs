//! The built-in preference task with a gold reward. Problems with verifiable answers
//! ([`task`]), a noisy answer generator ([`noise`]) and simulated annotators who prefer a over b
//! with P(a ≻ b) = σ((g(a) − g(b)) / T) and then flip the label with probability `flip_rate`
//! (Bradley–Terry annotators with label noise). Writes the same split files as `ingest` plus
//! `gold_chosen` / `gold_rejected`, `sft.parquet` (a share deliberately wrong),
//! `eval_prompts.parquet` (prompts held out from every training row) and `stats.json`.
//! Deterministic for a seed: every item owns an RNG seeded from (seed, stream, index).
pub mod noise;
pub mod task;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

pub use noise::{noisy_answer, wrong_answer, AnswerKind};
pub use task::{gold, Problem, ProblemSize, Task, PARTIAL_MAX};

use crate::error::{DatasetError, Result};
use crate::ingest::write_stats;
use crate::split::{pair_id, split_of, Split};
use crate::table::{write_pairs, write_prompts, write_sft, PairRow};

/// Everything `synth` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    pub task: Task,
    pub pairs: usize,
    pub demos: usize,
    pub eval_prompts: usize,
    /// T of the annotators; 0 means they always prefer the higher gold score.
    pub label_temperature: f64,
    /// Probability that an annotator's label is flipped after the fact.
    pub flip_rate: f64,
    /// Share of SFT demonstrations that are deliberately wrong.
    pub demo_error_rate: f64,
    /// `[train, val, test]` fractions, split by prompt.
    pub split: [f64; 3],
    pub size: ProblemSize,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            task: Task::Mix,
            pairs: 4000,
            demos: 4000,
            eval_prompts: 200,
            label_temperature: 0.1,
            flip_rate: 0.05,
            demo_error_rate: 0.2,
            split: [0.9, 0.05, 0.05],
            size: ProblemSize::default(),
            seed: 0,
        }
    }
}

/// `stats.json` of `synth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthStats {
    pub task: String,
    pub pairs_generated: usize,
    pub duplicates_dropped: usize,
    pub splits: BTreeMap<String, usize>,
    /// Pairs whose chosen answer has the lower gold score (among pairs with unequal scores).
    pub labels_against_gold: usize,
    pub pairs_with_gold_gap: usize,
    /// What the annotator model predicts for `labels_against_gold`.
    pub expected_against_gold: f64,
    pub answer_kinds: BTreeMap<String, usize>,
    pub demos: usize,
    pub demos_wrong: usize,
    pub eval_prompts: usize,
}

/// An RNG owned by item `index` of a named stream.
pub fn item_rng(seed: u64, stream: &str, index: u64) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(stream.as_bytes());
    h.update(index.to_le_bytes());
    ChaCha8Rng::from_seed(h.finalize().into())
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// P(annotator prefers a over b) for gold scores `ga`, `gb` (before flipping).
pub fn preference_probability(ga: f32, gb: f32, temperature: f64) -> f64 {
    let d = (ga - gb) as f64;
    if temperature <= 0.0 {
        return if d > 0.0 {
            1.0
        } else if d < 0.0 {
            0.0
        } else {
            0.5
        };
    }
    sigmoid(d / temperature)
}

/// P(the final label puts the lower-gold answer first) for a gold gap `gap` > 0.
pub fn against_gold_probability(gap: f32, temperature: f64, flip_rate: f64) -> f64 {
    let wrong = preference_probability(0.0, gap, temperature);
    wrong * (1.0 - flip_rate) + (1.0 - wrong) * flip_rate
}

/// One labelled pair from item `i` of the stream.
fn labelled_pair(cfg: &SynthConfig, i: u64) -> (PairRow, [AnswerKind; 2]) {
    let mut rng = item_rng(cfg.seed, "synth/pairs", i);
    let problem = Problem::sample(cfg.task, &cfg.size, &mut rng);
    let prompt = problem.prompt();
    let (a, ka) = noisy_answer(&problem, &mut rng);
    let (mut b, mut kb) = noisy_answer(&problem, &mut rng);
    for _ in 0..16 {
        if b != a {
            break;
        }
        (b, kb) = noisy_answer(&problem, &mut rng);
    }
    if b == a {
        (b, kb) = (wrong_answer(&problem, &mut rng), AnswerKind::OffByOne);
    }
    let (ga, gb) = (gold(&prompt, &a), gold(&prompt, &b));
    let mut a_wins = rng.random_bool(preference_probability(ga, gb, cfg.label_temperature));
    if rng.random_bool(cfg.flip_rate) {
        a_wins = !a_wins;
    }
    let ((chosen, gc), (rejected, gr)) = if a_wins {
        ((a, ga), (b, gb))
    } else {
        ((b, gb), (a, ga))
    };
    let row = PairRow {
        id: pair_id(&prompt, &chosen, &rejected),
        source: format!("synth-{}", cfg.task.name()),
        prompt,
        chosen,
        rejected,
        margin: None,
        tie: false,
        gold_chosen: Some(gc),
        gold_rejected: Some(gr),
    };
    (row, [ka, kb])
}

/// One SFT demonstration: (prompt, answer, correct).
fn demo(cfg: &SynthConfig, i: u64) -> (String, String, bool) {
    let mut rng = item_rng(cfg.seed, "synth/demos", i);
    let problem = Problem::sample(cfg.task, &cfg.size, &mut rng);
    if rng.random_bool(cfg.demo_error_rate) {
        (problem.prompt(), wrong_answer(&problem, &mut rng), false)
    } else {
        (problem.prompt(), problem.solve(), true)
    }
}

/// Evaluation prompts that appear in no pair and no demonstration, nor twice.
fn eval_prompts(cfg: &SynthConfig, seen: &mut HashSet<String>) -> Result<Vec<String>> {
    let mut rng = item_rng(cfg.seed, "synth/eval", 0);
    let mut out = Vec::with_capacity(cfg.eval_prompts);
    let mut tries = 0usize;
    while out.len() < cfg.eval_prompts {
        let p = Problem::sample(cfg.task, &cfg.size, &mut rng).prompt();
        if seen.insert(p.clone()) {
            out.push(p);
        }
        tries += 1;
        if tries > 1000 * cfg.eval_prompts.max(1) {
            return Err(DatasetError::InvalidOption {
                option: "--eval-prompts".into(),
                reason: format!(
                    "only {} unseen prompts exist for this task and size",
                    out.len()
                ),
            });
        }
    }
    Ok(out)
}

fn check(cfg: &SynthConfig) -> Result<()> {
    let bad = |option: &str, reason: &str| {
        Err(DatasetError::InvalidOption {
            option: option.into(),
            reason: reason.into(),
        })
    };
    for (name, p) in [
        ("--flip-rate", cfg.flip_rate),
        ("--demo-error-rate", cfg.demo_error_rate),
    ] {
        if !(0.0..=1.0).contains(&p) {
            return bad(name, "must be a probability in [0, 1]");
        }
    }
    if cfg.label_temperature.is_nan() || cfg.label_temperature < 0.0 {
        return bad("--label-temperature", "must be ≥ 0");
    }
    if cfg.size.max_digits == 0
        || cfg.size.max_digits > 9
        || cfg.size.min_items == 0
        || cfg.size.min_items > cfg.size.max_items
    {
        return bad(
            "size",
            "need 1 ≤ max_digits ≤ 9 and 1 ≤ min_items ≤ max_items",
        );
    }
    Ok(())
}

/// What [`generate`] counts of the generated pairs while it splits them (duplicate ids kept once).
struct Tally {
    answer_kinds: BTreeMap<String, usize>,
    /// Labels against the gold order, pairs whose gold differs, and the expected share of the
    /// former under the label noise.
    against: usize,
    with_gap: usize,
    expected: f64,
    /// Distinct pair ids.
    unique: usize,
    by_split: BTreeMap<Split, Vec<PairRow>>,
}

fn tally(cfg: &SynthConfig, generated: &[(PairRow, [AnswerKind; 2])]) -> Tally {
    let mut answer_kinds = BTreeMap::new();
    let (mut against, mut with_gap, mut expected) = (0, 0, 0.0);
    let mut ids = HashSet::new();
    let mut by_split: BTreeMap<Split, Vec<PairRow>> =
        Split::ALL.iter().map(|s| (*s, Vec::new())).collect();
    for (row, kinds) in generated {
        for k in kinds {
            *answer_kinds
                .entry(
                    serde_json::to_value(k)
                        .expect("kind")
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
                .or_insert(0) += 1;
        }
        let (gc, gr) = (
            row.gold_chosen.unwrap_or(0.0),
            row.gold_rejected.unwrap_or(0.0),
        );
        if gc != gr {
            with_gap += 1;
            against += (gc < gr) as usize;
            expected +=
                against_gold_probability((gc - gr).abs(), cfg.label_temperature, cfg.flip_rate);
        }
        if ids.insert(row.id.clone()) {
            by_split
                .get_mut(&split_of(&row.prompt, cfg.seed, &cfg.split))
                .expect("split")
                .push(row.clone());
        }
    }
    Tally {
        answer_kinds,
        against,
        with_gap,
        expected,
        unique: ids.len(),
        by_split,
    }
}

/// Generates the task into `out_dir` (which must exist).
#[instrument(skip_all, fields(task = cfg.task.name(), pairs = cfg.pairs))]
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<SynthStats> {
    check(cfg)?;
    let generated: Vec<(PairRow, [AnswerKind; 2])> = (0..cfg.pairs as u64)
        .into_par_iter()
        .map(|i| labelled_pair(cfg, i))
        .collect();
    let demos: Vec<(String, String, bool)> = (0..cfg.demos as u64)
        .into_par_iter()
        .map(|i| demo(cfg, i))
        .collect();
    let Tally {
        answer_kinds,
        against,
        with_gap,
        expected,
        unique,
        by_split,
    } = tally(cfg, &generated);
    for (split, rows) in &by_split {
        write_pairs(&out_dir.join(split.file_name()), rows, None, true)?;
    }
    write_sft(&out_dir.join("sft.parquet"), &demos)?;
    let mut seen: HashSet<String> = generated.iter().map(|(r, _)| r.prompt.clone()).collect();
    seen.extend(demos.iter().map(|d| d.0.clone()));
    let eval = eval_prompts(cfg, &mut seen)?;
    write_prompts(&out_dir.join("eval_prompts.parquet"), &eval)?;
    let stats = SynthStats {
        task: cfg.task.name().into(),
        pairs_generated: generated.len(),
        duplicates_dropped: generated.len() - unique,
        splits: by_split
            .iter()
            .map(|(s, r)| {
                (
                    s.file_name().trim_end_matches(".parquet").to_string(),
                    r.len(),
                )
            })
            .collect(),
        labels_against_gold: against,
        pairs_with_gold_gap: with_gap,
        expected_against_gold: expected,
        answer_kinds,
        demos: demos.len(),
        demos_wrong: demos.iter().filter(|d| !d.2).count(),
        eval_prompts: eval.len(),
    };
    write_stats(&out_dir.join("stats.json"), &stats)?;
    info!(
        pairs = unique,
        demos = demos.len(),
        eval = eval.len(),
        "synthesised"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotator_probabilities_by_hand() {
        assert!((preference_probability(1.0, 0.0, 1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(preference_probability(0.5, 0.5, 0.1), 0.5);
        assert_eq!(preference_probability(0.6, 0.5, 0.0), 1.0);
        // T = 0, flip 0.1: a gap is labelled against gold exactly 10 % of the time.
        assert!((against_gold_probability(0.3, 0.0, 0.1) - 0.1).abs() < 1e-12);
        // T = 1, gap 1, no flips: σ(−1).
        assert!((against_gold_probability(1.0, 1.0, 0.0) - 0.268_941_4).abs() < 1e-6);
    }

    #[test]
    fn item_rngs_depend_on_seed_stream_and_index() {
        let draw = |s, st, i| item_rng(s, st, i).random::<u64>();
        assert_eq!(draw(1, "a", 2), draw(1, "a", 2));
        assert_ne!(draw(1, "a", 2), draw(1, "a", 3));
        assert_ne!(draw(1, "a", 2), draw(1, "b", 2));
        assert_ne!(draw(1, "a", 2), draw(2, "a", 2));
    }
}
