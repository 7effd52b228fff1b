//! `ember rank` and `ember finetune` end to end on a tiny synthetic run: the candidate and
//! selected tables, the best-of-n table with its bounds, fine-tuning rounds with their held-out
//! metrics (rank-and-select and RLOO), and a fine-tuning run killed with SIGKILL that resumes
//! from its checkpoint and ends with the same policy as an uninterrupted run.
use std::fs;
use std::path::Path;

mod common;
use common::{ember, kill_after_second_checkpoint, ok, run_tiny_stages};

/// data, tokenizer, sft and reward of the tiny config in `dir/run`.
fn upstream(dir: &Path) {
    run_tiny_stages(dir, &["data", "tokenizer", "sft", "reward"]);
}

fn rounds(dir: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(dir.join("rounds.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn rank_writes_candidates_selection_and_the_best_of_n_table() {
    let tmp = tempfile::tempdir().unwrap();
    upstream(tmp.path());
    let out = ok(&ember(
        &[
            "rank",
            "--policy",
            "run/03-sft",
            "--reward",
            "run/04-reward",
            "--prompts",
            "run/01-data/eval_prompts.parquet",
            "-n",
            "4",
            "--max-new-tokens",
            "8",
            "--out",
            "rank",
        ],
        tmp.path(),
    ));
    for col in ["KL≤", "win≤", "KL emp", "gold"] {
        assert!(out.contains(col), "table lacks {col}:\n{out}");
    }
    let rank = tmp.path().join("rank");
    for f in [
        "candidates.parquet",
        "selected.parquet",
        "summary.json",
        "manifest.json",
    ] {
        assert!(rank.join(f).exists(), "{f}");
    }
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(rank.join("manifest.json")).unwrap()).unwrap();
    let rows = m["metrics"]["rows"].as_array().unwrap();
    let ns: Vec<u64> = rows.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, vec![1, 2, 4]);
    // The expected best-of-n energy cannot rise with n (it is a minimum over more samples).
    let e: Vec<f64> = rows.iter().map(|r| r["energy"].as_f64().unwrap()).collect();
    assert!(e.windows(2).all(|w| w[1] <= w[0] + 1e-9), "{e:?}");
    for r in rows {
        let n = r["n"].as_f64().unwrap();
        let bound = n.ln() - (n - 1.0) / n;
        assert!((r["kl_bound"].as_f64().unwrap() - bound).abs() < 1e-9);
    }
}

#[test]
fn finetune_rounds_log_held_out_metrics_for_rs_and_rloo() {
    let tmp = tempfile::tempdir().unwrap();
    upstream(tmp.path());
    let common = [
        "--policy",
        "run/03-sft",
        "--reward",
        "run/04-reward",
        "--prompts",
        "run/01-data/train.parquet",
        "--eval-prompts",
        "run/01-data/eval_prompts.parquet",
        "--rounds",
        "2",
        "--prompts-per-round",
        "8",
        "--max-new-tokens",
        "8",
        "--eval-samples",
        "2",
    ];
    for (algo, n) in [("rs", "2"), ("rloo", "3")] {
        let out = format!("ft-{algo}");
        let mut args = vec!["finetune", "--algo", algo, "-n", n, "--steps", "2", "--out"];
        args.push(&out);
        args.extend(common);
        if algo == "rs" {
            args.extend(["--mix-sft", "run/01-data"]);
        }
        ok(&ember(&args, tmp.path()));
        let dir = tmp.path().join(&out);
        let rows = rounds(&dir);
        assert_eq!(
            rows.len(),
            3,
            "round 0 (the start) and two rounds: {rows:?}"
        );
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r["round"].as_u64(), Some(i as u64));
            for k in [
                "sample_energy",
                "sample_gold",
                "greedy_energy",
                "kl_k1",
                "kl_k3",
            ] {
                assert!(r[k].is_number(), "{algo} round {i} lacks {k}: {r}");
            }
            // Round 0 evaluates the reference itself: both KL estimates are exactly zero. Every
            // later round has trained the policy away from it, and k3 > 0 wherever they differ.
            let kl = (r["kl_k1"].as_f64().unwrap(), r["kl_k3"].as_f64().unwrap());
            if i == 0 {
                assert_eq!(kl, (0.0, 0.0), "{algo}: round 0 is the reference: {r}");
            } else {
                assert!(kl.1 > 0.0, "{algo} round {i}: the policy did not move: {r}");
            }
        }
        assert!(dir.join("policy/model.safetensors").exists());
        if algo == "rs" {
            assert!(dir.join("round-1/kept.parquet").exists());
        }
    }
    let bad = ember(
        &[
            "finetune", "--algo", "rloo", "-n", "1", "--out", "bad", common[0], common[1],
            common[2], common[3], common[4], common[5],
        ],
        tmp.path(),
    );
    assert_eq!(
        bad.status.code(),
        Some(2),
        "rloo with n = 1 is a usage error"
    );
}

#[test]
fn killed_finetune_resumes_and_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    upstream(tmp.path());
    let args = |out: &str| -> Vec<String> {
        [
            "finetune",
            "--policy",
            "run/03-sft",
            "--reward",
            "run/04-reward",
            "--prompts",
            "run/01-data/train.parquet",
            "--eval-prompts",
            "run/01-data/eval_prompts.parquet",
            "--rounds",
            "2",
            "-n",
            "2",
            "--prompts-per-round",
            "16",
            "--steps",
            "30",
            "--batch",
            "8",
            "--checkpoint-every",
            "5",
            "--max-new-tokens",
            "8",
            "--eval-samples",
            "2",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = args("whole");
    ok(&ember(
        &whole.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    ));

    let killed = args("killed");
    kill_after_second_checkpoint(
        &killed,
        tmp.path(),
        &tmp.path().join("killed.partial/checkpoint"),
    );
    assert!(!tmp.path().join("killed/manifest.json").exists());

    let out = ok(&ember(
        &killed.iter().map(String::as_str).collect::<Vec<_>>(),
        tmp.path(),
    ));
    assert!(out.contains("resuming from checkpoint"), "{out}");
    let model = |d: &str| fs::read(tmp.path().join(d).join("policy/model.safetensors")).unwrap();
    assert!(
        model("killed") == model("whole"),
        "the resumed policy differs from the uninterrupted one"
    );
    let strip = |d: &str| -> Vec<serde_json::Value> {
        rounds(&tmp.path().join(d))
            .into_iter()
            .map(|mut r| {
                let o = r.as_object_mut().unwrap();
                o.retain(|k, _| !k.ends_with("seconds"));
                r
            })
            .collect()
    };
    assert_eq!(strip("killed"), strip("whole"));
}
