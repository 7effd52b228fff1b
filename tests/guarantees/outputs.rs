//! `--out` never destroys what it points at, and one writer per output (cases 1 and 8).
use super::*;

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
