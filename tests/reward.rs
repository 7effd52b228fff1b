//! `ember reward train|eval|score|doctor` end to end on the synthetic addition task, a killed
//! training run that resumes, and bad input that must give clear errors.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
#[path = "reward/tools.rs"]
mod tools;
use common::{ember_abs as ember, ok};
use tools::*;

/// Synthetic addition pairs and a character-level tokenizer over their text.
fn synth_data(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    let d = data.to_str().unwrap();
    ok(&ember(&[
        "synth",
        "--task",
        "add",
        "--out",
        d,
        "--pairs",
        "500",
        "--demos",
        "20",
        "--eval-prompts",
        "10",
    ]));
    let mut texts = Vec::new();
    for split in ["train", "val", "test"] {
        for r in datasets::read_pairs(data.join(format!("{split}.parquet"))).unwrap() {
            texts.extend([r.prompt, r.chosen, r.rejected]);
        }
    }
    let tok = dir.join("tokenizer.json");
    policy::Tokenizer::char_level(&texts)
        .unwrap()
        .save(&tok)
        .unwrap();
    (data, tok)
}

/// Synth tables and a tokenizer in `dir` (see `synth_data`), and the model's place `dir/rm`:
/// (data directory, model directory, [data, tokenizer, model] as strings for the CLI).
fn synth_setup(dir: &Path) -> (PathBuf, PathBuf, [String; 3]) {
    let (data, tok) = synth_data(dir);
    let rm = dir.join("rm");
    let strs = [&data, &tok, &rm].map(|p| p.to_str().unwrap().to_string());
    (data, rm, strs)
}

fn train_args<'a>(data: &'a str, tok: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "reward",
        "train",
        "--data",
        data,
        "--tokenizer",
        tok,
        "--out",
        out,
        "--steps",
        steps,
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
        "--eval-every",
        "20",
    ]
}

/// The validation pairs and the energies `reward train` wrote for them (`val_energies.parquet`,
/// one row per pair in table order: the synth pairs are never ties and all fit).
struct ValEnergies {
    pairs: Vec<datasets::PairRow>,
    e_chosen: Vec<f64>,
    e_rejected: Vec<f64>,
}

impl ValEnergies {
    fn read(data: &Path, model: &Path) -> Self {
        let pairs = datasets::read_pairs(data.join("val.parquet")).unwrap();
        let rows = datasets::table::read_parquet_rows(&model.join("val_energies.parquet")).unwrap();
        let prompts: Vec<&str> = rows.iter().map(|r| r["prompt"].as_str().unwrap()).collect();
        let want: Vec<&str> = pairs.iter().map(|p| p.prompt.as_str()).collect();
        assert_eq!(
            prompts, want,
            "one energy row per validation pair, in order"
        );
        let col =
            |name: &str| -> Vec<f64> { rows.iter().map(|r| r[name].as_f64().unwrap()).collect() };
        Self {
            e_chosen: col("e_chosen"),
            e_rejected: col("e_rejected"),
            pairs,
        }
    }

    /// Bounds on the share of gold-ordered pairs (gold scores differ) whose better answer has
    /// the lower energy, where a pair closer than `tol` may go either way (batches padded
    /// differently move energies in the last digits), and the number of such pairs.
    fn gold_accuracy_bounds(&self, tol: f64) -> (f64, f64, u64) {
        let (mut sure, mut maybe, mut n) = (0u64, 0u64, 0u64);
        for (i, p) in self.pairs.iter().enumerate() {
            let (gc, gr) = (p.gold_chosen.unwrap(), p.gold_rejected.unwrap());
            if gc == gr {
                continue;
            }
            let (better, worse) = if gc > gr {
                (self.e_chosen[i], self.e_rejected[i])
            } else {
                (self.e_rejected[i], self.e_chosen[i])
            };
            n += 1;
            sure += u64::from(worse - better > tol);
            maybe += u64::from(worse - better > -tol);
        }
        (sure as f64 / n as f64, maybe as f64 / n as f64, n)
    }

