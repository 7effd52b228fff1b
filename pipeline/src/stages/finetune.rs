//! `ember finetune`: rejection-sampling fine-tuning of the policy on its own lowest-energy
//! answers (expert iteration, Anthony et al. 2017; RAFT, Dong et al. 2023), with a KL penalty to
//! the reference policy or SFT data mixed in; or, with `--algo rloo`, REINFORCE leave-one-out
//! (Ahmadian et al. 2024) on the reward −E − β(log π − log π_ref). Both log the same held-out
//! numbers per round to `rounds.jsonl`, so they compare on the same axes.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use policy::rng;
use policy::sample::SampleConfig;
use policy::train::{load_checkpoint, save_checkpoint, AdamW, OptimConfig};
use policy::Policy;
use rand::seq::SliceRandom;
use rand::Rng;
use reward::EnergyScorer;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use crate::error::usage;
use crate::select::heldout::{evaluate, per_prompt_gold, HeldOut};
use crate::select::keep::KeepRule;
use crate::select::pool::{
    best_per_prompt, draw, gold_of, read_candidates, read_pairs, write_candidates, Candidate,
};
use crate::select::rounds::{rloo_steps, sft_steps, RlooSampling, Steps, TrainSums};
use crate::select::stats::{bootstrap_se, mean};
use crate::select::update::encode_pairs;
use crate::stage::{Common, Manifest, StageRun};
use crate::stages::rank::load_prompts;

pub const NAME: &str = "finetune";
pub const ROUNDS: &str = "rounds.jsonl";
pub const POLICY_DIR: &str = "policy";
const CHECKPOINT: &str = "checkpoint";

/// How the policy learns from the energy model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// Rank-and-select: keep the lowest-energy of N samples, fine-tune on the kept pairs.
    Rs,
    /// REINFORCE leave-one-out on −E − β(log π − log π_ref).
    Rloo,
}

/// The `[finetune]` section of a run config; also built from the CLI flags.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub algo: Algo,
    /// Rounds of sample → select → train.
    pub rounds: usize,
    /// Samples per prompt: N for rs (the best is kept), k for rloo (≥ 2).
    pub n: usize,
    /// Training prompts used per round (0 = all); rounds walk through a shuffled list.
    pub prompts_per_round: usize,
    /// Which selected answers are trained on (rs).
    pub keep: KeepRule,
    /// KL weight: rs, the per-token KL(π‖π_ref) term of the SFT loss; rloo, β in the reward.
    pub kl_coef: f64,
    /// SFT pairs mixed in per kept pair when an SFT table is given.
    pub mix_ratio: f64,
    /// Optimizer steps per round (rs); rloo takes prompts_per_round / rloo_prompts steps.
    pub steps: u64,
    /// Sequences per SFT step.
    pub batch: usize,
    /// Prompts per RLOO step (each with n samples).
    pub rloo_prompts: usize,
    /// Optimizer and schedule (warmup + cosine within each round).
    pub optim: OptimConfig,
    /// Sampling temperature.
    pub temperature: f64,
    /// Longest answer in tokens, EOS included.
    pub max_new_tokens: usize,
    /// Sequences generated together.
    pub sample_batch: usize,
    /// Sequences scored together (energy and log-probs).
    pub score_batch: usize,
    /// Held-out prompts evaluated each round (0 = all given).
    pub eval_prompts: usize,
    /// Fresh samples per held-out prompt.
    pub eval_samples: usize,
    /// Checkpoint every this many steps inside a round (0 = only at round ends).
    pub checkpoint_every: u64,
    /// Bootstrap resamples of the held-out gold gain's standard error.
    pub bootstrap: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            algo: Algo::Rs,
            rounds: 2,
            n: 8,
            prompts_per_round: 256,
            keep: KeepRule::Best,
            kl_coef: 0.1,
            mix_ratio: 1.0,
            steps: 30,
            batch: 32,
            rloo_prompts: 16,
            optim: OptimConfig {
                lr: 3e-4,
                min_lr: 3e-5,
                warmup_steps: 3,
                ..OptimConfig::default()
            },
            temperature: 1.0,
            max_new_tokens: 16,
            sample_batch: 256,
            score_batch: 256,
            eval_prompts: 100,
            eval_samples: 4,
            checkpoint_every: 10,
            bootstrap: 1000,
        }
    }
}

