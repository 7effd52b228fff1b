//! End-to-end tests of `ember run` / `ember status` / `ember config print` with the stages this
//! build wires: caching by fingerprint, corruption detection, config errors, the run-directory
//! lock and unwritable run directories.
use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EMBER: &str = env!("CARGO_BIN_EXE_ember");

const CONFIG: &str =
    "seed = 5\ndevice = \"cpu\"\n\n[report]\ntitle = \"test run\"\nplots = false\n";

fn ember(args: &[&str], cwd: &Path) -> Output {
    Command::new(EMBER)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .output()
        .expect("ember runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("run.toml");
    fs::write(&p, body).unwrap();
    p
}

/// `(stage, event)` pairs of `RUN/events.jsonl` from line `from` on.
fn events(run: &Path, from: usize) -> Vec<(String, String)> {
    fs::read_to_string(run.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .skip(from)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["stage"].as_str().unwrap().to_string(),
                v["event"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn ran(evts: &[(String, String)]) -> Vec<String> {
    evts.iter()
        .filter(|(_, e)| e == "done")
        .map(|(s, _)| s.clone())
        .collect()
}

fn status_row(cwd: &Path, run: &str, stage: &str) -> String {
    let out = ember(&["status", run], cwd);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    table
        .lines()
        .find(|l| l.starts_with(stage))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn second_run_skips_and_a_changed_config_reruns() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), CONFIG);
    let cfg = cfg.to_str().unwrap();
    let run = tmp.path().join("run");
    let out = ember(&["run", cfg, "--run-dir", "run"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ran(&events(&run, 0)), vec!["report".to_string()]);
    assert!(run.join("09-report/report.md").exists());
    assert!(status_row(tmp.path(), "run", "report").contains("done"));

    let out = ember(&["run", cfg, "--run-dir", "run"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        events(&run, 2),
        vec![("report".to_string(), "skip".to_string())]
    );

    let out = ember(
        &[
            "run",
            cfg,
            "--run-dir",
            "run",
            "--set",
            "report.title=other",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ran(&events(&run, 3)), vec!["report".to_string()]);
    let md = fs::read_to_string(run.join("09-report/report.md")).unwrap();
    assert!(md.starts_with("# other"), "{md}");

    let out = ember(
        &[
            "run",
            cfg,
            "--run-dir",
            "run",
            "--set",
            "report.title=other",
            "--force",
            "all",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ran(&events(&run, 5)), vec!["report".to_string()]);
}

#[test]
fn truncated_artifact_is_detected_and_its_stage_reruns() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), CONFIG);
    let cfg = cfg.to_str().unwrap();
    let run = tmp.path().join("run");
    let out = ember(&["run", cfg, "--run-dir", "run"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    let md = run.join("09-report/report.md");
    let len = fs::metadata(&md).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&md)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let row = status_row(tmp.path(), "run", "report");
    assert!(row.contains("stale") && row.contains("checksum"), "{row}");

    let out = ember(&["run", cfg, "--run-dir", "run"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ran(&events(&run, 2)), vec!["report".to_string()]);
    assert_eq!(fs::metadata(&md).unwrap().len(), len);
}

#[test]
fn invalid_config_exits_2_naming_the_key_path() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "seed = 1\n[report]\ntitel = \"x\"\n");
    let cfg = cfg.to_str().unwrap();
    let out = ember(&["run", cfg], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("`report.titel`") && msg.contains("did you mean `report.title`?"),
        "{msg}"
    );
    assert!(
        !tmp.path().join("runs").exists(),
        "nothing written for a bad config"
    );
    assert_eq!(
        ember(&["config", "print", cfg], tmp.path()).status.code(),
        Some(2)
    );
    let good = write_config(tmp.path(), "seed = 1\n");
    let out = ember(
        &["run", good.to_str().unwrap(), "--set", "report.titel=3"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let out = ember(
        &["run", good.to_str().unwrap(), "--only", "reprot"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("did you mean `report`?"),
        "{}",
        text(&out)
    );
}

#[test]
fn config_print_shows_overrides_and_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), "seed = 1\n");
    let out = ember(
        &[
            "config",
            "print",
            cfg.to_str().unwrap(),
            "--set",
            "report.histogram_bins=7",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(printed["seed"].as_integer(), Some(1));
    assert_eq!(printed["report"]["histogram_bins"].as_integer(), Some(7));
    assert_eq!(printed["report"]["plots"].as_bool(), Some(true));
}

#[test]
fn unwritable_run_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), CONFIG);
    fs::write(tmp.path().join("file"), "not a directory").unwrap();
    let out = ember(
        &["run", cfg.to_str().unwrap(), "--run-dir", "file/run"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot create run directory file/run"),
        "{}",
        text(&out)
    );
}

#[test]
fn second_concurrent_run_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), CONFIG);
    let run = tmp.path().join("run");
    fs::create_dir_all(&run).unwrap();
    // This test process plays the first `ember run`: it holds the lock.
    let lock = fs::File::create(run.join(".lock")).unwrap();
    // SAFETY: flock on a descriptor owned by `lock`, alive for the whole test.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let out = ember(
        &["run", cfg.to_str().unwrap(), "--run-dir", "run"],
        tmp.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("in use by another `ember run`"),
        "{}",
        text(&out)
    );
    assert!(!run.join("09-report").exists());
    drop(lock);
    let out = ember(
        &["run", cfg.to_str().unwrap(), "--run-dir", "run"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
}
