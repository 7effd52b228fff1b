//! Corrupt and mismatched models, errors, diverged training and failed stages (cases 2 to 5 and 9).
use super::*;

/// Writes NaN into the first element of the first float tensor of `dir/model.safetensors`.
fn poison(dir: &Path) {
    let path = dir.join("model.safetensors");
    let mut tensors = tch::Tensor::read_safetensors(&path).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let t = &mut tensors[0].1;
    tch::no_grad(|| {
        let _ = t.view(-1).get(0).fill_(f64::NAN);
    });
    tch::Tensor::write_safetensors(&tensors, &path).unwrap();
}

/// `config.json` of `dir` with `key` set to `value`.
fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    fn set(v: &mut serde_json::Value, key: &str, value: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(map) => {
                if map.contains_key(key) {
                    map.insert(key.to_string(), value.clone());
                    return true;
                }
                map.values_mut().any(|c| set(c, key, value))
            }
            _ => false,
        }
    }
    assert!(set(&mut cfg, key, &value), "no {key} in {}", path.display());
    fs::write(&path, cfg.to_string()).unwrap();
}

fn score_args(model: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "reward",
        "score",
        "--model",
        model,
        "--input",
        "rows.jsonl",
        "--out",
        "scored.parquet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn rows_file(d: &Path) {
    fs::write(
        d.join("rows.jsonl"),
        "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n",
    )
    .unwrap();
}

#[test]
fn corrupt_weights_went_unnoticed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rows_file(d);
    copy_dir(&fx("04-reward"), &d.join("rm"));
    poison(&d.join("rm"));
    let run = |a: Vec<String>, code: i32, words: &[&str]| refused(d, &a, code, words);
    run(
        score_args("rm", &[]),
        2,
        &[
            "model.safetensors does not match its checksum",
            "--no-verify",
        ],
    );
    run(
        score_args("rm", &["--no-verify"]),
        2,
        &["non-finite values (NaN or infinite)"],
    );
    let t = run(
        vec![
            "reward".into(),
            "doctor".into(),
            "--model".into(),
            "rm".into(),
            "--data".into(),
            fx("01-data/val.parquet"),
            "--no-verify".into(),
        ],
        1,
        &["FAIL  weights load"],
    );
    assert!(!t.contains("PASS  batch/padding"), "{t}");
    copy_dir(&fx("03-sft"), &d.join("pol"));
    poison(&d.join("pol"));
    let sample = [
        "sample",
        "--policy",
        "pol",
        "--prompts",
        &fx("01-data/eval_prompts.parquet"),
        "--max-new-tokens",
        "4",
        "--out",
        "s.parquet",
    ];
    refused(d, &sample, 2, &["does not match its checksum"]);
    let sample = [&sample[..], &["--no-verify"]].concat();
    refused(d, &sample, 2, &["non-finite values"]);
    let rank = [
        "rank",
        "--policy",
        "pol",
        "--reward",
        &fx("04-reward"),
        "--prompts",
        &fx("01-data/eval_prompts.parquet"),
        "-n",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        "ranked",
        "--no-verify",
    ];
    refused(d, &rank, 2, &["non-finite values"]);
}

#[test]
fn a_config_that_disagrees_with_its_weights_loaded_silently_or_printed_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rows_file(d);
    let cases: [(&str, &str, serde_json::Value, &str); 4] = [
        (
            "layers",
            "n_layer",
            2.into(),
            "tensors missing from the file",
        ),
        ("width", "d_model", 48.into(), "tensors of another shape"),
        ("vocab", "vocab_size", 7.into(), "tensors of another shape"),
        ("heads", "n_head", 3.into(), "is not a multiple of n_head 3"),
    ];
    for (name, key, value, words) in cases {
        let rm = d.join(format!("rm-{name}"));
        copy_dir(&fx("04-reward"), &rm);
        edit_config(&rm, key, value);
        let rm = rm.display().to_string();
        let a = score_args(&rm, &["--no-verify"]);
        refused(d, &a, 2, &[words]);
        let a = score_args(&rm, &[]);
        refused(d, &a, 2, &["config.json does not match its checksum"]);
    }
    let pol = d.join("pol");
    copy_dir(&fx("03-sft"), &pol);
    edit_config(&pol, "n_layer", 2.into());
    let lp = [
        "logprob",
        "--policy",
        "pol",
        "--input",
        "rows.jsonl",
        "--out",
        "lp.parquet",
        "--no-verify",
    ];
    refused(d, &lp, 2, &["tensors missing from the file: h.1."]);
}