impl Config {
    fn check(&self) -> Result<()> {
        let positive = [
            ("rounds", self.rounds),
            ("n", self.n),
            ("batch", self.batch),
            ("rloo_prompts", self.rloo_prompts),
            ("max_new_tokens", self.max_new_tokens),
            ("sample_batch", self.sample_batch),
            ("score_batch", self.score_batch),
            ("eval_samples", self.eval_samples),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(usage(format!("finetune: {name} must be > 0")));
        }
        if self.algo == Algo::Rloo && self.n < 2 {
            return Err(usage(
                "finetune: rloo needs n ≥ 2 samples per prompt (leave-one-out)",
            ));
        }
        if self.temperature.is_nan()
            || self.temperature <= 0.0
            || self.kl_coef < 0.0
            || self.mix_ratio < 0.0
        {
            return Err(usage(
                "finetune: temperature must be > 0, kl_coef and mix_ratio ≥ 0",
            ));
        }
        Ok(())
    }

    fn sampling(&self, n: usize, seed: u64) -> SampleConfig {
        SampleConfig {
            n,
            temperature: self.temperature,
            top_k: None,
            top_p: None,
            max_new_tokens: self.max_new_tokens,
            batch: self.sample_batch,
            seed,
        }
    }

    fn steps(&self, prompts: usize, seed: u64, round: usize) -> Steps {
        let total = match self.algo {
            Algo::Rs => self.steps,
            Algo::Rloo => prompts.div_ceil(self.rloo_prompts) as u64,
        };
        Steps {
            total,
            optim: self.optim.clone(),
            seed,
            round,
            checkpoint_every: self.checkpoint_every,
        }
    }
}

/// Upstream artifacts.
pub struct Inputs {
    /// The starting policy, also the KL reference.
    pub policy: PathBuf,
    pub reward: PathBuf,
    /// Training prompts (Parquet or JSONL with a `prompt` column).
    pub prompts: PathBuf,
    /// Held-out prompts; without them the last `eval_prompts` training prompts are held out.
    pub eval_prompts: Option<PathBuf>,
    /// SFT data mixed into each round (`sft.parquet` or a directory holding it).
    pub mix_sft: Option<PathBuf>,
    /// Train on refined answers (`refined.parquet`: `prompt`, `final_answer`) instead of samples.
    pub from_refine: Option<PathBuf>,
}

impl Inputs {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![
            self.policy.as_path(),
            self.reward.as_path(),
            self.prompts.as_path(),
        ];
        v.extend(
            [&self.eval_prompts, &self.mix_sft, &self.from_refine]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path),
        );
        v
    }
}

/// What a checkpoint remembers besides weights and optimizer moments.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Rounds finished (their rows are in rounds.jsonl); round 0 is the starting policy.
    round: usize,
    /// Steps done in round `round + 1`.
    step: u64,
    sums: TrainSums,
    /// Per held-out prompt mean gold of the starting policy's samples (paired bootstrap).
    baseline_gold: Option<Vec<f64>>,
    /// Answers sampled for training so far (the compute axis).
    samples: u64,
}

/// One line of `rounds.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoundRow {
    pub round: usize,
    pub algo: Algo,
    /// Answers sampled for training so far.
    pub samples: u64,
    /// Pairs trained on this round and their mean energy / gold (rloo: all samples).
    pub kept: usize,
    pub kept_energy: Option<f64>,
    pub kept_gold: Option<f64>,
    pub train_loss: Option<f64>,
    /// rs: mean per-token KL term of the loss; rloo: mean log π − log π_ref of the samples.
    pub train_kl: Option<f64>,
    #[serde(flatten)]
    pub held_out: HeldOut,
    /// Held-out sample gold minus the starting policy's, paired by prompt, with its bootstrap SE.
    pub gold_gain: Option<f64>,
    pub gold_gain_se: Option<f64>,
    /// Wall time of the round's sampling and training, and of its evaluation.
    pub train_seconds: f64,
    pub eval_seconds: f64,
}

/// A u64 seed for one use, derived from the run seed.
fn seed_of(seed: u64, name: &str, index: u64) -> u64 {
    rng::stream(seed, name, index).random::<u64>()
}

/// Training and held-out prompts: the held-out file when given, else the last `eval_prompts`
/// of the training prompts (removed from training).
fn split_prompts(cfg: &Config, inputs: &Inputs) -> Result<(Vec<String>, Vec<String>)> {
    let mut train = load_prompts(&inputs.prompts, 0)?;
    if let Some(path) = &inputs.eval_prompts {
        return Ok((train, load_prompts(path, cfg.eval_prompts)?));
    }
    if cfg.eval_prompts == 0 || cfg.eval_prompts >= train.len() {
        return Err(usage(format!(
            "{}: {} prompts cannot spare {} held-out prompts; pass --eval-prompts FILE",
            inputs.prompts.display(),
            train.len(),
            cfg.eval_prompts
        )));
    }
    let held = train.split_off(train.len() - cfg.eval_prompts);
    Ok((train, held))
}

