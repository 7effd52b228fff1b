//! Contrastive training of the energy model (LeCun et al. 2006): each step pushes the energy of
//! the chosen answers down and of the rejected ones (and in-batch negatives) up, with AdamW,
//! warmup + cosine, global-norm clipping, periodic validation with early stopping on pairwise
//! accuracy, a NaN guard, metrics JSONL and atomic checkpoints that resume bit-identically.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use policy::{GptConfig, Tokenizer};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};
use tracing::{info, instrument, warn};

use crate::batch::{in_batch_negatives, EncodedPairRow, PairBatch};
use crate::data::{encode_rows, load_pairs, FitCounts};
use crate::error::{Result, RewardError};
use crate::eval::{evaluate, pair_energies, report_from_energies, to_vec};
use crate::loss::{batch_loss, LossConfig, TieMode};
use crate::metrics::{EvalReport, Thresholds};
use crate::model::{EnergyConfig, EnergyModel, Pooling, Score, HEAD_PREFIXES};
use crate::store::{self, TrainState};
use policy::train::{clip_grad_norm, load_checkpoint, lr_at, save_checkpoint, AdamW, OptimConfig};

/// Everything `ember reward train` needs besides its inputs; saved as `train_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub loss: LossConfig,
    /// What the score reads: `head` (a linear head at the EOS) or `head+nll` (plus the
    /// answer's negative log-likelihood under the trunk; best started from an SFT trunk).
    pub score: Score,
    /// Tie rows: `skip` or `equal` (trained towards equal energy).
    pub ties: TieMode,
    pub optim: OptimConfig,
    /// Optimiser steps.
    pub steps: u64,
    /// Pairs per step (each pair is two sequences, one forward pass for all).
    pub batch: usize,
    /// Longest sequence; prompts are truncated from the left to fit.
    pub max_len: usize,
    /// Validate every N steps (and at the end).
    pub eval_every: u64,
    /// Validation pairs used at each evaluation (0 = all).
    pub eval_pairs: usize,
    /// Stop after this many evaluations without a better validation accuracy (0 = never).
    pub patience: u64,
    /// `nll` only: the chosen answers of this many other prompts of the batch are extra
    /// negatives of each prompt.
    pub in_batch_negatives: usize,
    /// `nll` only: answers sampled (temperature 1) from the `negatives_from` policy for each
    /// training prompt, all used as extra negatives of that prompt: the model's own contrastive
    /// samples (LeCun et al. 2006, §2.2), drawn once before training. 0 = none.
    pub sampled_negatives: usize,
    /// Write a resumable checkpoint every N steps (0 = only at evaluations).
    pub checkpoint_every: u64,
    /// Trunk shape when training from scratch (ignored with an init checkpoint).
    pub d_model: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub dropout: f64,
    /// ε of the "chosen energy below ε" metric.
    pub eps: f32,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            loss: LossConfig::default(),
            score: Score::Head,
            ties: TieMode::Skip,
            optim: OptimConfig {
                lr: 1e-3,
                min_lr: 1e-4,
                warmup_steps: 20,
                weight_decay: 0.01,
                ..OptimConfig::default()
            },
            steps: 300,
            batch: 16,
            max_len: 64,
            eval_every: 50,
            eval_pairs: 512,
            patience: 0,
            in_batch_negatives: 2,
            sampled_negatives: 0,
            checkpoint_every: 50,
            d_model: 64,
            n_layer: 2,
            n_head: 4,
            dropout: 0.0,
            eps: 0.1,
            seed: 0,
        }
    }
}

impl TrainConfig {
    pub fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(RewardError::Config(m.to_string()));
        if self.steps == 0 {
            return bad("steps must be > 0");
        }
        if self.batch == 0 {
            return bad("batch must be > 0");
        }
        if !(self.optim.lr > 0.0 && self.optim.lr.is_finite()) {
            return bad("lr must be a positive number");
        }
        if self.eval_every == 0 {
            return bad("eval_every must be > 0");
        }
        if self.loss.beta <= 0.0 {
            return bad("beta must be > 0");
        }
        if self.sampled_negatives > 0 && self.loss.kind != crate::loss::LossKind::Nll {
            return bad("sampled negatives need the nll loss (--loss nll)");
        }
        Ok(())
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            eps: self.eps,
            margin: self.loss.margin as f32,
        }
    }
}

