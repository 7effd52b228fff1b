//! What Ember guarantees a user, tried as a hostile but realistic user would: each case runs the
//! real binary on bad input and asserts the exit code, the key words of the message, that
//! nothing panicked or printed a libtorch backtrace, and that no file of the case's directory
//! (or of the shared fixtures) was lost or changed. Every defect of issue 15 has a case here,
//! named after it.
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

mod common;
use common::{run_tiny_stages, text, EMBER};

/// The upstream stages every case may read, built once: `run/01-data`, `02-tokenizer`,
/// `03-sft`, `04-reward`.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        run_tiny_stages(dir.path(), &["data", "tokenizer", "sft", "reward"]);
        dir
    })
    .path()
}

fn fx(rel: &str) -> String {
    fixtures().join("run").join(rel).display().to_string()
}

/// sha256 of every file below `dir` by relative path (symlinks as their targets' names).
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                stack.push(path);
            } else if meta.is_symlink() {
                out.insert(rel, fs::read_link(&path).unwrap().display().to_string());
            } else {
                out.insert(rel, hex::encode(Sha256::digest(fs::read(&path).unwrap())));
            }
        }
    }
    out
}

fn ember_in(dir: &Path, args: &[String]) -> Output {
    Command::new(EMBER)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("ember runs")
}

/// Runs `args` in `dir` and checks the guarantees every refusal keeps: exit `code`, each of
/// `words` in the output, no panic or backtrace, and not one file of `dir` or of the
/// fixtures changed.
fn refused(dir: &Path, args: &[impl AsRef<str>], code: i32, words: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let (before, fx_before) = (tree(dir), tree(fixtures()));
    let o = ember_in(dir, &args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(code), "ember {args:?}:\n{t}");
    for w in words {
        assert!(
            t.contains(w),
            "{w:?} not in the output of ember {args:?}:\n{t}"
        );
    }
    for never in [
        "panicked",
        "RUST_BACKTRACE",
        "Exception raised from",
        "frame #",
        "Os {",
    ] {
        assert!(
            !t.contains(never),
            "{never:?} in the output of ember {args:?}:\n{t}"
        );
    }
    assert_eq!(
        tree(dir),
        before,
        "ember {args:?} changed files of its directory"
    );
    assert_eq!(
        tree(fixtures()),
        fx_before,
        "ember {args:?} changed the fixtures"
    );
    t
}

fn copy_dir(from: &str, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

const SYNTH: [&str; 8] = [
    "synth",
    "--task",
    "add",
    "--pairs",
    "40",
    "--demos",
    "8",
    "--eval-prompts",
];

fn synth_to(out: &str) -> Vec<&str> {
    let mut args = SYNTH.to_vec();
    args.extend(["4", "--out", out]);
    args
}

fn hh_jsonl(path: &Path) {
    let line = |i: usize| {
        serde_json::json!({
            "chosen": format!("\n\nHuman: q{i}\n\nAssistant: good"),
            "rejected": format!("\n\nHuman: q{i}\n\nAssistant: bad"),
        })
        .to_string()
    };
    let lines: Vec<String> = (0..30).map(line).collect();
    fs::write(path, lines.join("\n") + "\n").unwrap();
}

// ---- 1. `--out` never destroys what it points at ------------------------------------------

#[test]
fn out_dot_would_delete_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("thesis.tex"), "years of work").unwrap();
    let d = dir.path();
    refused(d, &synth_to("."), 2, &["is the working directory"]);
    refused(
        d,
        &[&synth_to(".")[..], &["--force"]].concat(),
        2,
        &["working directory"],
    );
    refused(d, &synth_to("./"), 2, &["is the working directory"]);
    refused(d, &synth_to(".."), 2, &["above the working directory"]);
    refused(
        d,
        &synth_to("sub/../.."),
        2,
        &["above the working directory"],
    );
    let abs = d.display().to_string();
    refused(d, &synth_to(&abs), 2, &["is the working directory"]);
}