/// The prompts of round `round` (1-based): consecutive slices of one seeded shuffle, cyclic.
fn round_prompts(prompts: &[String], per_round: usize, seed: u64, round: usize) -> Vec<String> {
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

/// SFT pairs of `path` (a file, or a directory holding `sft.parquet`).
fn read_mix(path: &Path) -> Result<Vec<(String, String)>> {
    let file = if path.is_dir() {
        path.join("sft.parquet")
    } else {
        path.to_path_buf()
    };
    let rows = datasets::read_sft(&file)
        .with_context(|| format!("reading SFT pairs from {}", file.display()))?;
    if rows.is_empty() {
        return Err(usage(format!("{}: no SFT pairs to mix in", file.display())));
    }
    Ok(rows)
}

/// Refined answers of `path` (a file, or a refine stage directory holding `refined.parquet`).
fn read_refined(path: &Path) -> Result<Vec<(String, String)>> {
    let file = if path.is_dir() {
        path.join("refined.parquet")
    } else {
        path.to_path_buf()
    };
    let rows = read_pairs(&file, "prompt", "final_answer")?;
    if rows.is_empty() {
        return Err(usage(format!("{}: no refined answers", file.display())));
    }
    Ok(rows)
}

/// The selected answers of a round: the lowest-energy sample per prompt, or the refined answers
/// scored by the energy model; then the keep rule.
fn select_round(
    cfg: &Config,
    policy: &Policy,
    scorer: &EnergyScorer,
    prompts: &[String],
    refined: Option<&[(String, String)]>,
    seed: u64,
) -> Result<Vec<Candidate>> {
    let best = match refined {
        None => {
            let sampling = cfg.sampling(cfg.n, seed);
            best_per_prompt(&draw(policy, scorer, prompts, &sampling, cfg.score_batch)?)
        }
        Some(pairs) => {
            let (ps, answers): (Vec<String>, Vec<String>) = pairs.iter().cloned().unzip();
            let energies = scorer
                .score(&ps, &answers, cfg.score_batch)
                .context("scoring refined answers")?;
            ps.into_iter()
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
                .collect()
        }
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

/// `rounds.jsonl` cut back to the rows of finished rounds (none on a fresh start).
fn reset_rounds(path: &Path, finished: Option<usize>) -> Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: String = text
        .lines()
        .filter(|l| {
            let round = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["round"].as_u64());
            matches!((round, finished), (Some(r), Some(f)) if r as usize <= f)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).with_context(|| format!("writing {}", path.display()))
}

fn append_row(path: &Path, row: &RoundRow) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(row)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Held-out gold gain over the starting policy, paired by prompt, with its bootstrap SE.
fn gold_gain(
    baseline: Option<&[f64]>,
    now: Option<Vec<f64>>,
    resamples: usize,
    seed: u64,
    round: usize,
) -> (Option<f64>, Option<f64>) {
    let (Some(base), Some(now)) = (baseline, now) else {
        return (None, None);
    };
    let diffs: Vec<f64> = now.iter().zip(base).map(|(a, b)| a - b).collect();
    let se = bootstrap_se(
        &diffs,
        resamples,
        &mut rng::stream(seed, "finetune-bootstrap", round as u64),
    );
    (mean(&diffs), se)
}

/// The stage: typed config in, manifest out. Resumes from `OUT.partial/checkpoint`.
#[instrument(skip_all, fields(out = %out.display()))]
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    cfg.check()?;
    if cfg.algo == Algo::Rloo && (inputs.mix_sft.is_some() || inputs.from_refine.is_some()) {
        return Err(usage(
            "finetune: --mix-sft and --from-refine apply to --algo rs only",
        ));
    }
    let (device, _amp) = common.device()?;
    let (train_prompts, eval_prompts) = split_prompts(cfg, inputs)?;
    let mix = inputs.mix_sft.as_deref().map(read_mix).transpose()?;
    let refined = inputs
        .from_refine
        .as_deref()
        .map(read_refined)
        .transpose()?;
    let run = StageRun::begin(NAME, &(cfg, common), &inputs.paths(), out, true)?;
    let dir = run.dir().to_path_buf();
    let (seed, ckpt, rounds_path) = (common.seed, dir.join(CHECKPOINT), dir.join(ROUNDS));
    tch::manual_seed(rng::torch_seed(seed, "finetune", 0));
    let load = |what: &str, p: &Path| {
        Policy::load(p, device).with_context(|| format!("loading the {what} from {}", p.display()))
    };
    let reference = load("reference policy", &inputs.policy)?;
    let mut policy = load("policy", &inputs.policy)?;
    let scorer = EnergyScorer::load(&inputs.reward, device)
        .with_context(|| format!("loading the reward model from {}", inputs.reward.display()))?;
    let mut opt = AdamW::new(&policy.vs, &cfg.optim);
    let resumed = load_checkpoint::<State>(&ckpt, &mut policy.vs, &mut opt)?;
    reset_rounds(&rounds_path, resumed.as_ref().map(|s| s.round))?;
    let eval_sampling = cfg.sampling(cfg.eval_samples, seed_of(seed, "finetune-eval", 0));
    let eval = |policy: &Policy| {
        evaluate(
            policy,
            &reference,
            &scorer,
            &eval_prompts,
            &eval_sampling,
            cfg.score_batch,
        )
    };
    let mut state = match resumed {
        Some(state) => {
            info!(
                round = state.round,
                step = state.step,
                "resuming from checkpoint"
            );
            state
        }
        None => {
            let clock = Instant::now();
            let (held_out, fresh) = eval(&policy)?;
            let row = RoundRow {
                round: 0,
                algo: cfg.algo,
                samples: 0,
                kept: 0,
                kept_energy: None,
                kept_gold: None,
                train_loss: None,
                train_kl: None,
                held_out,
                gold_gain: None,
                gold_gain_se: None,
                train_seconds: 0.0,
                eval_seconds: clock.elapsed().as_secs_f64(),
            };
            append_row(&rounds_path, &row)?;
            let state = State {
                baseline_gold: per_prompt_gold(&fresh),
                ..State::default()
            };
            save_checkpoint(&ckpt, &policy.vs, &opt, &state)?;
            state
        }
    };
    while state.round < cfg.rounds {
        let round = state.round + 1;
        let clock = Instant::now();
        if state.step == 0 {
            opt = AdamW::new(&policy.vs, &cfg.optim);
            state.sums = TrainSums::default();
        }
        let prompts = round_prompts(&train_prompts, cfg.prompts_per_round, seed, round);
        let steps = cfg.steps(prompts.len(), seed, round);
        let mut sums = std::mem::take(&mut state.sums);
        let snapshot = state.clone();
        let checkpoint = |done: u64, p: &Policy, o: &AdamW, sums: &TrainSums| -> Result<()> {
            let s = State {
                step: done,
                sums: sums.clone(),
                ..snapshot.clone()
            };
            Ok(save_checkpoint(&ckpt, &p.vs, o, &s)?)
        };
        let (kept, round_samples) = match cfg.algo {
            Algo::Rs => {
                let round_dir = dir.join(format!("round-{round}"));
                let kept_path = round_dir.join("kept.parquet");
                let kept = if kept_path.exists() {
                    read_candidates(&kept_path)?
                } else {
                    let sample_seed = seed_of(seed, "finetune-sample", round as u64);
                    let kept = select_round(
                        cfg,
                        &policy,
                        &scorer,
                        &prompts,
                        refined.as_deref(),
                        sample_seed,
                    )?;
                    std::fs::create_dir_all(&round_dir)
                        .with_context(|| format!("creating {}", round_dir.display()))?;
                    let tmp = round_dir.join("kept.parquet.tmp");
                    write_candidates(&tmp, &kept)?;
                    std::fs::rename(&tmp, &kept_path)
                        .with_context(|| format!("writing {}", kept_path.display()))?;
                    kept
                };
                let mut pairs: Vec<(String, String)> = kept
                    .iter()
                    .map(|c| (c.prompt.clone(), c.answer.clone()))
                    .collect();
                if let Some(mix) = &mix {
                    let count =
                        ((kept.len() as f64 * cfg.mix_ratio).round() as usize).min(mix.len());
                    let mut r = rng::stream(seed, "finetune-mix", round as u64);
                    pairs.extend(
                        rand::seq::index::sample(&mut r, mix.len(), count)
                            .iter()
                            .map(|i| mix[i].clone()),
                    );
                }
                let encoded = encode_pairs(&policy, &pairs)?;
                sft_steps(
                    &mut policy,
                    &reference,
                    &mut opt,
                    &encoded,
                    cfg.batch,
                    cfg.kl_coef,
                    &steps,
                    state.step,
                    &mut sums,
                    checkpoint,
                )?;
                let samples = if refined.is_some() {
                    0
                } else {
                    (prompts.len() * cfg.n) as u64
                };
                (Some(kept), samples)
            }
            Algo::Rloo => {
                let rloo = RlooSampling {
                    sampling: cfg.sampling(cfg.n, 0),
                    prompts_per_step: cfg.rloo_prompts,
                    beta: cfg.kl_coef,
                    score_batch: cfg.score_batch,
                };
                rloo_steps(
                    &mut policy,
                    &reference,
                    &scorer,
                    &mut opt,
                    &prompts,
                    &rloo,
                    &steps,
                    state.step,
                    &mut sums,
                    checkpoint,
                )?;
                (None, sums.samples)
            }
        };
        let train_seconds = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let (held_out, fresh) = eval(&policy)?;
        let (gain, gain_se) = gold_gain(
            state.baseline_gold.as_deref(),
            per_prompt_gold(&fresh),
            cfg.bootstrap,
            seed,
            round,
        );
        let kept_energy: Vec<f64> = kept.iter().flatten().map(|c| c.energy as f64).collect();
        let kept_gold: Option<Vec<f64>> = kept
            .iter()
            .flatten()
            .map(|c| c.gold.map(f64::from))
            .collect();
        let row = RoundRow {
            round,
            algo: cfg.algo,
            samples: state.samples + round_samples,
            kept: kept.as_ref().map_or(sums.samples as usize, Vec::len),
            kept_energy: if kept.is_some() {
                mean(&kept_energy)
            } else {
                sums.mean(sums.energy)
            },
            kept_gold: kept_gold.as_deref().and_then(mean),
            train_loss: sums.mean(sums.loss),
            train_kl: sums.mean(sums.kl),
            held_out,
            gold_gain: gain,
            gold_gain_se: gain_se,
            train_seconds,
            eval_seconds: clock.elapsed().as_secs_f64(),
        };
        info!(round, gold = ?row.held_out.sample_gold, energy = ?row.held_out.sample_energy, "finetune round");
        append_row(&rounds_path, &row)?;
        state = State {
            round,
            step: 0,
            sums: TrainSums::default(),
            samples: row.samples,
            ..state
        };
        save_checkpoint(&ckpt, &policy.vs, &opt, &state)?;
    }
    policy
        .save(dir.join(POLICY_DIR))
        .context("saving the fine-tuned policy")?;
    let text = std::fs::read_to_string(&rounds_path)
        .with_context(|| format!("reading {}", rounds_path.display()))?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let metrics = serde_json::json!({ "rounds": rows, "final": rows.last() });
    run.finish(metrics, &[CHECKPOINT])
}

/// Fine-tune the policy on its lowest-energy samples (rejection sampling / expert iteration),
/// or with RLOO; logs held-out energy, gold, KL and diversity per round to rounds.jsonl.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Starting policy directory (also the KL reference).
    #[arg(long)]
    pub policy: PathBuf,
    /// Reward model directory (from `ember reward train`).
    #[arg(long)]
    pub reward: PathBuf,
    /// Training prompts: Parquet or JSONL with a `prompt` column (e.g. synth's sft.parquet).
    #[arg(long)]
    pub prompts: PathBuf,
    /// Held-out prompts (e.g. synth's eval_prompts.parquet); default: the last --eval-n
    /// training prompts.
    #[arg(long)]
    pub eval_prompts: Option<PathBuf>,
    /// Output directory; re-running the same command after an interruption resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// rs (rank-and-select fine-tuning) or rloo.
    #[arg(long, value_enum, default_value_t = Config::default().algo)]
    pub algo: Algo,
    /// Rounds of sample → select → train.
    #[arg(long, default_value_t = Config::default().rounds)]
    pub rounds: usize,
    /// Samples per prompt: N for rs, k for rloo.
    #[arg(short = 'n', long = "samples", default_value_t = Config::default().n)]
    pub n: usize,
    /// Training prompts per round (0 = all).
    #[arg(long, default_value_t = Config::default().prompts_per_round)]
    pub prompts_per_round: usize,
    /// Keep rule for the selected answers: best, below:E or above-median.
    #[arg(long, default_value_t = Config::default().keep)]
    pub keep: KeepRule,
    /// KL weight: rs, per-token KL(π‖π_ref) in the SFT loss; rloo, β in the reward.
    #[arg(long, default_value_t = Config::default().kl_coef)]
    pub kl_coef: f64,
    /// Mix SFT pairs into each round (sft.parquet or a synth directory).
    #[arg(long)]
    pub mix_sft: Option<PathBuf>,
    /// SFT pairs mixed in per kept pair.
    #[arg(long, default_value_t = Config::default().mix_ratio)]
    pub mix_ratio: f64,
    /// Train on refined answers (refine stage directory or refined.parquet) instead of samples.
    #[arg(long)]
    pub from_refine: Option<PathBuf>,
    /// Optimizer steps per round (rs).
    #[arg(long, default_value_t = Config::default().steps)]
    pub steps: u64,
    /// Sequences per SFT step.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Prompts per RLOO step.
    #[arg(long, default_value_t = Config::default().rloo_prompts)]
    pub rloo_prompts: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = Config::default().optim.lr)]
    pub lr: f64,
    /// Sampling temperature.
    #[arg(long, default_value_t = Config::default().temperature)]
    pub temperature: f64,
    /// Longest answer in tokens, EOS included.
    #[arg(long, default_value_t = Config::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Held-out prompts evaluated per round (0 = all given).
    #[arg(long = "eval-n", default_value_t = Config::default().eval_prompts)]
    pub eval_n: usize,
    /// Fresh samples per held-out prompt.
    #[arg(long, default_value_t = Config::default().eval_samples)]
    pub eval_samples: usize,
    /// Checkpoint every this many steps inside a round (0 = round ends only).
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// The seed of every generator.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// fp32, or bf16 (autocast on CUDA; weights and optimizer state stay fp32).
    #[arg(long, value_enum, default_value_t = policy::device::Precision::Fp32)]
    pub precision: policy::device::Precision,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let d = Config::default();
    let cfg = Config {
        algo: args.algo,
        rounds: args.rounds,
        n: args.n,
        prompts_per_round: args.prompts_per_round,
        keep: args.keep,
        kl_coef: args.kl_coef,
        mix_ratio: args.mix_ratio,
        steps: args.steps,
        batch: args.batch,
        rloo_prompts: args.rloo_prompts,
        optim: OptimConfig {
            lr: args.lr,
            min_lr: args.lr / 10.0,
            ..d.optim
        },
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
        eval_prompts: args.eval_n,
        eval_samples: args.eval_samples,
        checkpoint_every: args.checkpoint_every,
        ..d
    };
    let common = Common {
        precision: args.precision,
        seed: args.seed,
        device: args.device,
    };
    let inputs = Inputs {
        policy: args.policy,
        reward: args.reward,
        prompts: args.prompts,
        eval_prompts: args.eval_prompts,
        mix_sft: args.mix_sft,
        from_refine: args.from_refine,
    };
    let manifest = run(&cfg, &common, &inputs, &args.out).context("ember finetune failed")?;
    let rows: Vec<RoundRow> = serde_json::from_value(manifest.metrics["rounds"].clone())?;
    print!("{}", render_rounds(&rows));
    println!(
        "finetune: {} rounds → {}",
        cfg.rounds,
        args.out.join(POLICY_DIR).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The per-round table printed at the end.
pub fn render_rounds(rows: &[RoundRow]) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut out = format!(
        "{:>5} {:>7} {:>5} {:>7} {:>8} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6} {:>15} {:>6}\n",
        "round",
        "samples",
        "kept",
        "kept E",
        "sample E",
        "gold",
        "greedy E",
        "g.gold",
        "KL k1",
        "KL k3",
        "dist",
        "gain ± se",
        "sec"
    );
    for r in rows {
        let h = &r.held_out;
        let gain = match (r.gold_gain, r.gold_gain_se) {
            (Some(g), Some(se)) => format!("{g:+.3} ± {se:.3}"),
            _ => "-".into(),
        };
        out += &format!(
            "{:>5} {:>7} {:>5} {:>7} {:>8} {:>7} {:>8} {:>7} {:>7} {:>7} {:>6} {:>15} {:>6.1}\n",
            r.round,
            r.samples,
            r.kept,
            f(r.kept_energy),
            f(h.sample_energy),
            f(h.sample_gold),
            f(h.greedy_energy),
            f(h.greedy_gold),
            f(h.kl_k1),
            f(h.kl_k3),
            f(h.distinct_share),
            gain,
            r.train_seconds + r.eval_seconds
        );
    }
    out
}
