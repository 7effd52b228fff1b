//! Tiny-model checks of the reward crate: each loss moves energies the right way in one step, a
//! tiny model separates a trivially separable set, save → load and resume are bit-identical, and
//! the doctor catches a pad-reading pooling and a batch-dependent energy.
use std::path::Path;

use datasets::table::{write_pairs, PairRow};
use policy::train::{AdamW, OptimConfig};
use policy::{GptConfig, Tokenizer};
use reward::batch::{EncodedPairRow, PairBatch};
use reward::doctor::{self, Side};
use reward::eval::to_vec;
use reward::loss::{batch_loss, LossConfig, LossKind};
use reward::model::{EnergyConfig, EnergyModel, Pooling};
use reward::train::{train, TrainConfig, TrainInputs};
use reward::{store, EnergyScorer};
use tch::{nn, Device, Kind, Tensor};

/// One test of this file at a time. libtorch ops issued from several threads at once share the
/// intra-op thread pool, and an op that finds it busy runs with fewer threads and may round
/// differently, so two concurrent tests can break the bit-exact resume check (about 1 run in 8
/// of this binary did). One training process alone on the CPU is deterministic.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

const ALPHABET: &str = "abcdefghij0123456789+=xy ";

/// `<pad> <sep> <eos> <unk>`, then the sorted characters of `ALPHABET`.
fn tokenizer() -> Tokenizer {
    Tokenizer::char_level([ALPHABET]).unwrap()
}

fn tiny_config(tok: &Tokenizer, pooling: Pooling) -> EnergyConfig {
    let trunk = GptConfig {
        vocab_size: tok.vocab_size(),
        n_ctx: 24,
        d_model: 16,
        n_layer: 1,
        n_head: 2,
        dropout: 0.0,
        layer_norm_eps: 1e-5,
    };
    EnergyConfig {
        trunk: trunk.into(),
        max_len: 24,
        pooling,
        sep_id: tok.sep_id(),
        ..EnergyConfig::default()
    }
}

/// Pair i: prompt of 1–4 letters, chosen "x…" and rejected "y…" (separable by one token).
fn separable_rows(n: usize, offset: usize) -> Vec<PairRow> {
    (0..n)
        .map(|k| {
            let i = k + offset;
            let prompt: String = (0..1 + i % 4)
                .map(|j| (b'a' + ((i * 7 + j * 3) % 10) as u8) as char)
                .collect();
            let reps = 1 + i % 3;
            PairRow {
                id: format!("p{i}"),
                source: if i.is_multiple_of(2) {
                    "even".into()
                } else {
                    "odd".into()
                },
                prompt,
                chosen: "x".repeat(reps),
                rejected: "y".repeat(1 + (i + 1) % 3),
                margin: None,
                tie: false,
                gold_chosen: None,
                gold_rejected: None,
            }
        })
        .collect()
}

fn write_split(dir: &Path, train_n: usize, val_n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    write_pairs(
        &dir.join("train.parquet"),
        &separable_rows(train_n, 0),
        None,
        false,
    )
    .unwrap();
    write_pairs(
        &dir.join("val.parquet"),
        &separable_rows(val_n, 1000),
        None,
        false,
    )
    .unwrap();
    tokenizer().save(dir.join("tokenizer.json")).unwrap();
}

fn small_train_config(steps: u64) -> TrainConfig {
    let mut cfg = TrainConfig {
        steps,
        batch: 8,
        max_len: 24,
        eval_every: 10,
        checkpoint_every: 5,
        d_model: 16,
        n_layer: 1,
        n_head: 2,
        ..TrainConfig::default()
    };
    cfg.optim.lr = 3e-3;
    cfg.optim.warmup_steps = 2;
    cfg
}

fn encoded(tok: &Tokenizer, rows: &[PairRow]) -> Vec<EncodedPairRow> {
    reward::data::encode_rows(tok, rows, 24, reward::loss::TieMode::Skip).0
}

const KINDS: [LossKind; 5] = [
    LossKind::Log,
    LossKind::Hinge,
    LossKind::SquareSquare,
    LossKind::SquareExp,
    LossKind::Nll,
];