#[test]
fn ingest_out_replaced_the_directory_holding_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("d")).unwrap();
    hh_jsonl(&d.join("d/data.jsonl"));
    let ingest = |out: &str, force: bool| {
        let mut a = vec![
            "ingest",
            "--format",
            "hh-rlhf",
            "d/data.jsonl",
            "--out",
            out,
        ];
        if force {
            a.push("--force");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>, words: &[&str]| {
        refused(d, &a, 2, words);
    };
    run(
        ingest("d", false),
        &["--out d holds an input of this command"],
    );
    run(ingest("d", true), &["holds an input"]);
    run(
        ingest("d/data.jsonl", true),
        &["is an input of this command"],
    );
    run(ingest(".", true), &["working directory"]);
}

#[test]
fn synth_sample_and_tokenizer_replaced_a_foreign_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("mine")).unwrap();
    fs::write(d.join("mine/notes.txt"), "precious").unwrap();
    let t = refused(
        d,
        &synth_to("mine"),
        2,
        &["not an Ember output (no manifest.json)"],
    );
    assert!(
        t.contains("hint: choose another --out, or pass --force"),
        "{t}"
    );
    let sample = [
        "sample",
        "--policy",
        &fx("03-sft"),
        "--prompts",
        &fx("01-data/eval_prompts.parquet"),
        "-n",
        "1",
        "--max-new-tokens",
        "4",
        "--out",
        "mine",
    ];
    refused(d, &sample, 2, &["not an Ember output"]);
    let tok = [
        "tokenizer",
        "train",
        "--data",
        &fx("01-data"),
        "--out",
        "mine",
    ];
    refused(d, &tok, 2, &["not an Ember output"]);
    fs::write(d.join("file"), "x").unwrap();
    refused(d, &synth_to("file"), 2, &["exists and is not a directory"]);
    fs::create_dir_all(d.join("out.partial")).unwrap();
    fs::write(d.join("out.partial/keep.txt"), "x").unwrap();
    refused(
        d,
        &synth_to("out"),
        2,
        &["out.partial exists and was not left by an ember command"],
    );
}

#[test]
fn an_output_of_another_stage_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_dir(&fx("01-data"), &d.join("data"));
    hh_jsonl(&d.join("in.jsonl"));
    let ingest = ["ingest", "--format", "hh-rlhf", "in.jsonl", "--out", "data"];
    refused(
        d,
        &ingest,
        2,
        &["an `ember synth` output, not `ember ingest`"],
    );
    let tok = [
        "tokenizer",
        "train",
        "--data",
        &fx("01-data"),
        "--out",
        "data",
    ];
    refused(
        d,
        &tok,
        2,
        &["an `ember synth` output, not `ember tokenizer`"],
    );
}

#[test]
fn force_replaces_a_foreign_directory_and_a_rerun_replaces_its_own_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("mine")).unwrap();
    fs::write(d.join("mine/notes.txt"), "old").unwrap();
    let args: Vec<String> = [&synth_to("mine")[..], &["--force"]]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let o = ember_in(d, &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!d.join("mine/notes.txt").exists() && d.join("mine/manifest.json").exists());
    let again: Vec<String> = synth_to("mine").iter().map(|s| s.to_string()).collect();
    let o = ember_in(d, &again);
    assert!(o.status.success(), "{}", text(&o));
    let names: Vec<String> = fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["mine"], "no .partial, .lock or .replaced left");
}

#[test]
fn file_outputs_never_overwrite_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rows: String = (0..3)
        .map(|i| format!("{{\"prompt\": \"{i}+1=\", \"answer\": \"{}\"}}\n", i + 1))
        .collect();
    fs::write(d.join("rows.jsonl"), rows).unwrap();
    let score = |out: &str| {
        vec![
            "reward".to_string(),
            "score".into(),
            "--model".into(),
            fx("04-reward"),
            "--input".into(),
            "rows.jsonl".into(),
            "--out".into(),
            out.into(),
        ]
    };
    let run = |a: Vec<String>, words: &[&str]| {
        refused(d, &a, 2, words);
    };
    run(score("rows.jsonl"), &["is an input of this command"]);
    run(score("."), &["working directory"]);
    let eval = [
        "reward",
        "eval",
        "--model",
        &fx("04-reward"),
        "--data",
        &fx("01-data"),
        "--out",
        &fx("01-data/val.parquet"),
    ];
    refused(d, &eval, 2, &["an input directory of this command"]);
    let logprob = [
        "logprob",
        "--policy",
        &fx("03-sft"),
        "--input",
        "rows.jsonl",
        "--out",
        &fx("03-sft"),
    ];
    refused(d, &logprob, 2, &["is an input of this command"]);
    let into_model = format!("{}/lp.parquet", fx("03-sft"));
    let logprob = [
        "logprob",
        "--policy",
        &fx("03-sft"),
        "--input",
        "rows.jsonl",
        "--out",
        &into_model,
    ];
    refused(d, &logprob, 2, &["an input directory of this command"]);
}

// ---- 8. one writer per output ---------------------------------------------------------------