    /// Gold accuracy is the share of gold-ordered pairs whose better answer has the lower
    /// energy: `gold` (eval's report of the validation table) must agree with the energies
    /// training wrote for the same model and pairs.
    fn assert_gold_accuracy(&self, gold: &serde_json::Value) {
        let (lo, hi, pairs) = self.gold_accuracy_bounds(1e-4);
        assert_eq!(gold["pairs"].as_u64(), Some(pairs), "{gold}");
        let accuracy = gold["accuracy"].as_f64().unwrap();
        assert!(
            (lo..=hi).contains(&accuracy),
            "eval's gold accuracy {accuracy} vs {lo}..={hi} from val_energies.parquet"
        );
    }
}

#[test]
fn synth_train_eval_score_doctor() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, rm, [d, t, r]) = synth_setup(tmp.path());
    let (d, t, r) = (d.as_str(), t.as_str(), r.as_str());
    let stdout = ok(&ember(&train_args(d, t, r, "60")));
    assert!(stdout.contains("val accuracy"), "{stdout}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["metrics"]["steps_done"], 60);
    assert!(
        !rm.join("ckpt").exists(),
        "checkpoints are not part of the model directory"
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "train_config.json",
        "energy_stats.json",
        "metrics.jsonl",
    ] {
        assert!(
            manifest["artifacts"].get(f).is_some(),
            "{f} missing from the manifest"
        );
    }

    let eval_json = tmp.path().join("eval.json");
    let stdout = ok(&ember(&[
        "reward",
        "eval",
        "--model",
        r,
        "--data",
        d,
        "--out",
        eval_json.to_str().unwrap(),
    ]));
    assert!(stdout.contains("vs gold order"), "{stdout}");
    // The gold rows are broken down by what they ask of the model.
    assert!(stdout.contains("· right vs wrong"), "{stdout}");
    let ev: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&eval_json).unwrap()).unwrap();
    assert_eq!(ev.as_array().unwrap().len(), 2, "val and test");
    let val = ValEnergies::read(&data, &rm);
    val.assert_gold_accuracy(&ev[0]["gold"]);
    eval_compares_with_the_longer_answer(&ev[0], &stdout);
    eval_dir_holds_the_energies(r, &data, tmp.path());
    score_matches_training(r, tmp.path(), &val);

    let stdout = doctor_passes(r, &data.join("val.parquet"));
    assert!(
        stdout.contains("length baseline") || stdout.contains("heuristic"),
        "{stdout}"
    );
}

#[test]
fn head_nll_score_trains_and_passes_doctor() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, rm, [d, t, r]) = synth_setup(tmp.path());
    let (d, t, r) = (d.as_str(), t.as_str(), r.as_str());
    let args = [&train_args(d, t, r, "30")[..], &["--score", "head+nll"]].concat();
    ok(&ember(&args));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["score"], "head+nll");
    doctor_passes(r, &data.join("val.parquet"));
    let bad = ember(&[&train_args(d, t, r, "30")[..], &["--score", "nll"]].concat());
    assert_eq!(bad.status.code(), Some(2), "{}", common::text(&bad));
}

/// `kill -9` mid-run with `--negatives refine`, then the same command: it resumes from the
/// checkpoint (weights, optimizer, and the mined negatives' replay buffer) to the very weights
/// an uninterrupted run ends with.
#[test]
fn killed_training_resumes_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, rm, [d, t, r]) = synth_setup(tmp.path());
    let (d, t, r) = (d.as_str(), t.as_str(), r.as_str());
    let whole = tmp.path().join("whole");
    let args_r = mining_args(d, t, r, "150");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(&args_r)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = tmp.path().join("rm.partial/ckpt/state.json");
    let t0 = std::time::Instant::now();
    while !state.exists() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(state.exists(), "no checkpoint within 120 s");
    assert!(!rm.exists(), "a killed run must not look finished");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(saved["mined"]["buffer"].is_object(), "{saved}");
    ok(&ember(&args_r));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("manifest.json")).unwrap()).unwrap();
    let resumed = manifest["metrics"]["resumed_from"].as_u64().unwrap();
    assert!((5..150).contains(&resumed), "{}", manifest["metrics"]);
    assert_eq!(manifest["metrics"]["steps_done"], 150);

    ok(&ember(&mining_args(d, t, whole.to_str().unwrap(), "150")));
    let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(
        weights(&rm) == weights(&whole),
        "resumed from step {resumed}: weights differ from the uninterrupted run's"
    );
    let mined = |dir: &Path| {
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        let mut m = m["metrics"]["mined"].clone();
        m.as_object_mut().unwrap().remove("seconds");
        m
    };
    assert_eq!(mined(&rm), mined(&whole));
}

