//! The resumable round loop of fine-tuning: round 0 evaluates the starting policy; each round
//! then samples and selects (rs) or samples per step (rloo), trains, evaluates on the held-out
//! prompts and appends a row to `rounds.jsonl`. A checkpoint (weights, optimizer moments and
//! [`State`]) is written at every round end and every `checkpoint_every` steps, so an
//! interrupted run resumes where it stopped and writes the same rows.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use datasets::stats::{bootstrap_se, mean};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use super::heldout::{evaluate, per_prompt_gold, HeldOut};
use super::rounds::{rloo_steps, sft_steps, RlooSampling, TrainSums};
use super::select::{kept_for_round, round_prompts, select_round, training_pairs};
use super::update::encode_pairs;
use super::{Algo, FinetuneConfig, FinetuneData};
use crate::error::{PolicyError, Result};
use crate::pool::Candidate;
use crate::rng;
use crate::score::Scorer;
use crate::train::{load_checkpoint, save_checkpoint, AdamW};
use crate::Policy;

/// The per-round log, one JSON object per line.
pub const ROUNDS: &str = "rounds.jsonl";
/// The checkpoint directory (removed by the caller once the run is done).
pub const CHECKPOINT: &str = "checkpoint";

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
    std::fs::write(path, kept).map_err(|e| PolicyError::io("writing", path, e))
}

fn append_row(path: &Path, row: &RoundRow) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| PolicyError::io("opening", path, e))?;
    let line = serde_json::to_string(row).expect("serialisable row");
    writeln!(file, "{line}").map_err(|e| PolicyError::io("writing", path, e))
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

/// A run in progress: the settings, models, data and files of one fine-tuning run.
struct Run<'a> {
    cfg: &'a FinetuneConfig,
    policy: &'a mut Policy,
    reference: &'a Policy,
    scorer: &'a dyn Scorer,
    data: &'a FinetuneData,
    dir: PathBuf,
    opt: AdamW,
}

/// What a round trained on: the kept candidates (rs only) and the answers it sampled.
struct Trained {
    kept: Option<Vec<Candidate>>,
    samples: u64,
    sums: TrainSums,
}