#[test]
fn one_step_of_each_loss_lowers_chosen_and_raises_rejected_energy() {
    let _serial = serial();
    // Toy batch: the energies themselves are the parameters; one gradient step of each loss
    // must push every E⁺ down and every E⁻ (and in-batch negative) up.
    for kind in KINDS {
        let e_pos = Tensor::from_slice(&[0.5f32, 1.0, 0.2]).set_requires_grad(true);
        let e_neg = Tensor::from_slice(&[0.6f32, 0.4, 1.5]).set_requires_grad(true);
        let zeros = Tensor::zeros([3], (Kind::Float, Device::Cpu));
        let cfg = LossConfig {
            kind,
            margin: 2.0,
            ..LossConfig::default()
        };
        let negs = Tensor::stack(&[&e_neg, &e_neg.roll([1], [0])], 1); // rejected + another prompt's
        batch_loss(&cfg, &e_pos, &e_neg, &zeros, &zeros, Some(&negs)).backward();
        let (gp, gn) = (to_vec(&e_pos.grad()), to_vec(&e_neg.grad()));
        assert!(gp.iter().all(|g| *g > 0.0), "{kind:?}: dL/dE+ {gp:?}");
        assert!(gn.iter().all(|g| *g < 0.0), "{kind:?}: dL/dE- {gn:?}");
    }
}

#[test]
fn one_model_step_of_each_loss_widens_the_energy_gap() {
    let _serial = serial();
    let tok = tokenizer();
    let rows = separable_rows(8, 0);
    let pairs = encoded(&tok, &rows);
    let refs: Vec<&EncodedPairRow> = pairs.iter().collect();
    let batch = PairBatch::new(&refs, &[], tok.pad_id(), Device::Cpu);
    for kind in KINDS {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = EnergyModel::new(vs.root(), &tiny_config(&tok, Pooling::Eos));
        let mut opt = AdamW::new(
            &vs,
            &OptimConfig {
                weight_decay: 0.0,
                ..OptimConfig::default()
            },
        );
        let loss_cfg = LossConfig {
            kind,
            margin: 2.0,
            ..LossConfig::default()
        };
        let gap = || {
            let e = tch::no_grad(|| model.energy(&batch.ids, &batch.mask, false));
            let (p, n, _) = batch.split(&e);
            (n - p).mean(Kind::Float).double_value(&[])
        };
        let before = gap();
        let e = model.energy(&batch.ids, &batch.mask, true);
        let (p, n, _) = batch.split(&e);
        batch_loss(&loss_cfg, &p, &n, &batch.margin, &batch.tie, None).backward();
        opt.step(1e-3);
        assert!(
            gap() > before,
            "{kind:?}: mean E- - E+ {before} -> {}",
            gap()
        );
    }
}

#[test]
fn tiny_model_separates_a_trivially_separable_set_and_reloads_bit_identically() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_split(&data, 64, 24);
    let out = tmp.path().join("rm");
    std::fs::create_dir_all(&out).unwrap();
    let inputs = TrainInputs {
        data: data.clone(),
        tokenizer: Some(data.join("tokenizer.json")),
        init: None,
        negatives_from: None,
    };
    let summary = train(&small_train_config(60), &inputs, &out, Device::Cpu).unwrap();
    assert_eq!(summary.val.accuracy, 1.0, "{:?}", summary.val);
    assert_eq!(summary.val.pairs, 24);
    assert_eq!(summary.val.by_source.len(), 2);
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_config.json",
        "energy_stats.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // save → load → energies bit-identical
    let a = EnergyScorer::load(&out, Device::Cpu).unwrap();
    let again = tmp.path().join("again");
    store::save_model(&again, &a.vs, &a.config, &a.tokenizer).unwrap();
    let b = EnergyScorer::load(&again, Device::Cpu).unwrap();
    let rows = separable_rows(24, 1000);
    let prompts: Vec<String> = rows.iter().map(|r| r.prompt.clone()).collect();
    let answers: Vec<String> = rows.iter().map(|r| r.chosen.clone()).collect();
    let ea = a.score(&prompts, &answers, 5).unwrap();
    let eb = b.score(&prompts, &answers, 5).unwrap();
    assert!(
        ea.iter().zip(&eb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "{ea:?} vs {eb:?}"
    );
    // the doctor passes on a correct model
    let checks = doctor::run(&a, &rows, 24).unwrap();
    assert!(checks.iter().all(|c| c.pass), "{checks:#?}");
}