#[test]
fn concurrent_writers_to_one_out_got_a_misleading_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lock = fs::File::create(d.join("out.lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns, standing in for another ember process.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    fs::write(d.join("out.lock"), "4242").unwrap();
    refused(
        d,
        &synth_to("out"),
        1,
        &["being written by another ember process (pid 4242)"],
    );
    drop(lock);
    let args: Vec<String> = synth_to("out").iter().map(|s| s.to_string()).collect();
    let o = ember_in(d, &args);
    assert!(
        o.status.success(),
        "a stale lock file is taken over: {}",
        text(&o)
    );
    assert!(!d.join("out.lock").exists());
}

#[test]
fn the_run_lock_is_released_and_removed_after_a_run() {
    assert!(fixtures().join("run/01-data").exists());
    assert!(
        !fixtures().join("run/.lock").exists(),
        ".lock stayed after a successful run"
    );
}

// ---- 2 and 5. corrupt and mismatched models ------------------------------------------------

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

// ---- 7. signals ---------------------------------------------------------------------------

/// Starts `ember ARGS` in `dir`, waits for `marker` to appear or change (training under way),
/// sends `signal`, and returns the finished process's output.
fn signal_when(dir: &Path, args: &[impl AsRef<str>], marker: &Path, signal: i32) -> Output {
    let child = Command::new(EMBER)
        .args(args.iter().map(AsRef::as_ref))
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ember starts");
    let size = || fs::metadata(marker).map(|m| m.len()).ok();
    let before = size();
    let clock = std::time::Instant::now();
    while size() == before && clock.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
    child.wait_with_output().unwrap()
}

#[test]
fn sigint_and_sigterm_killed_the_process_without_a_word_and_left_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sft = |out: &'static str| {
        [
            "sft",
            "--data",
            &fx("01-data"),
            "--tokenizer",
            &fx("02-tokenizer"),
            "--steps",
            "150",
            "--batch",
            "8",
            "--out",
            out,
        ]
        .map(String::from)
    };
    let a = sft("pol");
    let metrics = d.join("pol.partial/metrics.jsonl");
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let o = signal_when(d, &a, &metrics, signal);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(code), "{t}");
        assert!(
            t.contains("interrupted; run the same command to resume"),
            "{t}"
        );
        assert!(t.contains("the checkpoint of step"), "{t}");
        assert!(!t.contains("panicked"), "{t}");
        assert!(!d.join("pol.lock").exists() && !d.join("pol").exists());
        assert!(d.join("pol.partial/checkpoint/state.json").exists());
    }
    let o = Command::new(EMBER)
        .args(&a)
        .current_dir(d)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("resuming from checkpoint"),
        "{}",
        text(&o)
    );
    let whole = sft("whole");
    let o = ember_in(d, &whole);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read(d.join("pol/model.safetensors")).unwrap(),
        fs::read(d.join("whole/model.safetensors")).unwrap(),
        "an interrupted and resumed run ends with the weights of an uninterrupted one"
    );
}

// ---- 6. input hygiene, run configs and score inputs, case by case -------------------------

/// Writes `files` (name, bytes) into `d`.
fn write_files(d: &Path, files: &[(&str, &[u8])]) {
    for (name, bytes) in files {
        fs::write(d.join(name), bytes).unwrap();
    }
}

#[test]
fn ingest_inputs_that_cannot_be_read_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(
        d,
        &[
            ("empty.jsonl", b""),
            ("ragged.csv", b"prompt,chosen,rejected\np,a,b\np,a,b,c\n"),
            ("garbage.jsonl", b"\x00\x01\x02 not json\n\xff\xfe\n"),
            ("notes.txt", b"hello"),
            ("object.json", b"{\"prompt\": \"p\"}"),
            (
                "cut.jsonl.gz",
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x01\x10",
            ),
            (
                "pairs.jsonl",
                b"{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n",
            ),
        ],
    );
    let cases: [(&[&str], &str); 12] = [
        (&["empty.jsonl", "--strict"], "empty.jsonl: no rows to ingest"),
        (&["ragged.csv"], "ragged.csv: does not look like a CSV file with a header row: a row has more fields than the header"),
        (&["garbage.jsonl"], "garbage.jsonl: does not look like JSON Lines"),
        (&["notes.txt"], "notes.txt: unsupported file type"),
        (&["object.json"], "object.json: does not look like a JSON array"),
        (&["cut.jsonl.gz"], "cut.jsonl.gz: corrupt or truncated gzip"),
        (&["missing.jsonl"], "input missing.jsonl does not exist"),
        (&["nothing/*.jsonl"], "does not exist (no file matches)"),
        (&["pairs.jsonl", "--split", "0.5,0.5"], "split"),
        (&["pairs.jsonl", "--split", "0.9,0.9,0.9"], "split"),
        (&["pairs.jsonl", "--map", "prompt=q"], "--map only applies to --format generic"),
        (&["pairs.jsonl", "--strict", "--max-chars", "1"], "pairs.jsonl:1: too_long"),
    ];
    for (args, words) in cases {
        let mut a = vec!["ingest", "--format", "hh-rlhf", "--out", "out"];
        if args.contains(&"pairs.jsonl") && !args.contains(&"--map") {
            a[2] = "generic";
        }
        a.extend(args);
        refused(d, &a, 2, &[words]);
    }
}

