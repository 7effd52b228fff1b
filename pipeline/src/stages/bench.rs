//! `ember bench sft|sample`: throughput of the policy on the reference config (vocab 8192,
//! n_ctx 256, d_model 256, 4 layers, 4 heads), printed as one JSON line with tokens/s and MFU
//! against an fp32 matmul peak measured in the same run. Benchmarks measure; tests assert.
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use policy::model::GptConfig;
use policy::sample::SampleConfig;
use policy::sft::SftBatch;
use policy::tokenizer::EncodedPair;
use policy::train::{clip_grad_norm, AdamW, OptimConfig};
use policy::{Policy, Tokenizer};
use rand::Rng;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::error::usage;

/// Throughput benchmarks (one JSON line each).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// SFT steps of 16 × 256 tokens (every position a target).
    Sft(Args),
    /// Sampling: batch 16, 32 prompt tokens, 64 new tokens, temperature 1.
    Sample(Args),
    /// Energy-model training (8 pairs × 2 sequences × 256 tokens, log loss, AdamW) and scoring.
    Reward(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Timed repetitions (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
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

fn reference_policy(device: Device) -> Result<Policy> {
    tch::manual_seed(0);
    let alphabet: String = ('a'..='z').chain('0'..='9').collect();
    let tok = Tokenizer::char_level([alphabet.as_str()])?;
    Ok(Policy::new(GptConfig::default(), tok, device)?)
}

fn bench_sample(device: Device, iters: usize) -> Result<serde_json::Value> {
    let policy = reference_policy(device)?;
    let (batch, prompt_len, new) = (16usize, 32usize, 64usize);
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

fn bench_sft(device: Device, iters: usize) -> Result<serde_json::Value> {
    let policy = reference_policy(device)?;
    let (batch, len) = (16usize, 256usize);
    let mut rng = policy::rng::stream(0, "bench", 1);
    let pairs: Vec<EncodedPair> = (0..batch)
        .map(|_| EncodedPair {
            ids: (0..=len).map(|_| rng.random_range(4..8192i64)).collect(),
            answer_start: 1,
        })
        .collect();
    let refs: Vec<&EncodedPair> = pairs.iter().collect();
    let data = SftBatch::new(&refs, 0, device);
    let mut opt = AdamW::new(&policy.vs, &OptimConfig::default());
    let mut step = || {
        let loss = data.loss(&policy.model, true);
        loss.backward();
        clip_grad_norm(opt.params(), 1.0);
        opt.step(1e-4);
        opt.zero_grad();
        sync(device);
    };
    step();
    let t = Instant::now();
    for _ in 0..iters {
        step();
    }
    let secs = t.elapsed().as_secs_f64();
    let tokens = (iters * batch * len) as f64;
    let flops = tokens * 3.0 * policy.config.forward_flops_per_token(len as f64 / 2.0);
    Ok(
        json!({"batch": batch, "seq_len": len, "tokens_per_s": tokens / secs, "flops_per_s": flops / secs, "step_s": secs / iters as f64}),
    )
}

pub fn cli(cmd: Command) -> Result<ExitCode> {
    let (name, args) = match &cmd {
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
    let mut out = match cmd {
        Command::Sft(_) => bench_sft(device, args.iters)?,
        Command::Sample(_) => bench_sample(device, args.iters)?,
        Command::Reward(_) => serde_json::to_value(reward::bench::run(args.iters, device))?,
    };
    out["bench"] = name.into();
    out["mfu"] = (out["flops_per_s"].as_f64().unwrap_or(0.0) / peak).into();
    out["peak_matmul_flops"] = peak.into();
    out["device"] = format!("{device:?}").into();
    out["precision"] = precision.to_string().into();
    out["threads"] = tch::get_num_threads().into();
    out["config"] = serde_json::to_value(GptConfig::default())?;
    println!("{out}");
    Ok(ExitCode::SUCCESS)
}