/// [`train_args`] with `--negatives refine`, one swap step per mined answer, 2 kept per pair.
fn mining_args<'a>(data: &'a str, tok: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    let mut a = train_args(data, tok, out, steps);
    a.extend(["--checkpoint-every", "5", "--negatives", "refine"]);
    a.extend(["--mine-steps", "1", "--replay", "2"]);
    a
}

/// `--negatives refine`: token swaps on the current model mine negatives that join the loss;
/// the manifest counts them, their cost, and how many gold says are really worse than the
/// chosen answer; bad mining settings are usage errors naming the key.
#[test]
fn mined_negatives_join_training_and_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, rm, [d, t, r]) = synth_setup(tmp.path());
    let mut args = train_args(&d, &t, &r, "40");
    args.extend([
        "--negatives",
        "refine",
        "--mine-every",
        "2",
        "--replay",
        "3",
    ]);
    ok(&ember(&args));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rm.join("manifest.json")).unwrap()).unwrap();
    let mined = &m["metrics"]["mined"];
    let n = |k: &str| mined[k].as_u64().unwrap_or_else(|| panic!("{k}: {mined}"));
    // 20 mining steps (every 2nd of 40) of one answer per pair, 16 pairs each.
    assert_eq!(n("refined"), 20 * 16, "{mined}");
    assert!(n("joined") > 0 && n("joined") <= n("refined"), "{mined}");
    assert!(n("used") >= n("joined"), "{mined}");
    assert!(
        mined["energy_fwd"].as_f64().unwrap() >= 3.0 * 20.0 * 16.0,
        "{mined}"
    );
    // Synth prompts have a gold reward: every joined negative is judged against the chosen.
    assert_eq!(n("gold_known"), n("joined"));
    assert_eq!(
        n("gold_worse") + n("gold_equal") + n("gold_better"),
        n("joined")
    );
    // Every training step's metrics count the mined negatives in its loss.
    let metrics = std::fs::read_to_string(rm.join("metrics.jsonl")).unwrap();
    let used: u64 = (metrics.lines())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["mined"].as_u64())
        .sum();
    assert_eq!(used, n("used"));
    let train_config = std::fs::read_to_string(rm.join("train_config.json")).unwrap();
    assert!(
        train_config.contains("\"negatives\": \"refine\""),
        "{train_config}"
    );

    // The report says what mining added and what gold says of it.
    let report = tmp.path().join("report");
    ok(&ember(&["report", "--out", report.to_str().unwrap(), &r]));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    let line = md
        .lines()
        .find(|l| l.starts_with("Mined negatives"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{} joined", n("joined"))) && line.contains("really worse"),
        "{md}"
    );

    let bad_dir = tmp.path().join("bad");
    let mut bad = train_args(&d, &t, bad_dir.to_str().unwrap(), "40");
    bad.extend(["--negatives", "refine", "--mine-candidates", "0"]);
    let bad = ember(&bad);
    assert_eq!(bad.status.code(), Some(2), "{}", common::text(&bad));
    assert!(
        common::text(&bad).contains("mine.candidates"),
        "{}",
        common::text(&bad)
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let m = missing.to_str().unwrap();
    let o = ember(&["reward", "train", "--data", m, "--tokenizer", m, "--out", m]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("train.parquet"));
    let o = ember(&[
        "reward", "train", "--data", m, "--loss", "magic", "--out", m,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("'magic'") && err.contains("--loss"), "{err}");
    // a model path that is not an energy model is the user's to fix
    let o = ember(&["reward", "eval", "--model", m, "--data", m]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an energy model directory"));
    // a scoring input with a bad row names the row
    let input = tmp.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\":\"1+1=\",\"answer\":\"2\"}\n{\"prompt\":\"1+2=\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("o.jsonl");
    let o = ember(&[
        "reward",
        "score",
        "--model",
        m,
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("row 2") && err.contains("answer"), "{err}");
    assert!(!out.exists());
}

/// `--loss nll -k K`: K answers sampled from the SFT policy per training prompt join each pair's
/// negatives, from the CLI and from a run config (where they come from the SFT stage).
#[test]
fn sampled_negatives_from_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::run_tiny_stages(dir, &["data", "tokenizer", "sft"]);
    let train = |extra: &[&str]| {
        let mut args = vec![
            "reward",
            "train",
            "--data",
            "run/01-data",
            "--init",
            "run/03-sft",
            "--steps",
            "3",
            "--batch",
            "4",
            "--out",
        ];
        args.extend(extra);
        common::ember(&args, dir)
    };
    common::ok(&train(&["rm", "--loss", "nll", "-k", "2"]));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rm/manifest.json")).unwrap())
            .unwrap();
    let rows = m["metrics"]["train_fit"]["rows"].as_u64().unwrap();
    assert_eq!(m["metrics"]["sampled_negatives"].as_u64(), Some(2 * rows));

    let bad = train(&["bad", "--loss", "log", "-k", "2"]);
    assert_eq!(bad.status.code(), Some(2), "{}", common::text(&bad));
    assert!(common::text(&bad).contains("nll"), "{}", common::text(&bad));

    let out = common::ok(&common::ember(
        &[
            "run",
            "run.toml",
            "--run-dir",
            "run",
            "--only",
            "reward",
            "--set",
            "reward.loss.kind=\"nll\"",
            "--set",
            "reward.sampled_negatives=2",
        ],
        dir,
    ));
    assert!(out.contains("sampled negatives"), "{out}");
}

/// `--negatives relaxed`: one continuous answer per pair per step joins the loss, counted with
/// its cost (2 descent steps of 3 forward equivalents, 1 for the landing point's energy).
#[test]
fn relaxed_negatives_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, [d, t, _]) = synth_setup(tmp.path());
    let relaxed = tmp.path().join("relaxed");
    let mut args = train_args(&d, &t, relaxed.to_str().unwrap(), "10");
    args.extend(["--negatives", "relaxed"]);
    ok(&ember(&args));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(relaxed.join("manifest.json")).unwrap())
            .unwrap();
    let mined = &m["metrics"]["mined"];
    assert_eq!(mined["refined"], 10 * 16, "{mined}");
    assert_eq!(mined["used"], 10 * 16, "{mined}");
    assert_eq!(mined["energy_fwd"].as_f64(), Some(160.0 * 7.0), "{mined}");
}

