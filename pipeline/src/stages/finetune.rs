//! `ember finetune`: rejection-sampling fine-tuning of the policy on its own lowest-energy
//! answers (expert iteration, Anthony et al. 2017; RAFT, Dong et al. 2023), with a KL penalty to
//! the reference policy or SFT data mixed in; or, with `--algo rloo`, REINFORCE leave-one-out
//! (Ahmadian et al. 2024) on the reward −E − β(log π − log π_ref). Both log the same held-out
//! numbers per round to `rounds.jsonl`, so they compare on the same axes.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use policy::finetune::{
    finetune, Algo, FinetuneConfig, FinetuneData, KeepRule, RoundRow, CHECKPOINT, ROUNDS,
};
use policy::pool::read_answers;
use policy::rng;
use policy::sample::SampleConfig;
use policy::train::OptimConfig;
use policy::Policy;
use reward::EnergyScorer;
use serde::{Deserialize, Serialize};

use crate::config::Invalid;
use crate::error::usage;
use crate::stage::{self, Common, LrArg, Stage, StageArgs};
use crate::stages::load_prompts;

pub const POLICY_DIR: &str = "policy";

/// The `[finetune]` section of a run config, and the flags of `ember finetune`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// rs (rank-and-select fine-tuning) or rloo.
    #[arg(long, default_value_t = Config::default().algo)]
    pub algo: Algo,
    /// Rounds of sample → select → train.
    #[arg(long, default_value_t = Config::default().rounds)]
    pub rounds: usize,
    /// Samples per prompt: N for rs (the best is kept), k for rloo (≥ 2).
    #[arg(short = 'n', long = "samples", default_value_t = Config::default().n)]
    pub n: usize,
    /// Training prompts used per round (0 = all); rounds walk through a shuffled list.
    #[arg(long, default_value_t = Config::default().prompts_per_round)]
    pub prompts_per_round: usize,
    /// Which selected answers are trained on (rs): best, below:E or above-median.
    #[arg(long, default_value_t = Config::default().keep)]
    pub keep: KeepRule,
    /// KL weight: rs, the per-token KL(π‖π_ref) term of the SFT loss; rloo, β in the reward.
    #[arg(long, default_value_t = Config::default().kl_coef)]
    pub kl_coef: f64,
    /// SFT pairs mixed in per kept pair when an SFT table is given.
    #[arg(long, default_value_t = Config::default().mix_ratio)]
    pub mix_ratio: f64,
    /// Optimizer steps per round (rs); rloo takes prompts_per_round / rloo_prompts steps.
    #[arg(long, default_value_t = Config::default().steps)]
    pub steps: u64,
    /// Sequences per SFT step.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Prompts per RLOO step (each with n samples).
    #[arg(long, default_value_t = Config::default().rloo_prompts)]
    pub rloo_prompts: usize,
    /// Optimizer and schedule (warmup + cosine within each round; `--lr` sets the peak).
    #[arg(skip = Config::default().optim)]
    pub optim: OptimConfig,
    /// Sampling temperature.
    #[arg(long, default_value_t = Config::default().temperature)]
    pub temperature: f64,
    /// Longest answer in tokens, EOS included.
    #[arg(long, default_value_t = Config::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sequences generated together.
    #[arg(long, default_value_t = Config::default().sample_batch)]
    pub sample_batch: usize,
    /// Sequences scored together (energy and log-probs).
    #[arg(long, default_value_t = Config::default().score_batch)]
    pub score_batch: usize,
    /// Held-out prompts evaluated each round (0 = all given).
    #[arg(id = "eval_n", long = "eval-n", default_value_t = Config::default().eval_prompts)]
    pub eval_prompts: usize,
    /// Fresh samples per held-out prompt.
    #[arg(long, default_value_t = Config::default().eval_samples)]
    pub eval_samples: usize,
    /// Checkpoint every this many steps inside a round (0 = only at round ends).
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Bootstrap resamples of the held-out gold gain's standard error.
    #[arg(long, default_value_t = Config::default().bootstrap)]
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
}

/// Upstream artifacts.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// The starting policy (also the KL reference), the energy model and the training prompts.
    #[command(flatten)]
    pub on: super::OnPolicy,
    /// Held-out prompts (e.g. synth's eval_prompts.parquet); default: the last --eval-n
    /// training prompts.
    #[arg(long)]
    pub eval_prompts: Option<PathBuf>,
    /// Mix SFT pairs into each round (sft.parquet or a synth directory).
    #[arg(long)]
    pub mix_sft: Option<PathBuf>,
    /// Train on refined answers (refine stage directory or refined.parquet) instead of samples.
    #[arg(long)]
    pub from_refine: Option<PathBuf>,
}

/// Training and held-out prompts: the held-out file when given, else the last `eval_prompts`
/// of the training prompts (removed from training).
fn split_prompts(cfg: &Config, inputs: &Inputs) -> Result<(Vec<String>, Vec<String>)> {
    let mut train = load_prompts(&inputs.on.prompts, 0)?;
    if let Some(path) = &inputs.eval_prompts {
        return Ok((train, load_prompts(path, cfg.eval_prompts)?));
    }
    if cfg.eval_prompts == 0 || cfg.eval_prompts >= train.len() {
        return Err(usage(format!(
            "{}: {} prompts cannot spare {} held-out prompts; pass --eval-prompts FILE",
            inputs.on.prompts.display(),
            train.len(),
            cfg.eval_prompts
        )));
    }
    let held = train.split_off(train.len() - cfg.eval_prompts);
    Ok((train, held))
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
    let rows = read_answers(&file, "prompt", "final_answer")?;
    if rows.is_empty() {
        return Err(usage(format!("{}: no refined answers", file.display())));
    }
    Ok(rows)
}

