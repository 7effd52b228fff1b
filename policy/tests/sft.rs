//! SFT on synthetic addition: validation loss falls below a threshold within a small budget,
//! a resumed run ends bit-identical to an uninterrupted one, and a diverging run stops with a
//! clear error that says whether a checkpoint exists.
use policy::model::GptConfig;
use policy::sft::{train, SftConfig};
use policy::train::OptimConfig;
use policy::{Policy, PolicyError, Tokenizer};
use tch::Device;

/// The torch generator is global: tests that seed it must not interleave.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn addition(n: usize, offset: u64) -> Vec<(String, String)> {
    (0..n as u64)
        .map(|i| {
            let x = (i * 7919 + offset) % 50;
            let y = (i * 104729 + 3 * offset) % 50;
            (format!("{x}+{y}="), format!("{}", x + y))
        })
        .collect()
}

fn config(steps: u64) -> SftConfig {
    SftConfig {
        steps,
        batch: 32,
        eval_every: steps,
        checkpoint_every: 0,
        seed: 4,
        optim: OptimConfig {
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 10,
            ..Default::default()
        },
        model: GptConfig {
            vocab_size: 0,
            n_ctx: 16,
            d_model: 48,
            n_layer: 2,
            n_head: 4,
            dropout: 0.0,
            layer_norm_eps: 1e-5,
        },
        ..Default::default()
    }
}

fn tokenizer() -> Tokenizer {
    Tokenizer::char_level(["0123456789+="]).unwrap()
}

#[test]
fn sft_on_addition_lowers_val_loss_below_threshold() {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let steps: u64 = std::env::var("SFT_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let t = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let report = train(
        &config(steps),
        tokenizer(),
        &addition(2000, 0),
        &addition(200, 1),
        None,
        dir.path(),
        Device::Cpu,
    )
    .unwrap();
    eprintln!("{report:?} {:?}", t.elapsed());
    // untrained: ln(16) ≈ 2.77 per answer token; this config reaches ≈ 1.95 in 150 steps
    assert!(report.val_loss < 2.2, "val loss {}", report.val_loss);
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count() as u64, steps);
    assert!(Policy::load(dir.path(), Device::Cpu).is_ok());
}

#[test]
fn resume_after_interruption_matches_uninterrupted_run() {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = SftConfig {
        checkpoint_every: 6,
        grad_accum: 2,
        batch: 8,
        model: GptConfig {
            dropout: 0.1,
            ..config(1).model
        },
        ..config(14)
    };
    let (train_rows, val_rows) = (addition(300, 0), addition(20, 1));
    train(
        &cfg,
        tokenizer(),
        &train_rows,
        &val_rows,
        None,
        a.path(),
        Device::Cpu,
    )
    .unwrap();
    // The uninterrupted run left checkpoint/ at step 12; keep only it, as a killed run would.
    let ckpt = a.path().join("checkpoint");
    assert!(ckpt.join("state.json").exists());
    copy_dir(&ckpt, &b.path().join("checkpoint"));
    let resumed = train(
        &cfg,
        tokenizer(),
        &train_rows,
        &val_rows,
        None,
        b.path(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(resumed.resumed_from, 12);
    let (pa, pb) = (
        Policy::load(a.path(), Device::Cpu).unwrap(),
        Policy::load(b.path(), Device::Cpu).unwrap(),
    );
    for (name, t) in pa.vs.variables() {
        assert!(
            t.equal(&pb.vs.variables()[&name]),
            "{name} differs after resume"
        );
    }
}

#[test]
fn diverging_loss_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SftConfig {
        optim: OptimConfig {
            lr: 1e30,
            min_lr: 1e30,
            warmup_steps: 0,
            grad_clip: 0.0,
            weight_decay: 0.0,
            ..Default::default()
        },
        ..config(30)
    };
    let err = train(
        &cfg,
        tokenizer(),
        &addition(100, 0),
        &addition(10, 1),
        None,
        dir.path(),
        Device::Cpu,
    )
    .unwrap_err();
    let PolicyError::NonFinite(stop) = &err else {
        panic!("expected a non-finite stop, got {err}");
    };
    // It stops at the limit in a row, or earlier once more than half the steps were skipped.
    let limit = policy::train::NONFINITE_LIMIT;
    assert!((limit / 2..=limit).contains(&stop.count), "{err}");
    // checkpoint_every = 0: no checkpoint exists, and the error must not claim one
    assert_eq!(stop.checkpoint, None);
    assert!(!dir.path().join("checkpoint").exists());
    assert!(err.to_string().contains("non-finite loss"), "{err}");
    assert!(
        err.to_string().contains("no checkpoint was written"),
        "{err}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_run_from_a_pretrained_model_reports_the_loss_it_started_from() {
    let _guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (train_rows, val_rows) = (addition(200, 0), addition(20, 1));
    let base = tempfile::tempdir().unwrap();
    let first = train(
        &config(40),
        tokenizer(),
        &train_rows,
        &val_rows,
        None,
        base.path(),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        first.init_val_loss, None,
        "a fresh model has no start to beat"
    );
    // Far too hot a learning rate: the fine-tuned model ends worse than where it started.
    let hot = SftConfig {
        optim: OptimConfig {
            lr: 0.5,
            min_lr: 0.5,
            warmup_steps: 0,
            ..Default::default()
        },
        ..config(5)
    };
    let out = tempfile::tempdir().unwrap();
    let worse = train(
        &hot,
        tokenizer(),
        &train_rows,
        &val_rows,
        Some(base.path()),
        out.path(),
        Device::Cpu,
    )
    .unwrap();
    let start = worse
        .init_val_loss
        .expect("the starting model's validation loss");
    assert!(
        (start - first.val_loss).abs() < 1e-5,
        "{start} vs {}",
        first.val_loss
    );
    assert!(worse.val_loss > start, "{} !> {start}", worse.val_loss);
    let first_line = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    let first_line: serde_json::Value =
        serde_json::from_str(first_line.lines().next().unwrap()).unwrap();
    assert_eq!(first_line["step"], 0);
}
