//! `ember refine` and `ember compare` end to end on the synthetic addition task with a tiny
//! untrained policy and a briefly trained energy model: the outputs exist with their columns,
//! discrete re-scoring agrees with `ember reward score`, budgets are respected, and bad flags
//! are usage errors.
use std::path::{Path, PathBuf};

use polars::prelude::*;

mod common;
use common::{ember_abs as ember, ok};

fn read(path: &Path) -> DataFrame {
    datasets::table::read_parquet(path).unwrap()
}

fn f64s(df: &DataFrame, name: &str) -> Vec<f64> {
    let s = df.column(name).unwrap().cast(&DataType::Float64).unwrap();
    s.f64().unwrap().into_no_null_iter().collect()
}

fn strs(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.expect("no nulls").to_string())
        .collect()
}

/// Synth data, a char-level tokenizer, a tiny random policy and a briefly trained energy model
/// sharing it: (eval prompts, policy dir, reward dir).
fn models(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    ok(&ember(&[
        "synth",
        "--task",
        "add",
        "--out",
        d,
        "--pairs",
        "300",
        "--demos",
        "20",
        "--eval-prompts",
        "8",
    ]));
    let mut texts = Vec::new();
    for r in datasets::read_pairs(data.join("train.parquet")).unwrap() {
        texts.extend([r.prompt, r.chosen, r.rejected]);
    }
    let tok = policy::Tokenizer::char_level(&texts).unwrap();
    let tok_path = dir.join("tokenizer.json");
    tok.save(&tok_path).unwrap();
    tch::manual_seed(0);
    let cfg = policy::GptConfig {
        vocab_size: tok.vocab_size(),
        n_ctx: 64,
        d_model: 32,
        n_layer: 1,
        n_head: 2,
        ..policy::GptConfig::default()
    };
    let pol = dir.join("policy");
    policy::Policy::new(cfg, tok, tch::Device::Cpu)
        .unwrap()
        .save(&pol)
        .unwrap();
    let rm = dir.join("rm");
    ok(&ember(&[
        "reward",
        "train",
        "--data",
        d,
        "--tokenizer",
        tok_path.to_str().unwrap(),
        "--out",
        rm.to_str().unwrap(),
        "--steps",
        "30",
        "--batch",
        "16",
        "--lr",
        "2e-3",
        "--d-model",
        "32",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        // The likelihood term makes refinement differentiate through the trunk's LM head too.
        "--score",
        "head+nll",
    ]));
    (data.join("eval_prompts.parquet"), pol, rm)
}

#[test]
fn refine_and_compare_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (prompts, pol, rm) = models(tmp.path());
    let on = Models {
        prompts: prompts.to_str().unwrap(),
        policy: pol.to_str().unwrap(),
        reward: rm.to_str().unwrap(),
    };
    let refined = refine_is_deterministic_and_never_worse(tmp.path(), &on);
    swaps_lower_the_energy_and_trace_the_gold(tmp.path(), &on);
    finals_score_as_reward_score_says(tmp.path(), &on, &refined);
    compare_respects_budgets_and_reports(tmp.path(), &on);
}

/// The three inputs of refine and compare.
struct Models<'a> {
    prompts: &'a str,
    policy: &'a str,
    reward: &'a str,
}

impl<'a> Models<'a> {
    /// `cmd --policy … --reward … --prompts … --out OUT` followed by `extra`.
    fn args(&self, cmd: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            cmd,
            "--policy",
            self.policy,
            "--reward",
            self.reward,
            "--prompts",
            self.prompts,
            "--out",
            out,
        ];
        args.extend(extra);
        args
    }
}

/// `ember refine` writes its columns, never ends worse than it started, logs one trace row per
/// step, and gives the same answers for the same seed. Returns refined.parquet.
fn refine_is_deterministic_and_never_worse(tmp: &Path, on: &Models) -> DataFrame {
    let out = tmp.join("refined");
    let extra = ["--steps", "5", "--max-prompts", "6"];
    let stdout = ok(&ember(&on.args("refine", out.to_str().unwrap(), &extra)));
    assert!(stdout.contains("refine: 6 prompts"), "{stdout}");
    let refined = read(&out.join("refined.parquet"));
    assert_eq!(refined.height(), 6);
    for c in [
        "prompt",
        "start_answer",
        "final_answer",
        "start_energy",
        "best_energy",
        "steps",
        "gold",
        "final_logprob",
    ] {
        assert!(refined.column(c).is_ok(), "refined.parquet lacks {c}");
    }
    let (start, best) = (
        f64s(&refined, "start_energy"),
        f64s(&refined, "best_energy"),
    );
    assert!(
        start.iter().zip(&best).all(|(s, b)| b <= s),
        "best must never be worse than start"
    );
    assert!(f64s(&refined, "gold")
        .iter()
        .all(|g| (0.0..=1.0).contains(g)));
    let traces = read(&out.join("traces.parquet"));
    assert_eq!(
        traces.height() as f64,
        f64s(&refined, "steps").iter().sum::<f64>()
    );
    assert!(out.join("manifest.json").exists());
    // Same seed, same result.
    let again = tmp.join("again");
    ok(&ember(&on.args("refine", again.to_str().unwrap(), &extra)));
    assert_eq!(
        strs(&read(&again.join("refined.parquet")), "final_answer"),
        strs(&refined, "final_answer")
    );
    refined
}

