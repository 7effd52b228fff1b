//! `ember bench forward|sft|sample|reward`: throughput of a freshly initialised trunk of a fixed
//! shape, printed as one JSON line with tokens/s and MFU against an fp32 (or bf16) matmul peak
//! measured in the same run. `scripts/torch_reference.py` runs the same workloads in PyTorch
//! eager (`--shape smollm2`: `transformers`' Llama). Benchmarks measure; tests assert.
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use policy::model::{GptConfig, LlamaConfig, TrunkConfig};
use policy::sample::SampleConfig;
use policy::sft::SftBatch;
use policy::tokenizer::EncodedPair;
use policy::train::{clip_grad_norm, AdamW, OptimConfig};
use policy::{Policy, Tokenizer};
use rand::Rng;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::error::usage;

/// Throughput benchmarks (one JSON line each). Workloads per `--shape`:
/// reference: forward 16 × 256, sft 16 × 256, sample 16 × (32 + 64), reward 8 pairs × 2 × 256;
/// smollm2: forward 8 × 256, sft 4 × 256, sample 8 × (32 + 32), reward 4 pairs × 2 × 256.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Scoring forward pass: batch × tokens, no gradient, logits at every position.
    Forward(Args),
    /// SFT steps (every position a target, AdamW, clipping).
    Sft(Args),
    /// Sampling with the KV cache, temperature 1: prompt tokens, then new tokens.
    Sample(Args),
    /// Energy-model training (pairs × 2 sequences, every block trained, log loss, AdamW) and
    /// scoring.
    Reward(Args),
}

/// The trunk shape a benchmark runs (weights freshly initialised, seed 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// GPT-2 blocks: vocab 8192, n_ctx 256, d_model 256, 4 layers, 4 heads.
    Reference,
    /// SmolLM2-135M: Llama blocks, vocab 49152, d_model 576, 30 layers, 9 query and 3
    /// key/value heads, SwiGLU 1536, tied embeddings (134.5M parameters).
    Smollm2,
}

/// Batch and lengths of each workload on a shape.
struct Workload {
    forward: (usize, usize),
    sft: (usize, usize),
    /// (batch, prompt tokens, new tokens)
    sample: (usize, usize, usize),
    /// (pairs, tokens per sequence)
    reward: (i64, i64),
}

impl Shape {
    pub fn trunk(self) -> TrunkConfig {
        match self {
            Self::Reference => GptConfig::default().into(),
            Self::Smollm2 => LlamaConfig {
                vocab_size: 49152,
                n_ctx: 8192,
                d_model: 576,
                n_layer: 30,
                n_head: 9,
                n_kv_head: 3,
                d_ff: 1536,
                rope_theta: 100_000.0,
                rms_norm_eps: 1e-5,
                attention_bias: false,
                tie_word_embeddings: true,
            }
            .into(),
        }
    }