#[test]
fn weights_that_are_not_a_safetensors_file_or_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rows_file(d);
    copy_dir(&fx("04-reward"), &d.join("rm"));
    fs::write(d.join("rm/model.safetensors"), b"\x01\x00").unwrap();
    let a = score_args("rm", &["--no-verify"]);
    refused(d, &a, 2, &["not a safetensors file"]);
    fs::remove_file(d.join("rm/model.safetensors")).unwrap();
    refused(d, &a, 2, &["model.safetensors"]);
    let a = score_args(&fx("01-data"), &[]);
    refused(d, &a, 2, &["not an energy model directory"]);
}

#[test]
fn a_changed_input_table_is_caught_by_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_dir(&fx("01-data"), &d.join("data"));
    fs::write(d.join("data/train.parquet"), b"PAR1").unwrap();
    let sft = [
        "sft",
        "--data",
        "data",
        "--tokenizer",
        &fx("02-tokenizer"),
        "--steps",
        "1",
        "--out",
        "pol",
    ];
    refused(
        d,
        &sft,
        2,
        &["input data: train.parquet does not match its checksum"],
    );
}

// ---- 9. errors ------------------------------------------------------------------------------

#[test]
fn error_chains_were_duplicated_and_debug_formatted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    rows_file(d);
    copy_dir(&fx("04-reward"), &d.join("rm"));
    fs::remove_file(d.join("rm/model.safetensors")).unwrap();
    let a = score_args("rm", &["--no-verify"]);
    let t = refused(d, &a, 2, &["No such file or directory"]);
    let lines: Vec<&str> = t.lines().filter(|l| l.contains("No such file")).collect();
    assert_eq!(lines.len(), 1, "the cause is printed once: {t}");
    let missing = [
        "ingest",
        "--format",
        "hh-rlhf",
        "nothing.jsonl",
        "--out",
        "o",
    ];
    let t = refused(d, &missing, 2, &["nothing.jsonl"]);
    assert!(t.lines().all(|l| l.len() < 400), "{t}");
}

// ---- 3 and 4. diverged training, failed stages -------------------------------------------

#[test]
fn reward_train_shipped_a_diverged_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let train = [
        "reward",
        "train",
        "--data",
        &fx("01-data"),
        "--init",
        &fx("03-sft"),
        "--steps",
        "12",
        "--batch",
        "8",
        "--lr",
        "1e6",
        "--out",
        "rm",
    ];
    let t = refused(
        d,
        &train,
        1,
        &["(more than half)", "no checkpoint was written"],
    );
    assert!(!t.contains("is kept"), "{t}");
    assert!(
        !d.join("rm.partial").exists(),
        "nothing to resume from, so nothing is kept"
    );
}

#[test]
fn a_failed_rank_committed_its_output_and_a_load_error_left_a_partial() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_dir(&fx("04-reward"), &d.join("rm"));
    poison(&d.join("rm"));
    let rank = |reward: &str| {
        [
            "rank",
            "--policy",
            &fx("03-sft"),
            "--reward",
            reward,
            "--prompts",
            &fx("01-data/eval_prompts.parquet"),
            "-n",
            "2",
            "--max-new-tokens",
            "4",
            "--out",
            "ranked",
            "--no-verify",
        ]
        .map(String::from)
    };
    let a = rank("rm");
    refused(d, &a, 2, &["non-finite values"]);
    let a = rank("missing-model");
    refused(d, &a, 2, &["missing-model"]);
}