/// The library's settings for this config under the run seed.
fn finetune_config(cfg: &Config, seed: u64) -> FinetuneConfig {
    FinetuneConfig {
        algo: cfg.algo,
        rounds: cfg.rounds,
        prompts_per_round: cfg.prompts_per_round,
        keep: cfg.keep,
        kl_coef: cfg.kl_coef,
        mix_ratio: cfg.mix_ratio,
        steps: cfg.steps,
        batch: cfg.batch,
        rloo_prompts: cfg.rloo_prompts,
        optim: cfg.optim.clone(),
        sampling: cfg.sampling(cfg.n, 0),
        eval_samples: cfg.eval_samples,
        score_batch: cfg.score_batch,
        checkpoint_every: cfg.checkpoint_every,
        bootstrap: cfg.bootstrap,
        seed,
    }
}

/// The prompts and pairs of the run; usage errors for inputs that cannot work.
fn read_data(cfg: &Config, inputs: &Inputs) -> Result<FinetuneData> {
    let (train, eval) = split_prompts(cfg, inputs)?;
    let mix = inputs.mix_sft.as_deref().map(read_mix).transpose()?;
    let refined = inputs
        .from_refine
        .as_deref()
        .map(read_refined)
        .transpose()?;
    Ok(FinetuneData {
        train,
        eval,
        mix,
        refined,
    })
}

/// The stage: the fine-tuned `policy/`, `rounds.jsonl` and each round's kept answers; resumes
/// from `OUT.partial/checkpoint`.
impl Stage for Config {
    const NAME: &'static str = "finetune";
    const SHARDS: bool = true;
    const RESUMABLE: bool = true;
    const SCRATCH: &'static [&'static str] = &[CHECKPOINT];
    const RESUME_FROM: &'static [&'static str] = &[CHECKPOINT];
    type Inputs = Inputs;

    /// The policy, the energy model, the prompts, then the optional inputs that are given.
    fn input_paths(inputs: &Inputs) -> Vec<PathBuf> {
        let optional = [&inputs.eval_prompts, &inputs.mix_sft, &inputs.from_refine];
        let mut paths = inputs.on.paths();
        paths.extend(optional.into_iter().flatten().cloned());
        paths
    }

    fn check(&self) -> Vec<Invalid> {
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
        let mut bad: Vec<Invalid> = positive
            .iter()
            .filter(|(_, v)| *v == 0)
            .map(|(k, _)| Invalid::new(*k, "must be > 0"))
            .collect();
        if self.algo == Algo::Rloo && self.n == 1 {
            bad.push(Invalid::new(
                "n",
                "rloo needs n ≥ 2 samples per prompt (leave-one-out)",
            ));
        }
        bad.extend(Invalid::below("temperature", self.temperature, 0.0, false));
        bad.extend(Invalid::below("kl_coef", self.kl_coef, 0.0, true));
        bad.extend(Invalid::below("mix_ratio", self.mix_ratio, 0.0, true));
        bad.extend(Invalid::below("optim.lr", self.optim.lr, 0.0, false));
        bad
    }

    fn execute(&self, common: &Common, inputs: &Inputs, dir: &Path) -> Result<serde_json::Value> {
        let cfg = self;
        if cfg.algo == Algo::Rloo && (inputs.mix_sft.is_some() || inputs.from_refine.is_some()) {
            return Err(usage(
                "finetune: --mix-sft and --from-refine apply to --algo rs only",
            ));
        }
        let (device, _amp) = common.device()?;
        let data = read_data(cfg, inputs)?;
        tch::manual_seed(rng::torch_seed(common.seed, "finetune", 0));
        let load = |what: &str, p: &Path| {
            Policy::load(p, device)
                .with_context(|| format!("loading the {what} from {}", p.display()))
        };
        let reference = load("reference policy", &inputs.on.policy)?;
        let mut policy = load("policy", &inputs.on.policy)?;
        let scorer = EnergyScorer::load(&inputs.on.reward, device).with_context(|| {
            format!(
                "loading the reward model from {}",
                inputs.on.reward.display()
            )
        })?;
        let lib_cfg = finetune_config(cfg, common.seed);
        finetune(&lib_cfg, &mut policy, &reference, &scorer, &data, dir)?;
        policy
            .save(dir.join(POLICY_DIR))
            .context("saving the fine-tuned policy")?;
        let rounds_path = dir.join(ROUNDS);
        let text = std::fs::read_to_string(&rounds_path)
            .with_context(|| format!("reading {}", rounds_path.display()))?;
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        Ok(serde_json::json!({ "rounds": rows, "final": rows.last() }))
    }
}

pub type Args = StageArgs<Inputs, Config, LrArg>;

pub fn cli(args: Args) -> Result<ExitCode> {
    let mut cfg = args.config;
    args.extra.apply(&mut cfg.optim);
    let (common, inputs) = (Common::from(&args.run), args.inputs);
    let manifest =
        stage::run_cli(&cfg, &common, &inputs, &args.out).context("ember finetune failed")?;
    let rows: Vec<RoundRow> = serde_json::from_value(manifest.metrics["rounds"].clone())?;
    print!("{}", render_rounds(&rows));
    println!(
        "finetune: {} rounds → {}",
        cfg.rounds,
        args.out.path.join(POLICY_DIR).display()
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