/// Where the data and the starting point come from.
#[derive(Debug, Clone)]
pub struct TrainInputs {
    /// Directory with `train.parquet` and `val.parquet`.
    pub data: PathBuf,
    /// `tokenizer.json`; defaults to the init checkpoint's.
    pub tokenizer: Option<PathBuf>,
    /// A policy (SFT) checkpoint directory whose trunk initialises the model.
    pub init: Option<PathBuf>,
    /// The policy that `sampled_negatives` are drawn from (it must share the tokenizer).
    pub negatives_from: Option<PathBuf>,
}

/// What a training run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps_done: u64,
    pub best_step: u64,
    pub stopped_early: bool,
    pub resumed_from: Option<u64>,
    pub nonfinite_skipped: u64,
    pub train_fit: FitCounts,
    pub val_fit: FitCounts,
    pub val: EvalReport,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// Answers sampled as extra negatives (per training prompt × prompts).
    pub sampled_negatives: usize,
    /// The final model's energies of the validation pairs it was evaluated on (not in the JSON).
    #[serde(skip)]
    pub val_energies: Vec<ValEnergy>,
}

/// Energies of one validation pair; `row` indexes the rows of `val.parquet`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValEnergy {
    pub row: usize,
    pub chosen: f32,
    pub rejected: f32,
}

/// Summary statistics of the energies of the training set (saved as `energy_stats.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnergyStats {
    pub pairs: usize,
    pub chosen: Dist,
    pub rejected: Dist,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Dist {
    pub mean: f64,
    pub std: f64,
    pub p05: f64,
    pub p50: f64,
    pub p95: f64,
}

impl Dist {
    /// Mean, standard deviation and nearest-rank percentiles.
    pub fn of(x: &[f32]) -> Self {
        if x.is_empty() {
            return Self {
                mean: 0.0,
                std: 0.0,
                p05: 0.0,
                p50: 0.0,
                p95: 0.0,
            };
        }
        let n = x.len() as f64;
        let mean = x.iter().map(|v| *v as f64).sum::<f64>() / n;
        let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
        let mut s: Vec<f32> = x.to_vec();
        s.sort_by(f32::total_cmp);
        let q = |p: f64| s[((s.len() - 1) as f64 * p).round() as usize] as f64;
        Self {
            mean,
            std: var.sqrt(),
            p05: q(0.05),
            p50: q(0.5),
            p95: q(0.95),
        }
    }
}

/// The pair indices of `step`: consecutive slices of per-epoch permutations, each permutation
/// drawn from its own ChaCha8 stream (seed, epoch), so any step's batch is known without replay.
pub fn batch_indices(step: u64, n: usize, batch: usize, seed: u64) -> Vec<usize> {
    let batch = batch.min(n);
    let start = step as usize * batch;
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(usize, Vec<usize>)> = None;
    for q in start..start + batch {
        let epoch = q / n;
        if cached.as_ref().map(|c| c.0) != Some(epoch) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_7761_7264); // "reward"
            rng.set_stream(epoch as u64);
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut rng);
            cached = Some((epoch, perm));
        }
        out.push(cached.as_ref().expect("set above").1[q % n]);
    }
    out
}

