//! `kill -9`, SIGINT and SIGTERM at random moments of a whole run: after each, running the same
//! command again finishes the run with the artifacts of an uninterrupted one (every model,
//! table and metric equal, wall-clock timings aside). The tiny config runs in `make test`; the
//! demo config, ten seeds, in `make test-long`.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

mod common;
use common::{text, EMBER, TINY};

/// Keys that hold wall-clock time, the one thing two identical runs do not share.
fn is_timing(key: &str) -> bool {
    key == "wall_s" || key.contains("seconds") || key.ends_with("per_s") || key == "duration_s"
}

fn strip_timings(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| !is_timing(k));
            map.values_mut().for_each(strip_timings);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_timings),
        _ => {}
    }
}

/// Every artifact of every stage of `run` as comparable text: JSON, JSON Lines and Parquet
/// with their timings removed, other files by sha256 (reports, which quote timings, left out).
fn artifacts(run: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stages: Vec<_> = fs::read_dir(run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    stages.sort();
    for stage in stages.iter().filter(|p| p.join("manifest.json").exists()) {
        let manifest: Value =
            serde_json::from_str(&fs::read_to_string(stage.join("manifest.json")).unwrap())
                .unwrap();
        for (rel, art) in manifest["artifacts"].as_object().unwrap() {
            let path = stage.join(rel);
            let key = format!("{}/{rel}", stage.file_name().unwrap().to_string_lossy());
            let value = if rel.ends_with(".md") || rel.ends_with(".svg") || rel.ends_with(".png") {
                continue;
            } else if rel.ends_with(".parquet") {
                let mut rows = Value::Array(datasets::table::read_parquet_rows(&path).unwrap());
                strip_timings(&mut rows);
                rows.to_string()
            } else if rel.ends_with(".json") || rel.ends_with(".jsonl") {
                let text = fs::read_to_string(&path).unwrap();
                let mut lines: Vec<Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
                    .collect();
                if rel.ends_with(".json") {
                    lines = vec![serde_json::from_str(&text).unwrap()];
                }
                let mut all = Value::Array(lines);
                strip_timings(&mut all);
                all.to_string()
            } else {
                art["sha256"].as_str().unwrap().to_string()
            };
            out.insert(key, value);
        }
    }
    out
}

fn run_cmd(dir: &Path, config: &str, run: &str) -> Command {
    let mut c = Command::new(EMBER);
    c.args(["run", config, "--run-dir", run])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Runs `config` uninterrupted, then for each seed: starts it in a fresh run directory, sends
/// a random signal (SIGKILL, SIGINT or SIGTERM) at a random moment, maybe a second time in the
/// rerun, then reruns it to the end and compares every artifact with the uninterrupted run's.
fn interrupted_runs_match(config: &str, seeds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("c.toml"), config).unwrap();
    let clock = Instant::now();
    let o = run_cmd(d, "c.toml", "whole").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let whole_s = clock.elapsed().as_secs_f64();
    let reference = artifacts(&d.join("whole"));
    assert!(reference.len() > 10, "{reference:?}");
    for seed in 0..seeds {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let run = format!("r{seed}");
        let mut signals = Vec::new();
        for _ in 0..rng.random_range(1..=2) {
            let signal = [libc::SIGKILL, libc::SIGINT, libc::SIGTERM][rng.random_range(0..3)];
            let at = Duration::from_secs_f64(rng.random_range(0.05..0.95) * whole_s);
            let mut child = run_cmd(d, "c.toml", &run).spawn().unwrap();
            std::thread::sleep(at);
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
            let status = child.wait().unwrap();
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            assert!(!err.contains("panicked"), "seed {seed}: {err}");
            if status.success() {
                break; // it finished before the signal
            }
            if signal != libc::SIGKILL && status.code().is_some() {
                assert_eq!(status.code(), Some(128 + signal), "seed {seed}: {err}");
                assert!(
                    err.contains("run the same command to resume"),
                    "seed {seed}: {err}"
                );
            }
            eprintln!(
                "seed {seed}: signal {signal} at {at:?} -> {status:?}; {}",
                err.lines().last().unwrap_or("")
            );
            signals.push((signal, at));
        }
        let o = run_cmd(d, "c.toml", &run).output().unwrap();
        assert!(
            o.status.success(),
            "seed {seed} after {signals:?}: {}",
            text(&o)
        );
        let got = artifacts(&d.join(&run));
        for (k, v) in &reference {
            assert_eq!(
                got.get(k),
                Some(v),
                "seed {seed} after {signals:?}: {k} differs"
            );
        }
        assert_eq!(got.len(), reference.len(), "seed {seed}");
        fs::remove_dir_all(d.join(&run)).unwrap();
    }
}

#[test]
fn interrupted_tiny_runs_resume_to_the_artifacts_of_an_uninterrupted_one() {
    interrupted_runs_match(TINY, 6);
}

#[test]
#[ignore = "long (about an hour on 2 cores): ember demo's config, ten seeds; run by `make test-long`"]
fn interrupted_demo_runs_resume_to_the_artifacts_of_an_uninterrupted_one() {
    let demo = Command::new(EMBER)
        .args(["demo", "--print-config"])
        .output()
        .unwrap();
    assert!(demo.status.success());
    interrupted_runs_match(&String::from_utf8(demo.stdout).unwrap(), 10);
}
