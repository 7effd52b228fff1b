//! The synthetic task: label noise matches the annotator model, SFT demos are wrong at the
//! configured rate, evaluation prompts are held out, splits are disjoint by prompt.
use std::collections::HashSet;

use datasets::synth::{against_gold_probability, generate, SynthConfig, Task};
use datasets::table::read_sft_rows;
use datasets::{read_pairs, read_prompts, PairRow};

fn pairs(dir: &std::path::Path) -> Vec<(usize, PairRow)> {
    ["train", "val", "test"]
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            read_pairs(dir.join(format!("{s}.parquet")))
                .unwrap()
                .into_iter()
                .map(move |r| (i, r))
        })
        .collect()
}

/// Observed count of labels against gold vs the annotator model's expectation, within 4 σ.
fn check_noise(temperature: f64, flip_rate: f64, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        task: Task::Mix,
        pairs: 6000,
        demos: 10,
        eval_prompts: 10,
        label_temperature: temperature,
        flip_rate,
        seed,
        ..SynthConfig::default()
    };
    let stats = generate(&cfg, tmp.path()).unwrap();
    let (mut observed, mut expected, mut var, mut n) = (0.0, 0.0, 0.0, 0);
    for (_, r) in pairs(tmp.path()) {
        let (gc, gr) = (r.gold_chosen.unwrap(), r.gold_rejected.unwrap());
        if gc == gr {
            continue;
        }
        let p = against_gold_probability((gc - gr).abs(), temperature, flip_rate);
        observed += f64::from(u8::from(gc < gr));
        expected += p;
        var += p * (1.0 - p);
        n += 1;
    }
    assert!(n > 4000, "enough pairs with a gold gap ({n})");
    let z = (observed - expected) / var.sqrt().max(1e-9);
    assert!(z.abs() < 4.0, "T={temperature} flip={flip_rate}: observed {observed}, expected {expected:.1} (z = {z:.2})");
    assert_eq!(stats.pairs_generated, 6000);
}

#[test]
fn label_noise_rate_matches_temperature_and_flip_rate() {
    check_noise(0.0, 0.0, 1);
    check_noise(0.0, 0.2, 2);
    check_noise(0.2, 0.0, 3);
    check_noise(0.1, 0.05, 4);
}

#[test]
fn zero_noise_always_prefers_the_better_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        pairs: 2000,
        label_temperature: 0.0,
        flip_rate: 0.0,
        ..SynthConfig::default()
    };
    generate(&cfg, tmp.path()).unwrap();
    assert!(pairs(tmp.path())
        .iter()
        .all(|(_, r)| r.gold_chosen >= r.gold_rejected));
}

#[test]
fn demos_are_wrong_at_the_configured_rate_and_eval_prompts_are_held_out() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        task: Task::Add,
        pairs: 1000,
        demos: 4000,
        eval_prompts: 200,
        demo_error_rate: 0.25,
        ..SynthConfig::default()
    };
    let stats = generate(&cfg, tmp.path()).unwrap();
    let sft = read_sft_rows(tmp.path().join("sft.parquet")).unwrap();
    let wrong = sft.iter().filter(|d| !d.2).count() as f64;
    // Binomial(4000, 0.25): sd ≈ 27.4; 4 sd ≈ 110.
    assert!((wrong - 1000.0).abs() < 110.0, "{wrong} wrong demos");
    assert_eq!(stats.demos_wrong, wrong as usize);
    let seen: HashSet<String> = sft
        .iter()
        .map(|d| d.0.clone())
        .chain(pairs(tmp.path()).into_iter().map(|(_, r)| r.prompt))
        .collect();
    let eval = read_prompts(tmp.path().join("eval_prompts.parquet")).unwrap();
    assert_eq!(eval.len(), 200);
    assert!(
        eval.iter().all(|p| !seen.contains(p)),
        "eval prompts never seen in training data"
    );
    assert_eq!(eval.iter().collect::<HashSet<_>>().len(), 200);
    assert!(eval.iter().all(|p| p.ends_with('=')), "add task only");
}

#[test]
fn splits_are_disjoint_by_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        task: Task::Sort,
        pairs: 3000,
        split: [0.6, 0.2, 0.2],
        ..SynthConfig::default()
    };
    generate(&cfg, tmp.path()).unwrap();
    let mut split_of = std::collections::HashMap::new();
    for (s, r) in pairs(tmp.path()) {
        assert_eq!(
            *split_of.entry(r.prompt.clone()).or_insert(s),
            s,
            "{} in two splits",
            r.prompt
        );
    }
    assert_eq!(split_of.values().collect::<HashSet<_>>().len(), 3);
}