impl Run<'_> {
    fn ckpt(&self) -> PathBuf {
        self.dir.join(CHECKPOINT)
    }

    /// Saves a checkpoint: rank 0 of a job (the others' are the same) or the process alone.
    fn save(&self, state: &State) -> Result<()> {
        match crate::dist::is_writer() {
            true => save_checkpoint(&self.ckpt(), &self.policy.vs, &self.opt, state),
            false => Ok(()),
        }
    }

    /// The checkpoint's state restored into the policy and optimizer, if there is one. In a
    /// job, rank 0's (only rank 0 checkpoints): its state, weights and moments reach every rank.
    fn resume(&mut self) -> Result<Option<State>> {
        let (ckpt, vs, opt) = (self.ckpt(), &mut self.policy.vs, &mut self.opt);
        let group = crate::dist::group();
        let resumed = crate::dist::from_root(group, "resuming from rank 0's checkpoint", || {
            load_checkpoint::<State>(&ckpt, vs, opt)
        })?;
        if let Some(pg) = group {
            crate::train::replicate(pg, &self.policy.vs, &mut self.opt)?;
        }
        Ok(resumed)
    }

    fn rounds_path(&self) -> PathBuf {
        self.dir.join(ROUNDS)
    }

    /// Held-out evaluation of the current policy: the round's numbers and fresh candidates.
    fn eval(&self) -> Result<(HeldOut, Vec<Candidate>)> {
        let seed = seed_of(self.cfg.seed, "finetune-eval", 0);
        let sampling = self.cfg.sampling(self.cfg.eval_samples, seed);
        let prompts = &self.data.eval;
        evaluate(
            self.policy,
            self.reference,
            self.scorer,
            prompts,
            &sampling,
            self.cfg.score_batch,
        )
    }

    /// The resumed state, or round 0 evaluated, logged and checkpointed.
    fn start(&mut self, resumed: Option<State>) -> Result<State> {
        if let Some(state) = resumed {
            info!(
                round = state.round,
                step = state.step,
                "resuming from checkpoint"
            );
            return Ok(state);
        }
        let clock = Instant::now();
        let (held_out, fresh) = self.eval()?;
        let row = RoundRow {
            round: 0,
            algo: self.cfg.algo,
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
        append_row(&self.rounds_path(), &row)?;
        let state = State {
            baseline_gold: per_prompt_gold(&fresh),
            ..State::default()
        };
        self.save(&state)?;
        Ok(state)
    }

    /// Trains round `state.round + 1` from step `state.step`, checkpointing when due.
    fn train(&mut self, state: &mut State, round: usize) -> Result<Trained> {
        let cfg = self.cfg;
        let prompts = round_prompts(&self.data.train, cfg.prompts_per_round, cfg.seed, round);
        let steps = cfg.steps(prompts.len(), round);
        let mut sums = std::mem::take(&mut state.sums);
        let snapshot = state.clone();
        let ckpt = self.ckpt();
        let checkpoint = |done: u64, p: &Policy, o: &AdamW, sums: &TrainSums| -> Result<()> {
            let s = State {
                step: done,
                sums: sums.clone(),
                ..snapshot.clone()
            };
            match crate::dist::is_writer() {
                true => save_checkpoint(&ckpt, &p.vs, o, &s),
                false => Ok(()),
            }
        };
        let (policy, reference, opt) = (&mut *self.policy, self.reference, &mut self.opt);
        match cfg.algo {
            Algo::Rs => {
                let kept = kept_for_round(&self.dir.join(format!("round-{round}")), || {
                    let seed = seed_of(cfg.seed, "finetune-sample", round as u64);
                    let refined = self.data.refined.as_deref();
                    select_round(cfg, policy, self.scorer, &prompts, refined, seed)
                })?;
                let mix = self.data.mix.as_deref();
                let pairs = training_pairs(&kept, mix, cfg.mix_ratio, cfg.seed, round);
                let encoded = encode_pairs(policy, &pairs)?;
                let (batch, kl) = (cfg.batch, cfg.kl_coef);
                sft_steps(
                    policy, reference, opt, &encoded, batch, kl, &steps, state.step, &mut sums,
                    checkpoint,
                )?;
                let samples = match self.data.refined {
                    Some(_) => 0,
                    None => (prompts.len() * cfg.sampling.n) as u64,
                };
                Ok(Trained {
                    kept: Some(kept),
                    samples,
                    sums,
                })
            }
            Algo::Rloo => {
                let rloo = RlooSampling {
                    sampling: cfg.sampling(cfg.sampling.n, 0),
                    prompts_per_step: cfg.rloo_prompts,
                    beta: cfg.kl_coef,
                    score_batch: cfg.score_batch,
                };
                let scorer = self.scorer;
                rloo_steps(
                    policy, reference, scorer, opt, &prompts, &rloo, &steps, state.step, &mut sums,
                    checkpoint,
                )?;
                let samples = sums.samples;
                Ok(Trained {
                    kept: None,
                    samples,
                    sums,
                })
            }
        }
    }

    /// The row of a finished round: what it trained on and its held-out evaluation.
    fn row(
        &self,
        state: &State,
        round: usize,
        t: &Trained,
        train_seconds: f64,
    ) -> Result<RoundRow> {
        let clock = Instant::now();
        let (held_out, fresh) = self.eval()?;
        let (gain, gain_se) = gold_gain(
            state.baseline_gold.as_deref(),
            per_prompt_gold(&fresh),
            self.cfg.bootstrap,
            self.cfg.seed,
            round,
        );
        let kept = t.kept.iter().flatten();
        let kept_energy: Vec<f64> = kept.clone().map(|c| c.energy as f64).collect();
        let kept_gold: Option<Vec<f64>> = kept.map(|c| c.gold.map(f64::from)).collect();
        let sums = &t.sums;
        Ok(RoundRow {
            round,
            algo: self.cfg.algo,
            samples: state.samples + t.samples,
            kept: t.kept.as_ref().map_or(sums.samples as usize, Vec::len),
            kept_energy: match t.kept {
                Some(_) => mean(&kept_energy),
                None => sums.mean(sums.energy),
            },
            kept_gold: kept_gold.as_deref().and_then(mean),
            train_loss: sums.mean(sums.loss),
            train_kl: sums.mean(sums.kl),
            held_out,
            gold_gain: gain,
            gold_gain_se: gain_se,
            train_seconds,
            eval_seconds: clock.elapsed().as_secs_f64(),
        })
    }
}

/// Fine-tunes `policy` (starting from `reference`'s weights) for `cfg.rounds` rounds, writing
/// `dir/rounds.jsonl`, `dir/round-R/kept.parquet` (rs) and `dir/checkpoint`; resumes from the
/// checkpoint when one is there. The caller seeds torch's generator before loading the models
/// and saves the fine-tuned policy afterwards.
#[instrument(skip_all, fields(rounds = cfg.rounds))]
pub fn finetune(
    cfg: &FinetuneConfig,
    policy: &mut Policy,
    reference: &Policy,
    scorer: &dyn Scorer,
    data: &FinetuneData,
    dir: &Path,
) -> Result<()> {
    let opt = AdamW::new(&policy.vs, &cfg.optim);
    let mut run = Run {
        cfg,
        policy,
        reference,
        scorer,
        data,
        dir: dir.to_path_buf(),
        opt,
    };
    let resumed = run.resume()?;
    reset_rounds(&run.rounds_path(), resumed.as_ref().map(|s| s.round))?;
    let mut state = run.start(resumed)?;
    while state.round < cfg.rounds {
        // Every round ends with a checkpoint: a stop here loses nothing. The ranks of a job
        // stop together.
        crate::interrupt::check_in_job(Some(format!("round {}", state.round)))?;
        let round = state.round + 1;
        let clock = Instant::now();
        if state.step == 0 {
            run.opt = AdamW::new(&run.policy.vs, &cfg.optim);
            state.sums = TrainSums::default();
        }
        let trained = run.train(&mut state, round)?;
        let row = run.row(&state, round, &trained, clock.elapsed().as_secs_f64())?;
        info!(round, gold = ?row.held_out.sample_gold, energy = ?row.held_out.sample_energy, "finetune round");
        append_row(&run.rounds_path(), &row)?;
        state = State {
            round,
            step: 0,
            sums: TrainSums::default(),
            samples: row.samples,
            ..state
        };
        run.save(&state)?;
    }
    Ok(())
}