#[test]
fn ingest_reads_bom_crlf_and_quarantines_what_it_cannot_read_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let row = |p: &str| format!("{{\"prompt\": \"{p}\", \"chosen\": \"a\", \"rejected\": \"b\"}}");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(format!("{}\r\n{}\r\n\r\n", row("p1"), row("p2")).bytes());
    bytes.extend(b"{\"prompt\": \"caf\xe9\", \"chosen\": \"a\", \"rejected\": \"b\"}\n");
    bytes.extend(b"{\"prompt\": \"p4\", \"chosen\": null, \"rejected\": \"b\"}\n");
    bytes.extend(b"{\"prompt\": \"p5\", \"rejected\": \"b\"}\n");
    fs::write(d.join("odd.jsonl"), bytes).unwrap();
    let args = ["ingest", "--format", "generic", "odd.jsonl", "--out", "out"].map(String::from);
    let o = ember_in(d, &args);
    assert!(o.status.success(), "{}", text(&o));
    let stats: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(d.join("out/stats.json")).unwrap()).unwrap();
    assert_eq!(stats["rows_read"], 5, "{stats}");
    assert_eq!(stats["kept"], 2, "BOM and CRLF rows are read: {stats}");
    assert_eq!(stats["reasons"]["invalid_utf8"], 1, "{stats}");
    assert_eq!(stats["reasons"]["missing_field"], 2, "{stats}");
    fs::write(d.join("empty.jsonl"), b"").unwrap();
    let args = ["ingest", "--format", "generic", "empty.jsonl", "--out", "e"].map(String::from);
    let o = ember_in(d, &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no row was kept"), "{}", text(&o));
}

#[test]
fn run_config_mistakes_are_refused_before_any_stage_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: [(&str, &[&str], &str); 12] = [
        ("seed = [", &[], "is not valid TOML"),
        ("sed = 1", &[], "unknown key `sed`"),
        ("[sfft]\nsteps = 1", &[], "sfft"),
        ("device = \"tpu\"", &[], "line 1: `device`"),
        ("seed = -1", &[], "line 1: `seed`"),
        (
            "[reward]\nmax_len = 0",
            &[],
            "line 2: reward.max_len: must be at least 3",
        ),
        (
            "[reward.optim]\nlr = nan",
            &[],
            "line 2: reward.optim.lr: must be a positive number",
        ),
        (
            "[sft]\nsteps = \"three hundred\"",
            &[],
            "line 2: `sft.steps`",
        ),
        (
            "",
            &["--set", "garbage"],
            "--set garbage: expected KEY=VALUE",
        ),
        (
            "[data]\nkind = \"ingest\"\ninputs = [\"nowhere/*.jsonl\"]\nformat = \"hh-rlhf\"",
            &[],
            "data.inputs",
        ),
        (
            "base = \"no-such-model\"\n[sft]\nsteps = 0",
            &[],
            "base: no-such-model is not a policy directory",
        ),
        (
            "[sft]\nsteps = 0",
            &[],
            "sft.steps: 0 (no SFT) needs a top-level `base`",
        ),
    ];
    for (toml, extra, words) in cases {
        fs::write(d.join("c.toml"), toml).unwrap();
        let mut a = vec!["run", "c.toml", "--run-dir", "r"];
        a.extend(extra);
        refused(d, &a, 2, &[words]);
        fs::remove_file(d.join("c.toml")).unwrap();
        assert!(!d.join("r").exists(), "{toml}: nothing may be written");
    }
    refused(
        d,
        &["run", "missing.toml"],
        2,
        &["config missing.toml does not exist"],
    );
    refused(
        d,
        &["config", "print", "missing.toml"],
        2,
        &["does not exist"],
    );
}

#[test]
fn score_inputs_with_bad_rows_are_refused_naming_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_files(
        d,
        &[
            ("noanswer.jsonl", b"{\"prompt\": \"1+1=\"}\n"),
            ("number.jsonl", b"{\"prompt\": \"1+1=\", \"answer\": 2}\n"),
            (
                "broken.jsonl",
                b"{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{oops\n",
            ),
            ("good.jsonl", b"{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n"),
        ],
    );
    let cases: [(&str, &str); 4] = [
        ("noanswer.jsonl", "row 1: no string field `answer`"),
        ("number.jsonl", "row 1: no string field `answer`"),
        ("broken.jsonl", "broken.jsonl line 2"),
        ("absent.jsonl", "absent.jsonl"),
    ];
    for (input, words) in cases {
        let a = [
            "reward",
            "score",
            "--model",
            &fx("04-reward"),
            "--input",
            input,
            "--out",
            "s.jsonl",
        ];
        refused(d, &a, 2, &[words]);
    }
    let a = [
        "reward",
        "score",
        "--model",
        "no-model",
        "--input",
        "good.jsonl",
        "--out",
        "s.jsonl",
    ];
    refused(d, &a, 2, &["no-model"]);
}
