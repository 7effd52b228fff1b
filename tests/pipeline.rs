//! End-to-end tests of `ember run` / `ember status` / `ember config print` with the stages this
//! build wires: caching by fingerprint, corruption detection, config errors, the run-directory
//! lock and unwritable run directories.
use std::fs;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

mod common;
use common::{ember, kill_after_second_checkpoint, text, TINY as CONFIG};

const ALL: [&str; 10] = [
    "data",
    "tokenizer",
    "sft",
    "reward",
    "rank",
    "finetune",
    "refine",
    "compare",
    "eval",
    "report",
];

fn all() -> Vec<String> {
    ALL.iter().map(|s| s.to_string()).collect()
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

/// `ember run CFG --run-dir run EXTRA…` in `dir`: asserts it succeeded and returns the events
/// it added to `run/events.jsonl`.
fn run_again(dir: &Path, cfg: &str, extra: &[&str]) -> Vec<(String, String)> {
    let run = dir.join("run");
    let n = events(&run, 0).len();
    let out = ember(
        &[&["run", cfg, "--run-dir", "run"][..], extra].concat(),
        dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    events(&run, n)
}

#[test]
fn second_run_skips_and_a_changed_config_reruns() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), CONFIG);
    let cfg = cfg.to_str().unwrap();
    let run = tmp.path().join("run");
    assert_eq!(ran(&run_again(tmp.path(), cfg, &[])), all());
    assert!(run.join("10-report/report.md").exists());
    assert!(run.join("04-reward/val_energies.parquet").exists());
    for stage in ALL {
        let row = status_row(tmp.path(), "run", stage);
        assert!(row.contains("done"), "{stage}: {row}");
    }
    let md = fs::read_to_string(run.join("10-report/report.md")).unwrap();
    for section in [
        "## synth",
        "## sft",
        "## reward",
        "## rank",
        "## finetune",
        "## compare",
        "## eval",
        "longer answer [95% CI]",
    ] {
        assert!(md.contains(section), "report lacks {section}:\n{md}");
    }

    // Everything is current: every stage is skipped.
    let skipped: Vec<(String, String)> = ALL
        .iter()
        .map(|s| (s.to_string(), "skip".to_string()))
        .collect();
    assert_eq!(run_again(tmp.path(), cfg, &[]), skipped);

    // A reward setting changes reward and everything downstream of it, nothing upstream.
    let steps = ["--set", "reward.steps=8"];
    assert_eq!(
        ran(&run_again(tmp.path(), cfg, &steps)),
        all()[3..].to_vec()
    );

    // The title only touches the report.
    let args = [&steps[..], &["--set", "report.title=other"]].concat();
    assert_eq!(ran(&run_again(tmp.path(), cfg, &args)), vec!["report"]);
    let md = fs::read_to_string(run.join("10-report/report.md")).unwrap();
    assert!(md.starts_with("# other"), "{md}");

    // --only reruns one stage whose output is then identical, so nothing downstream changes.
    let only = [&args[..], &["--only", "rank"]].concat();
    assert_eq!(ran(&run_again(tmp.path(), cfg, &only)), vec!["rank"]);
    let events = run_again(tmp.path(), cfg, &args);
    assert!(ran(&events).is_empty(), "{events:?}");
}