/// The model shape: the init checkpoint's trunk, or a fresh one from the config.
fn energy_config(cfg: &TrainConfig, init: Option<&Path>, tok: &Tokenizer) -> Result<EnergyConfig> {
    let trunk = match init {
        Some(dir) => policy::read_config(&dir.join(policy::CONFIG_FILE))?,
        None => GptConfig {
            vocab_size: tok.vocab_size(),
            n_ctx: cfg.max_len as i64,
            d_model: cfg.d_model,
            n_layer: cfg.n_layer,
            n_head: cfg.n_head,
            dropout: cfg.dropout,
            layer_norm_eps: 1e-5,
        },
    };
    if trunk.vocab_size < tok.vocab_size() {
        return Err(RewardError::Config(format!(
            "the tokenizer has {} tokens but the trunk only {}",
            tok.vocab_size(),
            trunk.vocab_size
        )));
    }
    let max_len = cfg.max_len.min(trunk.n_ctx as usize);
    let ecfg = EnergyConfig {
        trunk,
        max_len,
        pooling: Pooling::Eos,
        score: cfg.score,
        sep_id: tok.sep_id(),
    };
    ecfg.check().map_err(RewardError::Config)?;
    Ok(ecfg)
}

/// Loads the trunk of a policy checkpoint; every variable but the head's ([`HEAD_PREFIXES`])
/// must be found.
fn load_trunk(vs: &mut nn::VarStore, init: &Path) -> Result<()> {
    let w = init.join(policy::WEIGHTS_FILE);
    let missing = vs
        .load_partial(&w)
        .map_err(|e| RewardError::torch(format!("loading {}", w.display()), e))?;
    let trunk_missing: Vec<&String> = missing
        .iter()
        .filter(|n| !HEAD_PREFIXES.iter().any(|p| n.starts_with(p)))
        .collect();
    if !trunk_missing.is_empty() {
        return Err(RewardError::Input {
            path: w,
            message: format!("not a policy checkpoint of this shape: missing {trunk_missing:?}"),
        });
    }
    Ok(())
}

fn tokenizer_path(inputs: &TrainInputs) -> Result<PathBuf> {
    match (&inputs.tokenizer, &inputs.init) {
        // A directory (what `ember tokenizer train --out` writes) means its tokenizer.json.
        (Some(t), _) if t.is_dir() => Ok(t.join(policy::TOKENIZER_FILE)),
        (Some(t), _) => Ok(t.clone()),
        (None, Some(init)) => Ok(init.join(policy::TOKENIZER_FILE)),
        (None, None) => Err(RewardError::Config(
            "give --tokenizer FILE|DIR or --init SFT_DIR".into(),
        )),
    }
}

/// One optimisation step on `batch`; returns (loss, accuracy of the batch, E⁺ mean, E⁻ mean),
/// or `None` when the loss was not finite (the step is skipped, nothing is updated).
fn train_step(
    model: &EnergyModel,
    opt: &mut AdamW,
    batch: &PairBatch,
    cfg: &TrainConfig,
    lr: f64,
) -> Option<(f64, f64, f64, f64, f64)> {
    let e = model.energy(&batch.ids, &batch.mask, true); // [R]
    let (pos, neg, extra) = batch.split(&e);
    let negs = extra.map(|x| Tensor::cat(&[neg.unsqueeze(1), x], 1)); // [B, 1+k]
    let loss = batch_loss(
        &cfg.loss,
        &pos,
        &neg,
        &batch.margin,
        &batch.tie,
        negs.as_ref(),
    );
    let loss_v = loss.double_value(&[]);
    opt.zero_grad();
    if !loss_v.is_finite() {
        return None;
    }
    loss.backward();
    let gnorm = clip_grad_norm(opt.params(), cfg.optim.grad_clip);
    if !gnorm.is_finite() {
        opt.zero_grad();
        return None;
    }
    opt.step(lr);
    let (p, n) = (to_vec(&pos), to_vec(&neg));
    let acc = crate::metrics::pairwise_accuracy(&p, &n);
    Some((loss_v, acc, mean(&p), mean(&n), gnorm))
}

fn mean(x: &[f32]) -> f64 {
    x.iter().map(|v| *v as f64).sum::<f64>() / x.len().max(1) as f64
}