/// `ember logprob` takes JSON Lines as well as Parquet, and names the rows it cannot use.
#[test]
fn logprob_reads_jsonl_and_names_bad_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::run_tiny_stages(dir, &["data", "tokenizer", "sft"]);
    let rows = "{\"prompt\": \"12+7=\", \"answer\": \"19\"}\n{\"prompt\": \"sort 3 1 ->\", \"answer\": \"1 3\"}\n";
    std::fs::write(dir.join("rows.jsonl"), rows).unwrap();
    let args = [
        "logprob",
        "--policy",
        "run/03-sft",
        "--input",
        "rows.jsonl",
        "--out",
    ];
    let out = common::ok(&common::ember(&[&args[..], &["lp.parquet"]].concat(), dir));
    assert!(out.contains("2 rows"), "{out}");
    assert!(dir.join("lp.parquet").exists());

    std::fs::write(
        dir.join("bad.jsonl"),
        format!("{rows}{{\"prompt\": \"1+1=\"}}\n"),
    )
    .unwrap();
    let bad = common::ember(
        &[
            "logprob",
            "--policy",
            "run/03-sft",
            "--input",
            "bad.jsonl",
            "--out",
            "bad.parquet",
        ],
        dir,
    );
    common::assert_exit_2(&bad, "row 3");
    assert!(!dir.join("bad.parquet").exists());

    // A file name that is not Parquet is refused, not turned into a stage directory.
    let wrong = common::ember(&[&args[..], &["lp.jsonl"]].concat(), dir);
    common::assert_exit_2(&wrong, "--out lp.jsonl");
    assert!(!dir.join("lp.jsonl").exists());

    // bf16 autocast is a CUDA option: asked for on the CPU, it is a usage error.
    let bf16 = common::ember(
        &[&args[..], &["lp16.parquet", "--precision", "bf16"]].concat(),
        dir,
    );
    common::assert_exit_2(&bf16, "precision bf16");
    assert!(!dir.join("lp16.parquet").exists());
}