#[test]
fn truncated_artifact_is_detected_and_its_stage_reruns() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), CONFIG);
    let cfg = cfg.to_str().unwrap();
    let run = tmp.path().join("run");
    let out = ember(&["run", cfg, "--run-dir", "run"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    let model = run.join("04-reward/model.safetensors");
    let bytes = fs::read(&model).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(bytes.len() as u64 / 2)
        .unwrap();
    let row = status_row(tmp.path(), "run", "reward");
    assert!(row.contains("stale") && row.contains("checksum"), "{row}");

    let n = events(&run, 0).len();
    let out = ember(&["run", cfg, "--run-dir", "run"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    // The re-run reproduces the same model (same seed, CPU), so downstream stays current.
    assert_eq!(ran(&events(&run, n)), vec!["reward".to_string()]);
    assert_eq!(fs::read(&model).unwrap(), bytes);
}

/// kill -9 during reward training, re-run: earlier stages are skipped, reward resumes from its
/// checkpoint, and the model equals an uninterrupted run's bit for bit.
#[test]
fn killed_reward_training_resumes_and_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(tmp.path(), CONFIG);
    let cfg = cfg.to_str().unwrap();
    // Long enough for the kill to land mid-training; only the stages up to reward.
    let longer = ["--set", "reward.steps=150", "--set", "reward.eval_every=50"];
    let run_until_reward = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = ["run", cfg, "--run-dir", dir].map(String::from).to_vec();
        v.extend(longer.map(String::from));
        v
    };
    let only = |dir: &str, stage: &str| {
        let mut args = run_until_reward(dir);
        args.extend(["--only".to_string(), stage.to_string()]);
        args
    };
    let run_only = |dir: &str, stage: &str| {
        let args = only(dir, stage);
        let out = ember(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
            tmp.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
    };
    for stage in ["data", "tokenizer", "sft", "reward"] {
        run_only("whole", stage);
    }
    let whole = fs::read(tmp.path().join("whole/04-reward/model.safetensors")).unwrap();

    let run = tmp.path().join("killed");
    for stage in ["data", "tokenizer", "sft"] {
        run_only("killed", stage);
    }
    let ckpt = run.join("04-reward.partial/ckpt");
    kill_after_second_checkpoint(&only("killed", "reward"), tmp.path(), &ckpt);
    assert!(!run.join("04-reward/manifest.json").exists());
    assert!(
        ckpt.exists() || run.join("04-reward.partial/ckpt.old").exists(),
        "no checkpoint before the kill"
    );

    let n = events(&run, 0).len();
    let args = run_until_reward("killed");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ember(&args, tmp.path());
    assert!(out.status.success(), "{}", text(&out));
    let evts = events(&run, n);
    for stage in ["data", "tokenizer", "sft"] {
        assert!(
            evts.contains(&(stage.to_string(), "skip".to_string())),
            "{stage} not skipped: {evts:?}"
        );
    }
    assert_eq!(ran(&evts), all()[3..].to_vec());
    assert!(
        text(&out).contains("resuming from checkpoint"),
        "{}",
        text(&out)
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run.join("04-reward/manifest.json")).unwrap())
            .unwrap();
    assert!(
        manifest["metrics"]["resumed_from"].as_u64().unwrap_or(0) > 0,
        "{manifest}"
    );
    let resumed = fs::read(run.join("04-reward/model.safetensors")).unwrap();
    assert!(
        resumed == whole,
        "resumed model differs from the uninterrupted one"
    );
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

/// Regression: values were checked only when their stage started, so `[finetune] rounds = 0`
/// failed after data, tokenizer, sft and reward had run, `[reward] steps = 0` exited 1 and a
/// `seed` under `[reward]` was silently overwritten.
#[test]
fn every_section_is_checked_before_any_stage_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = "[data]\nmax_digits = 0\n[tokenizer]\nkind = \"bpe\"\nvocab = 10\n\
               [sft]\nsteps = 0\n[sft.optim]\nlr = nan\n[reward]\nsteps = 0\n\
               [rank]\nn = 0\n[finetune]\nrounds = 0\n[refine]\nbatch = 0\n\
               [compare]\nbudgets = []\n[eval]\nresamples = 0\n[report]\nhistogram_bins = 0\n";
    let cfg = write_config(tmp.path(), bad);
    let cfg = cfg.to_str().unwrap();
    for cmd in [vec!["run", cfg], vec!["config", "print", cfg]] {
        let out = ember(&cmd, tmp.path());
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let msg = text(&out);
        for key in [
            "data.max_digits",
            "tokenizer.vocab",
            "sft.steps",
            "sft.optim.lr",
            "reward.steps",
            "rank.n",
            "finetune.rounds",
            "refine.batch",
            "compare.budgets",
            "eval.resamples",
            "report.histogram_bins",
        ] {
            assert!(msg.contains(key), "{key} not named in: {msg}");
        }
    }
    assert!(!tmp.path().join("runs").exists(), "nothing written");
    for (toml, needle) in [
        ("[reward]\nseed = 3\n", "`reward.seed`"),
        ("device = \"tpu\"\n", "line 1: `device`"),
        ("[sft]\nsteps = \"three hundred\"\n", "line 2: `sft.steps`"),
    ] {
        let cfg = write_config(tmp.path(), toml);
        let out = ember(&["run", cfg.to_str().unwrap()], tmp.path());
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(needle), "{needle}: {}", text(&out));
    }
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
    assert!(!run.join("10-report").exists());
    drop(lock);
    let out = ember(
        &["run", cfg.to_str().unwrap(), "--run-dir", "run"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// A run from a pretrained `base` (here the tiny Llama fixture, imported): the tokenizer stage
/// takes the base's tokenizer, `sft.steps = 0` keeps its weights, and the energy model and
/// every later stage run on its Llama trunk. `[tokenizer]` beside a base, and `sft.steps = 0`
/// without one, are usage errors before anything runs.
#[test]
fn a_run_from_a_pretrained_base_keeps_its_tokenizer_and_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy/tests/fixtures/tiny-llama");
    let fixture = fixture.to_str().unwrap();
    common::ok(&ember(
        &["import", "--format", "hf", fixture, "--out", "base", "-q"],
        tmp.path(),
    ));
    let sft_model = CONFIG.find("[sft.model]").unwrap();
    let rest = &CONFIG[sft_model..];
    let body = format!(
        "base = \"base\"\n{}{}",
        CONFIG[..sft_model].replace("[sft]\nsteps = 12", "[sft]\nsteps = 0"),
        &rest[rest.find("[reward]").unwrap()..]
    );
    let cfg = write_config(tmp.path(), &body);
    let cfg = cfg.to_str().unwrap();
    common::ok(&ember(&["run", cfg, "--run-dir", "run"], tmp.path()));
    let run = tmp.path().join("run");
    let bytes = |p: &Path| fs::read(p).unwrap();
    let base = tmp.path().join("base");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(
            bytes(&run.join("02-tokenizer").join(f)),
            bytes(&base.join(f)),
            "{f}"
        );
    }
    assert_eq!(
        bytes(&run.join("03-sft/model.safetensors")),
        bytes(&base.join("model.safetensors"))
    );
    let rm: serde_json::Value =
        serde_json::from_slice(&bytes(&run.join("04-reward/config.json"))).unwrap();
    assert_eq!(rm["trunk"]["architecture"], "llama", "{rm}");
    assert!(run.join("10-report/report.md").exists());

    let bad = write_config(
        tmp.path(),
        &format!("{body}\n[tokenizer]\nkind = \"bpe\"\n"),
    );
    let out = ember(
        &["run", bad.to_str().unwrap(), "--run-dir", "bad"],
        tmp.path(),
    );
    common::assert_exit_2(&out, "leave [tokenizer] out");
    let bad = write_config(tmp.path(), body.trim_start_matches("base = \"base\"\n"));
    let out = ember(
        &["run", bad.to_str().unwrap(), "--run-dir", "bad"],
        tmp.path(),
    );
    common::assert_exit_2(&out, "sft.steps: 0 (no SFT) needs a top-level `base`");
    assert!(
        !tmp.path().join("bad").exists(),
        "nothing written for a bad config"
    );
}

/// Regression: a run directory made before the one-seed rule keeps a `config.toml` with the
/// reward trainer's unused `seed` under [reward]; `ember status` refused to read it. A `seed`
/// there in a config the user runs is still an error.
#[test]
fn status_reads_a_run_saved_with_a_reward_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("old");
    fs::create_dir_all(&run).unwrap();
    fs::write(run.join("config.toml"), "seed = 17\n[reward]\nseed = 0\n").unwrap();
    let row = status_row(tmp.path(), "old", "reward");
    assert!(row.contains("missing"), "{row}");
    let out = ember(&["run", "old/config.toml", "--run-dir", "old"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("`reward.seed`"), "{}", text(&out));
}