/// Keeps the metrics lines up to `step` (a resumed run rewrites what followed).
fn reopen_metrics(path: &Path, step: u64) -> Result<fs::File> {
    let kept: Vec<String> = fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(path, kept.concat()).map_err(|e| RewardError::io("writing", path, e))?;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| RewardError::io("opening", path, e))
}

fn log_line(f: &mut fs::File, path: &Path, v: serde_json::Value) -> Result<()> {
    writeln!(f, "{v}").map_err(|e| RewardError::io("writing", path, e))
}

/// Trains into `out` (the stage's staging directory; `out/ckpt` makes it resumable) and writes
/// the model directory there.
#[instrument(skip_all)]
pub fn train(
    cfg: &TrainConfig,
    inputs: &TrainInputs,
    out: &Path,
    device: Device,
) -> Result<TrainSummary> {
    cfg.check()?;
    let started = Instant::now();
    let tok = Tokenizer::load(tokenizer_path(inputs)?)?;
    let ecfg = energy_config(cfg, inputs.init.as_deref(), &tok)?;
    let train_rows = load_pairs(&inputs.data.join("train.parquet"))?;
    let val_rows = load_pairs(&inputs.data.join("val.parquet"))?;
    let (train_pairs, train_fit) = encode_rows(&tok, &train_rows, ecfg.max_len, cfg.ties);
    let (mut val_pairs, val_fit) = encode_rows(&tok, &val_rows, ecfg.max_len, TieMode::Skip);
    info!(?train_fit, ?val_fit, "encoded pairs");
    if train_pairs.is_empty() {
        return Err(RewardError::Input {
            path: inputs.data.join("train.parquet"),
            message: format!(
                "no usable pairs after fitting to max_len {}: {train_fit:?}",
                ecfg.max_len
            ),
        });
    }
    if cfg.eval_pairs > 0 {
        val_pairs.truncate(cfg.eval_pairs);
    }
    let sampled = sample_negatives(cfg, inputs, &tok, &train_rows, ecfg.max_len, device)?;
    tch::manual_seed(cfg.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let model = EnergyModel::new(vs.root(), &ecfg);
    if let Some(init) = &inputs.init {
        load_trunk(&mut vs, init)?;
    }
    let mut opt = AdamW::new(&vs, &cfg.optim);
    let ckpt_dir = out.join(store::CKPT_DIR);
    let mut best: Option<Vec<(String, Tensor)>> = None;
    let (mut state, resumed_from) =
        match load_checkpoint::<TrainState>(&ckpt_dir, &mut vs, &mut opt)? {
            Some(st) => {
                if st.best_accuracy.is_some() {
                    best = Some(store::load_best(out, st.best_step)?);
                }
                info!(step = st.step, "resuming from checkpoint");
                let step = st.step;
                (st, Some(step))
            }
            None => (TrainState::default(), None),
        };
    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = reopen_metrics(&metrics_path, state.step)?;
    let pad = tok.pad_id();
    let mut tokens = 0i64;
    let loop_start = Instant::now();
    let mut nan_streak = 0u64;
    while state.step < cfg.steps && !state.stopped_early {
        let step = state.step;
        tch::manual_seed((cfg.seed as i64).wrapping_add(step as i64 + 1)); // dropout stream
        let idx = batch_indices(step, train_pairs.len(), cfg.batch, cfg.seed);
        let refs: Vec<&EncodedPairRow> = idx.iter().map(|&i| &train_pairs[i]).collect();
        let mut negatives = if cfg.loss.kind == crate::loss::LossKind::Nll
            && cfg.in_batch_negatives > 0
            && refs.len() > 1
        {
            let prompts: Vec<&str> = refs
                .iter()
                .map(|p| train_rows[p.row].prompt.as_str())
                .collect();
            let answers: Vec<&str> = refs
                .iter()
                .map(|p| train_rows[p.row].chosen.as_str())
                .collect();
            in_batch_negatives(
                &tok,
                &prompts,
                &answers,
                cfg.in_batch_negatives.min(refs.len() - 1),
                ecfg.max_len,
            )
        } else {
            vec![Vec::new(); refs.len()]
        };
        if !sampled.is_empty() {
            for (n, p) in negatives.iter_mut().zip(&refs) {
                n.extend(sampled[p.row].iter().cloned());
            }
        }
        let batch = PairBatch::new(&refs, &negatives, pad, device);
        tokens += batch.tokens;
        let lr = lr_at(step, cfg.steps, &cfg.optim);
        match train_step(&model, &mut opt, &batch, cfg, lr) {
            Some((loss, acc, ep, en, gnorm)) => {
                nan_streak = 0;
                // For progress bars (`ember`'s `progress` tracing layer).
                tracing::trace!(target: "progress", task = "reward", step = step + 1, total = cfg.steps, loss);
                log_line(
                    &mut metrics,
                    &metrics_path,
                    serde_json::json!({
                        "step": step + 1, "split": "train", "loss": loss, "accuracy": acc,
                        "e_chosen": ep, "e_rejected": en, "grad_norm": gnorm, "lr": lr,
                    }),
                )?;
            }
            None => {
                state.nonfinite += 1;
                nan_streak += 1;
                warn!(step, "non-finite loss or gradient; step skipped");
                if nan_streak >= 10 {
                    return Err(RewardError::NonFinite {
                        step,
                        count: nan_streak,
                    });
                }
            }
        }
        state.step += 1;
        let last = state.step == cfg.steps;
        if state.step % cfg.eval_every == 0 || last {
            let r = evaluate(
                &model,
                &val_rows,
                &val_pairs,
                cfg.batch.max(16),
                pad,
                device,
                cfg.thresholds(),
            );
            info!(
                step = state.step,
                accuracy = r.accuracy,
                gap = r.mean_gap,
                "validation"
            );
            log_line(
                &mut metrics,
                &metrics_path,
                serde_json::json!({
                    "step": state.step, "split": "val", "accuracy": r.accuracy, "mean_gap": r.mean_gap,
                    "ece": r.ece, "e_chosen": r.mean_e_chosen, "e_rejected": r.mean_e_rejected,
                }),
            )?;
            if state.best_accuracy.is_none_or(|b| r.accuracy > b) {
                state.best_accuracy = Some(r.accuracy);
                state.best_step = state.step;
                state.evals_since_best = 0;
                best = Some(store::snapshot(&vs));
            } else {
                state.evals_since_best += 1;
                if cfg.patience > 0 && state.evals_since_best >= cfg.patience {
                    info!(step = state.step, "early stopping");
                    state.stopped_early = true;
                }
            }
        }
        let ck_due = cfg.checkpoint_every > 0 && state.step % cfg.checkpoint_every == 0;
        if (ck_due || state.step % cfg.eval_every == 0) && !last {
            if let Some(b) = best
                .as_ref()
                .filter(|_| !store::best_path(out, state.best_step).exists())
            {
                store::save_best(out, state.best_step, b)?;
            }
            save_checkpoint(&ckpt_dir, &vs, &opt, &state)?;
            store::prune_best(out, state.best_step);
        }
    }
    let loop_s = loop_start.elapsed().as_secs_f64();
    if let Some(b) = &best {
        store::restore(&vs, b)?;
    }
    let val_all = encode_rows(&tok, &val_rows, ecfg.max_len, TieMode::Skip).0;
    let (e_pos, e_neg) = pair_energies(&model, &val_all, cfg.batch.max(16), pad, device);
    let val = report_from_energies(&val_rows, &val_all, &e_pos, &e_neg, cfg.thresholds());
    let val_energies = val_all
        .iter()
        .zip(e_pos.iter().zip(&e_neg))
        .map(|(p, (&chosen, &rejected))| ValEnergy {
            row: p.row,
            chosen,
            rejected,
        })
        .collect();
    store::save_model(out, &vs, &ecfg, &tok)?;
    store::write_json(&out.join(store::TRAIN_CONFIG_FILE), cfg)?;
    let stats = energy_stats(&model, &train_pairs, pad, device);
    store::write_json(&out.join(store::STATS_FILE), &stats)?;
    Ok(TrainSummary {
        steps_done: state.step,
        best_step: state.best_step,
        stopped_early: state.stopped_early,
        resumed_from,
        nonfinite_skipped: state.nonfinite,
        train_fit,
        val_fit,
        val,
        tokens_per_s: tokens as f64 / loop_s.max(1e-9),
        seconds: started.elapsed().as_secs_f64(),
        sampled_negatives: sampled.iter().map(Vec::len).sum(),
        val_energies,
    })
}

/// `cfg.sampled_negatives` answers per training row's prompt, sampled from the
/// `negatives_from` policy (one draw per distinct prompt, deterministic for the seed), each
/// encoded as prompt + SEP + answer + EOS and fitted like the pairs. Empty when off.
fn sample_negatives(
    cfg: &TrainConfig,
    inputs: &TrainInputs,
    tok: &Tokenizer,
    rows: &[datasets::table::PairRow],
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
    let policy = policy::Policy::load(dir, device).map_err(|e| RewardError::Input {
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
    let mut prompts: Vec<&str> = rows.iter().map(|r| r.prompt.as_str()).collect();
    prompts.sort_unstable();
    prompts.dedup();
    // Negatives are at most as long as the longest answer the data holds.
    let longest = rows
        .iter()
        .flat_map(|r| [&r.chosen, &r.rejected])
        .map(|a| tok.encode_pair("", a).ids.len())
        .max()
        .unwrap_or(8);
    let sampling = policy::sample::SampleConfig {
        n: k,
        temperature: 1.0,
        top_k: None,
        top_p: None,
        max_new_tokens: longest.clamp(2, max_len.saturating_sub(2).max(2)),
        batch: 64,
        seed: cfg.seed ^ 0x6e65_6761_7469_7665, // "negative"
    };
    let clock = Instant::now();
    let owned: Vec<String> = prompts.iter().map(|p| p.to_string()).collect();
    let samples =
        policy::sample::sample(&policy, &owned, &sampling).map_err(|e| RewardError::Input {
            path: dir.to_path_buf(),
            message: format!("sampling negatives: {e}"),
        })?;
    let mut by_prompt: std::collections::HashMap<&str, Vec<Vec<i64>>> = Default::default();
    for s in &samples {
        let prompt = prompts[s.prompt_id];
        let enc = tok.encode_pair(prompt, &s.answer);
        let ids = match crate::batch::fit_left(enc.ids.clone(), enc.answer_start, max_len) {
            (ids, crate::batch::Fit::AnswerTooLong) => {
                crate::batch::clip_answer(&ids, enc.answer_start, max_len)
            }
            (ids, _) => ids,
        };
        by_prompt.entry(prompt).or_default().push(ids);
    }
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

/// Energy statistics over (at most 2048 of) the training pairs.
pub fn energy_stats(
    model: &EnergyModel,
    pairs: &[EncodedPairRow],
    pad: i64,
    device: Device,
) -> EnergyStats {
    let take = &pairs[..pairs.len().min(2048)];
    let (p, n) = pair_energies(model, take, 32, pad, device);
    EnergyStats {
        pairs: take.len(),
        chosen: Dist::of(&p),
        rejected: Dist::of(&n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_indices_cover_each_epoch_once() {
        let mut seen: Vec<usize> = (0..5).flat_map(|s| batch_indices(s, 10, 2, 7)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(batch_indices(3, 10, 4, 7), batch_indices(3, 10, 4, 7));
        assert_ne!(batch_indices(0, 10, 10, 7), batch_indices(0, 10, 10, 8));
        assert_eq!(batch_indices(0, 3, 8, 1).len(), 3);
    }

    #[test]
    fn dist_is_hand_computed() {
        let d = Dist::of(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!((d.mean, d.p05, d.p50, d.p95), (3.0, 1.0, 3.0, 5.0));
        assert!((d.std - 2f64.sqrt()).abs() < 1e-12);
    }
}