/// `--method swap`: discrete answers only, never worse than the start, one trace row per step
/// with the gold of the best answer so far, and the step diagnostics in the manifest.
fn swaps_lower_the_energy_and_trace_the_gold(tmp: &Path, on: &Models) {
    let out = tmp.join("swapped");
    let extra = ["--method", "swap", "--steps", "4", "--max-prompts", "6"];
    ok(&ember(&on.args("refine", out.to_str().unwrap(), &extra)));
    let refined = read(&out.join("refined.parquet"));
    let (start, best) = (
        f64s(&refined, "start_energy"),
        f64s(&refined, "best_energy"),
    );
    assert!(start.iter().zip(&best).all(|(s, b)| b <= s));
    let traces = read(&out.join("traces.parquet"));
    let steps: f64 = f64s(&refined, "steps").iter().sum();
    assert_eq!(traces.height() as f64, steps);
    let gold = f64s(&traces, "best_gold");
    assert!(gold.iter().all(|g| (0.0..=1.0).contains(g)), "{gold:?}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let diag = &manifest["metrics"]["step_diagnostics"];
    assert_eq!(diag["steps_total"].as_f64(), Some(steps), "{diag}");
    let share = diag["steps_lowering_share"].as_f64().unwrap_or(0.0);
    assert!((0.0..=1.0).contains(&share), "{diag}");
}

/// The energies of the final answers are exactly what `ember reward score` says.
fn finals_score_as_reward_score_says(tmp: &Path, on: &Models, refined: &DataFrame) {
    let jsonl: String = strs(refined, "prompt")
        .iter()
        .zip(strs(refined, "final_answer"))
        .map(|(p, a)| format!("{}\n", serde_json::json!({"prompt": p, "answer": a})))
        .collect();
    let input = tmp.join("finals.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let scored = tmp.join("scored.jsonl");
    ok(&ember(&[
        "reward",
        "score",
        "--model",
        on.reward,
        "--input",
        input.to_str().unwrap(),
        "--out",
        scored.to_str().unwrap(),
    ]));
    let energies: Vec<f64> = std::fs::read_to_string(&scored)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["energy"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let best = f64s(refined, "best_energy");
    for (e, b) in energies.iter().zip(&best) {
        assert!((e - b).abs() < 1e-4, "reward score {e} vs refine {b}");
    }
}

/// `ember compare`: one row per prompt × method × budget × seed within its budget, CIs that
/// hold their mean, a report with its sections and plots (when a font exists), and a zero
/// budget refused as a usage error.
fn compare_respects_budgets_and_reports(tmp: &Path, on: &Models) {
    let cmp = tmp.join("compare");
    let c = cmp.to_str().unwrap();
    let extra = ["--budgets", "1,2,9", "--seeds", "2", "--max-prompts", "4"];
    let stdout = ok(&ember(&on.args("compare", c, &extra)));
    assert!(stdout.contains("| budget |"), "{stdout}");
    let rows = read(&cmp.join("compare.parquet"));
    assert_eq!(rows.height(), 4 * 3 * 3 * 2);
    let budget = f64s(&rows, "budget");
    assert!(f64s(&rows, "energy_fwd")
        .iter()
        .zip(&budget)
        .all(|(e, b)| e <= b));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cmp.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["cells"].as_array().unwrap().len(), 9);
    for cell in json["cells"].as_array().unwrap() {
        let e = &cell["energy"];
        assert!(e["lo"].as_f64().unwrap() <= e["mean"].as_f64().unwrap());
        assert!(e["mean"].as_f64().unwrap() <= e["hi"].as_f64().unwrap());
    }
    let report = std::fs::read_to_string(cmp.join("report.md")).unwrap();
    for s in [
        "best-of-n",
        "refine",
        "hybrid",
        "95% CI",
        "## Who is ahead",
        "## Reading",
        "**Refinement vs best-of-N on gold:**",
        "**Refinement vs best-of-N on energy:**",
    ] {
        assert!(report.contains(s), "report lacks {s}:\n{report}");
    }
    // Plots need a TrueType font; without one the report says so and the tables are written.
    let font = ember::plot::ensure_font().is_ok();
    assert_eq!(!font, report.contains("_Plots skipped:"), "{report}");
    for plot in ["energy_vs_compute", "gold_vs_compute", "gold_vs_sqrt_kl"] {
        for ext in ["png", "svg"] {
            let file = format!("{plot}.{ext}");
            assert_eq!(
                cmp.join(&file).exists(),
                font,
                "{file} (font found: {font})"
            );
        }
    }
    let bad = ember(&on.args("compare", c, &["--budgets", "0,4"]));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("budgets"), "{stderr}");
}
