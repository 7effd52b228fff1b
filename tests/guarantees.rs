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

#[path = "guarantees/inputs.rs"]
mod inputs;
#[path = "guarantees/models.rs"]
mod models;
#[path = "guarantees/outputs.rs"]
mod outputs;
#[path = "guarantees/signals.rs"]
mod signals;

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