#[test]
fn resumed_training_is_bit_identical_to_uninterrupted() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_split(&data, 40, 8);
    let inputs = TrainInputs {
        data: data.clone(),
        tokenizer: Some(data.join("tokenizer.json")),
        init: None,
        negatives_from: None,
    };
    let full = tmp.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    train(&small_train_config(20), &inputs, &full, Device::Cpu).unwrap();
    // the same run again keeps its checkpoints (every 5 steps; none at the final step), so
    // deleting its final weights and re-running resumes from step 15 as a killed run would
    let part = tmp.path().join("part");
    std::fs::create_dir_all(&part).unwrap();
    train(&small_train_config(20), &inputs, &part, Device::Cpu).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(part.join("ckpt/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 15, "last checkpoint before the final step");
    // remove the final artifacts and resume from step 15
    std::fs::remove_file(part.join("model.safetensors")).unwrap();
    let s = train(&small_train_config(20), &inputs, &part, Device::Cpu).unwrap();
    assert_eq!(s.resumed_from, Some(15));
    let a = std::fs::read(full.join("model.safetensors")).unwrap();
    let b = std::fs::read(part.join("model.safetensors")).unwrap();
    assert!(a == b, "resumed weights differ from the uninterrupted run");
}

#[test]
fn doctor_catches_pad_pooling_and_batch_dependent_energies() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = EnergyModel::new(vs.root(), &tiny_config(&tok, Pooling::LastColumn));
    let dir = tmp.path().join("broken");
    store::save_model(&dir, &vs, &tiny_config(&tok, Pooling::LastColumn), &tok).unwrap();
    let broken = EnergyScorer::load(&dir, Device::Cpu).unwrap();
    let rows = separable_rows(12, 0);
    let seqs = doctor::probe_sequences(&broken, &rows, 12);
    let f = doctor::scorer_energy_fn(&broken);
    let inv = doctor::check_batch_invariance(&f, &seqs, 1e-4);
    assert!(!inv.pass, "{inv}");
    let pool = doctor::check_pooling(&broken, &seqs, 1e-4);
    assert!(!pool.pass, "{pool}");
    // a batch-dependent energy (normalised over the batch) is caught, a correct one is not
    let good = tmp.path().join("good");
    store::save_model(&good, &vs, &tiny_config(&tok, Pooling::Eos), &tok).unwrap();
    let good = EnergyScorer::load(&good, Device::Cpu).unwrap();
    let g = doctor::scorer_energy_fn(&good);
    assert!(doctor::check_batch_invariance(&g, &seqs, 1e-4).pass);
    let normalised = |s: &[Vec<i64>], side: Side| {
        let e = g(s, side);
        let m = e.iter().sum::<f32>() / e.len() as f32;
        e.iter().map(|x| x - m + 1.0).collect::<Vec<f32>>()
    };
    let c = doctor::check_batch_invariance(&normalised, &seqs, 1e-4);
    assert!(!c.pass, "{c}");
    assert!(doctor::check_pooling(&good, &seqs, 1e-4).pass);
}

/// A tiny random Llama policy over the test alphabet, saved to `dir` (an `--init` checkpoint).
fn llama_init(dir: &Path) {
    tch::manual_seed(11);
    let tok = tokenizer();
    let cfg = policy::LlamaConfig {
        vocab_size: tok.vocab_size(),
        n_ctx: 32,
        d_model: 16,
        n_layer: 2,
        n_head: 2,
        n_kv_head: 1,
        d_ff: 24,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        attention_bias: false,
        tie_word_embeddings: true,
    };
    policy::Policy::new(cfg, tok, Device::Cpu)
        .unwrap()
        .save(dir)
        .unwrap();
}

#[test]
fn top_blocks_train_alone_and_the_frozen_cache_changes_nothing() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_split(&data, 48, 16);
    let init = tmp.path().join("init");
    llama_init(&init);
    let inputs = TrainInputs {
        data: data.clone(),
        tokenizer: None,
        init: Some(init.clone()),
        negatives_from: None,
    };
    let run = |name: &str, cache: bool| {
        let out = tmp.path().join(name);
        std::fs::create_dir_all(&out).unwrap();
        let cfg = TrainConfig {
            train_blocks: Some(1),
            cache_frozen: cache,
            ..small_train_config(20)
        };
        let s = train(&cfg, &inputs, &out, Device::Cpu).unwrap();
        (
            s,
            Tensor::read_safetensors(out.join("model.safetensors")).unwrap(),
        )
    };
    let (cached, w_cached) = run("cached", true);
    let (plain, w_plain) = run("plain", false);
    let start: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(init.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    for (name, w) in &w_cached {
        let other = &w_plain.iter().find(|(n, _)| n == name).unwrap().1;
        let diff = (w - other).abs().max().double_value(&[]);
        assert!(
            diff < 1e-4,
            "{name}: cached vs recomputed frozen part differ by {diff}"
        );
        match start.get(name) {
            Some(s) if name.starts_with("model.layers.1.") || name.starts_with("model.norm.") => {
                assert!(!w.equal(s), "{name} is trained");
            }
            Some(s) => assert!(w.equal(s), "{name} is frozen"),
            None => assert!(name.starts_with("head."), "{name}"),
        }
    }
    assert!((cached.val.accuracy - plain.val.accuracy).abs() < 1e-9);
}