    fn workload(self) -> Workload {
        match self {
            Self::Reference => Workload {
                forward: (16, 256),
                sft: (16, 256),
                sample: (16, 32, 64),
                reward: (8, 256),
            },
            Self::Smollm2 => Workload {
                forward: (8, 256),
                sft: (4, 256),
                sample: (8, 32, 32),
                reward: (4, 256),
            },
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    /// Trunk shape.
    #[arg(long, value_enum, default_value_t = Shape::Reference)]
    pub shape: Shape,
    /// MFU is measured against a matmul peak in the same precision.
    #[command(flatten)]
    pub runtime: crate::stage::RuntimeArgs,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Best-of-5 matmul FLOP/s of `kind` operands at n = 1024 on CPU, 4096 on CUDA (2n³ FLOPs
/// each).
pub fn matmul_peak(device: Device, kind: Kind) -> f64 {
    let n = if device.is_cuda() { 4096 } else { 1024 };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let _ = a.matmul(&b);
    sync(device);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let _ = a.matmul(&b);
            sync(device);
            2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// A freshly initialised policy of `shape` (seed 0) with a character-level tokenizer (the
/// benchmarks feed token ids; only `sample` encodes its random-letter prompts).
fn bench_policy(shape: Shape, device: Device) -> Result<Policy> {
    tch::manual_seed(0);
    let alphabet: String = ('a'..='z').chain('0'..='9').collect();
    let tok = Tokenizer::char_level([alphabet.as_str()])?;
    Ok(Policy::new(shape.trunk(), tok, device)?)
}

/// Random token ids `[batch, len]` in 4..vocab (no special tokens).
fn random_ids(policy: &Policy, batch: usize, len: usize, stream: u64) -> Vec<Vec<i64>> {
    let mut rng = policy::rng::stream(0, "bench", stream);
    let v = policy.config.vocab_size();
    (0..batch)
        .map(|_| (0..len).map(|_| rng.random_range(4..v)).collect())
        .collect()
}

fn bench_forward(shape: Shape, device: Device, iters: usize) -> Result<serde_json::Value> {
    let policy = bench_policy(shape, device)?;
    let (batch, len) = shape.workload().forward;
    let rows = random_ids(&policy, batch, len, 2);
    let ids = Tensor::from_slice2(&rows).to_device(device);
    let mask = Tensor::ones([batch as i64, len as i64], (Kind::Int64, device));
    let run = || {
        tch::no_grad(|| {
            let logits = policy.model.logits(&ids, &mask, false);
            let _ = logits.double_value(&[0, 0, 0]);
        });
        sync(device);
    };
    let flops = policy.config.forward_flops_per_token(len as f64 / 2.0);
    Ok(timed_steps(iters, batch, len, flops, run))
}

/// Times `iters` calls of `step` after one warm-up call, each on `batch` × `len` tokens costing
/// `flops_per_token`: the JSON of the forward and sft benches.
fn timed_steps(
    iters: usize,
    batch: usize,
    len: usize,
    flops_per_token: f64,
    mut step: impl FnMut(),
) -> serde_json::Value {
    step();
    let t = Instant::now();
    for _ in 0..iters {
        step();
    }
    let secs = t.elapsed().as_secs_f64();
    let tokens = (iters * batch * len) as f64;
    json!({"batch": batch, "seq_len": len, "tokens_per_s": tokens / secs,
        "flops_per_s": tokens * flops_per_token / secs, "step_s": secs / iters as f64})
}

fn bench_sample(shape: Shape, device: Device, iters: usize) -> Result<serde_json::Value> {
    let policy = bench_policy(shape, device)?;
    let (batch, prompt_len, new) = shape.workload().sample;
    let mut rng = policy::rng::stream(0, "bench", 0);
    let prompts: Vec<String> = (0..batch)
        .map(|_| {
            (0..prompt_len - 1)
                .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
                .collect()
        })
        .collect();
    let cfg = SampleConfig {
        n: 1,
        temperature: 1.0,
        top_k: None,
        top_p: None,
        max_new_tokens: new,
        batch,
        seed: 0,
    };
    let _ = policy::sample::sample(&policy, &prompts, &cfg)?;
    let (mut secs, mut tokens) = (0.0, 0usize);
    for i in 0..iters {
        let t = Instant::now();
        let s = policy::sample::sample(
            &policy,
            &prompts,
            &SampleConfig {
                seed: i as u64 + 1,
                ..cfg.clone()
            },
        )?;
        sync(device);
        secs += t.elapsed().as_secs_f64();
        tokens += s.iter().map(|x| x.answer_ids.len()).sum::<usize>();
    }
    let c = &policy.config;
    let flops = iters as f64
        * batch as f64
        * (prompt_len as f64 * c.forward_flops_per_token(prompt_len as f64 / 2.0)
            + new as f64 * c.forward_flops_per_token(prompt_len as f64 + new as f64 / 2.0));
    Ok(
        json!({"batch": batch, "prompt_tokens": prompt_len, "new_tokens": new, "tokens_per_s": tokens as f64 / secs, "flops_per_s": flops / secs}),
    )
}

fn bench_sft(shape: Shape, device: Device, iters: usize) -> Result<serde_json::Value> {
    let policy = bench_policy(shape, device)?;
    let (batch, len) = shape.workload().sft;
    let pairs: Vec<EncodedPair> = random_ids(&policy, batch, len + 1, 1)
        .into_iter()
        .map(|ids| EncodedPair {
            ids,
            answer_start: 1,
        })
        .collect();
    let refs: Vec<&EncodedPair> = pairs.iter().collect();
    let data = SftBatch::new(&refs, 0, device);
    let mut opt = AdamW::new(&policy.vs, &OptimConfig::default());
    let step = || {
        let loss = data.loss(&policy.model, true);
        loss.backward();
        clip_grad_norm(opt.params(), 1.0);
        opt.step(1e-4);
        opt.zero_grad();
        sync(device);
    };
    let flops = 3.0 * policy.config.forward_flops_per_token(len as f64 / 2.0);
    Ok(timed_steps(iters, batch, len, flops, step))
}

pub fn cli(cmd: Command) -> Result<ExitCode> {
    let (name, args) = match &cmd {
        Command::Forward(a) => ("forward", a),
        Command::Sft(a) => ("sft", a),
        Command::Sample(a) => ("sample", a),
        Command::Reward(a) => ("reward", a),
    };
    if args.iters == 0 {
        return Err(usage("--iters must be > 0"));
    }
    let precision = args.runtime.precision;
    let device = policy::device::resolve(args.runtime.device)?;
    let peak = matmul_peak(device, precision.kind());
    let _amp = precision.enter(device).map_err(|e| usage(e.to_string()))?;
    let (shape, iters) = (args.shape, args.iters);
    let mut out = match cmd {
        Command::Forward(_) => bench_forward(shape, device, iters)?,
        Command::Sft(_) => bench_sft(shape, device, iters)?,
        Command::Sample(_) => bench_sample(shape, device, iters)?,
        Command::Reward(_) => {
            let (pairs, len) = shape.workload().reward;
            let trunk = shape.trunk();
            serde_json::to_value(reward::bench::run(&trunk, pairs, len, iters, device))?
        }
    };
    out["bench"] = name.into();
    out["mfu"] = (out["flops_per_s"].as_f64().unwrap_or(0.0) / peak).into();
    out["peak_matmul_flops"] = peak.into();
    out["device"] = format!("{device:?}").into();
    out["precision"] = precision.to_string().into();
    out["threads"] = tch::get_num_threads().into();
    out["shape"] = format!("{shape:?}").to_lowercase().into();
    out["config"] = serde_json::to_value(shape.trunk())?;
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
