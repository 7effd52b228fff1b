//! The stage contract. A stage is its config type implementing [`Stage`] (the config is a run
//! config's section and the subcommand's flags): its name, the inputs it reads, how it checks
//! its values and how it fills its directory. One executor, [`run`], does the rest for every stage, and
//! `ember run` asks the same trait for the fingerprint a stage would get ([`fingerprint`]), so
//! the recipe of a fingerprint is written once.
//!
//! [`run`] writes into a staging directory next to the output (`OUT.partial`, see [`staging`]),
//! then `manifest.json` last with every artifact's sha256 (see [`manifest`]), then renames the
//! staging directory into place. A killed stage therefore never looks done; a resumable stage
//! (training) finds its checkpoints in `OUT.partial` when re-run, and a failed one that does not
//! resume leaves nothing behind.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::Serialize;
use tracing::info_span;

pub mod common;
pub mod manifest;
pub mod output;
pub mod staging;

pub use common::{Common, CommonArgs, LrArg, NoFlags, RuntimeArgs, SeedArg, StageArgs};
pub use manifest::{
    input_fingerprint, input_refs, list_files, read_manifest, sha256_file, verify, verify_input,
    Artifact, InputRef, Manifest, MANIFEST, VERSION,
};
pub use output::{check_file_out, Lock, OutArg, Replace, Target};
pub use staging::{staging_path, StageRun};

use crate::config::Invalid;

/// One stage of the pipeline, implemented by its config: the config builds the stage's output
/// from its inputs.
pub trait Stage: Serialize {
    /// The name the stage hashes and records in its manifest.
    const NAME: &'static str;
    /// A killed run re-run with the same fingerprint resumes from what it left in `OUT.partial`.
    const RESUMABLE: bool = false;
    /// Runs on every rank of a job, sharing its work (data-parallel training, shared sampling
    /// and scoring); `ember run` runs any other stage on rank 0 alone while the others wait.
    const SHARDS: bool = false;
    /// Entries of the staging directory that are scratch (checkpoints), not artifacts.
    const SCRATCH: &'static [&'static str] = &[];
    /// The entries of [`Stage::SCRATCH`] a rerun resumes from: a failed resumable stage keeps
    /// its `OUT.partial` only when one of them exists (else there is nothing to resume).
    const RESUME_FROM: &'static [&'static str] = &[];
    /// The upstream files and stage directories it reads.
    type Inputs;

    /// The inputs' paths, in the order their fingerprints are hashed.
    fn input_paths(inputs: &Self::Inputs) -> Vec<PathBuf>;

    /// The config values that are wrong, with their keys: checked before anything runs (by
    /// `ember run` for every section before the first stage starts).
    fn check(&self) -> Vec<Invalid> {
        Vec::new()
    }

    /// What the fingerprint hashes of the config: `(config, common)` as JSON.
    fn hashed(&self, common: &Common) -> serde_json::Value {
        serde_json::to_value((self, common)).expect("stage configs serialise")
    }

    /// Does the work, writing into `dir`; returns the manifest's headline metrics.
    fn execute(
        &self,
        common: &Common,
        inputs: &Self::Inputs,
        dir: &Path,
    ) -> Result<serde_json::Value>;
}

/// The fingerprint stage `cfg` gets with these inputs: what `ember run` compares with a
/// finished stage's manifest to decide whether to skip it.
pub fn fingerprint<S: Stage>(cfg: &S, common: &Common, inputs: &S::Inputs) -> Result<String> {
    let paths = S::input_paths(inputs);
    let refs = input_refs(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    Ok(manifest::fingerprint(S::NAME, &cfg.hashed(common), &refs))
}

/// Runs stage `cfg` into `out`: checks the config, claims `out` (what it may `replace`, and its
/// lock), stages, executes, writes the manifest last.
pub fn run<S: Stage>(
    cfg: &S,
    common: &Common,
    inputs: &S::Inputs,
    out: &Path,
    replace: Replace,
) -> Result<Manifest> {
    let _span = info_span!("stage", name = S::NAME, out = %out.display()).entered();
    crate::config::reject(cfg.check(), S::NAME)?;
    if !policy::dist::is_writer() {
        return run_replica(cfg, common, inputs);
    }
    let paths = S::input_paths(inputs);
    let target = Target::claim(out, S::NAME, &paths, replace)?;
    paths.iter().try_for_each(|p| verify_input(p))?;
    let refs = input_refs(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let run = StageRun::begin(S::NAME, cfg.hashed(common), refs, target, S::RESUMABLE)?;
    match cfg.execute(common, inputs, run.dir()) {
        Ok(metrics) => run.finish(metrics, S::SCRATCH),
        Err(err) => {
            run.abandon(if S::RESUMABLE { S::RESUME_FROM } else { &[] });
            Err(err)
        }
    }
}

/// [`run`] on a rank other than 0 of a distributed job: the stage runs (it takes part in
/// every collective) in a private scratch directory that is removed afterwards, and claims,
/// locks and writes nothing of the job's: rank 0 writes the output.
fn run_replica<S: Stage>(cfg: &S, common: &Common, inputs: &S::Inputs) -> Result<Manifest> {
    let paths = S::input_paths(inputs);
    paths.iter().try_for_each(|p| verify_input(p))?;
    let refs = input_refs(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    let config = cfg.hashed(common);
    let rank = policy::dist::group().map_or(0, |g| g.rank());
    let tmp = std::env::temp_dir();
    remove_orphaned_scratch(&tmp);
    let scratch = tmp.join(format!(
        "ember-{}-rank{rank}-{}",
        S::NAME,
        std::process::id()
    ));
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let started = std::time::Instant::now();
    let result = cfg.execute(common, inputs, &scratch);
    let _ = fs::remove_dir_all(&scratch);
    Ok(Manifest {
        stage: S::NAME.to_string(),
        version: VERSION.to_string(),
        fingerprint: manifest::fingerprint(S::NAME, &config, &refs),
        config,
        inputs: refs,
        artifacts: Default::default(),
        metrics: result?,
        started_at_unix: 0,
        duration_s: started.elapsed().as_secs_f64(),
    })
}

/// Removes the scratch directories (`ember-STAGE-rankR-PID`) of ranks killed before they could
/// remove their own: those whose process no longer exists.
fn remove_orphaned_scratch(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(pid) = name
            .strip_prefix("ember-")
            .filter(|rest| rest.contains("-rank"))
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && entry.path().is_dir() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// [`run`] for a subcommand: into its `--out`, replacing what `--force` allows.
pub fn run_cli<S: Stage>(
    cfg: &S,
    common: &Common,
    inputs: &S::Inputs,
    out: &OutArg,
) -> Result<Manifest> {
    run(cfg, common, inputs, &out.path, out.replace())
}

/// Runs stage `S` for a command whose `--out` is either a stage directory or, when it ends in
/// `artifact`'s extension, the one file `artifact` itself (no manifest). The file is written
/// beside `out` and renamed into place, so a failed run leaves nothing. Returns the metrics.
pub fn run_to<S: Stage>(
    cfg: &S,
    common: &Common,
    inputs: &S::Inputs,
    out: &OutArg,
    artifact: &str,
) -> Result<serde_json::Value> {
    let ext = Path::new(artifact).extension();
    if ext.is_none() || out.path.extension() != ext {
        return Ok(run_cli(cfg, common, inputs, out)?.metrics);
    }
    let out = &out.path;
    crate::config::reject(cfg.check(), S::NAME)?;
    if !policy::dist::is_writer() {
        return Ok(run_replica(cfg, common, inputs)?.metrics);
    }
    let paths = S::input_paths(inputs);
    let _target = Target::claim_file(out, &paths)?;
    paths.iter().try_for_each(|p| verify_input(p))?;
    let tmp = staging_path(out);
    let result = fs::create_dir_all(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))
        .and_then(|()| cfg.execute(common, inputs, &tmp))
        .and_then(|metrics| {
            fs::rename(tmp.join(artifact), out)
                .with_context(|| format!("writing {}", out.display()))?;
            Ok(metrics)
        });
    let _ = fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Writes `text` to `echo.txt`; `fail` fails after writing, an empty `text` is invalid.
    #[derive(serde::Serialize)]
    struct Echo(Value);

    impl Stage for Echo {
        const NAME: &'static str = "echo";
        type Inputs = Vec<PathBuf>;

        fn input_paths(inputs: &Vec<PathBuf>) -> Vec<PathBuf> {
            inputs.clone()
        }

        fn check(&self) -> Vec<Invalid> {
            let empty = self.0["text"] == "";
            empty
                .then(|| Invalid::new("text", "must not be empty"))
                .into_iter()
                .collect()
        }

        fn execute(&self, _: &Common, _: &Vec<PathBuf>, dir: &Path) -> Result<Value> {
            let text = self.0["text"].as_str().unwrap();
            fs::write(dir.join("echo.txt"), text)?;
            if self.0["fail"] == true {
                anyhow::bail!("asked to fail");
            }
            Ok(json!({ "chars": text.len() }))
        }
    }

    #[test]
    fn run_records_the_fingerprint_that_ember_run_expects() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("in.txt");
        fs::write(&input, "x").unwrap();
        let (cfg, common, inputs) = (Echo(json!({"text": "hi"})), Common::default(), vec![input]);
        let m = run(
            &cfg,
            &common,
            &inputs,
            &tmp.path().join("out"),
            Replace::SameStage,
        )
        .unwrap();
        assert_eq!(m.fingerprint, fingerprint(&cfg, &common, &inputs).unwrap());
        assert_eq!(m.metrics["chars"], 2);
        assert_eq!(
            fs::read_to_string(tmp.path().join("out/echo.txt")).unwrap(),
            "hi"
        );
        let other = Echo(json!({"text": "ho"}));
        assert_ne!(
            m.fingerprint,
            fingerprint(&other, &common, &inputs).unwrap()
        );
        fs::write(&inputs[0], "y").unwrap();
        assert_ne!(m.fingerprint, fingerprint(&cfg, &common, &inputs).unwrap());
    }

    #[test]
    fn a_failed_or_invalid_stage_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let common = Common::default();
        let err = run(
            &Echo(json!({"text": "a", "fail": true})),
            &common,
            &vec![],
            &out,
            Replace::SameStage,
        );
        assert_eq!(crate::error::exit_code(&err.unwrap_err()), 1);
        let err = run(
            &Echo(json!({"text": ""})),
            &common,
            &vec![],
            &out,
            Replace::SameStage,
        )
        .unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(format!("{err:#}").contains("echo.text: must not be empty"));
        assert!(!out.exists() && !staging_path(&out).exists());
    }

    #[test]
    fn a_failed_rerun_leaves_the_previous_output_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let common = Common::default();
        let first = run(
            &Echo(json!({"text": "a"})),
            &common,
            &vec![],
            &out,
            Replace::SameStage,
        );
        let first = first.unwrap();
        let failed = Echo(json!({"text": "b", "fail": true}));
        assert!(run(&failed, &common, &vec![], &out, Replace::SameStage).is_err());
        assert_eq!(read_manifest(&out).unwrap().unwrap(), first);
        assert_eq!(fs::read_to_string(out.join("echo.txt")).unwrap(), "a");
        let second = run(
            &Echo(json!({"text": "c"})),
            &common,
            &vec![],
            &out,
            Replace::SameStage,
        );
        assert_eq!(second.unwrap().metrics["chars"], 1);
        assert_eq!(fs::read_to_string(out.join("echo.txt")).unwrap(), "c");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            ["out"],
            "no staging, lock or replaced directory is left"
        );
    }

    #[test]
    fn run_to_a_file_writes_only_that_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("answer.txt");
        let cfg = Echo(json!({"text": "42"}));
        let to = |path: &Path| OutArg {
            path: path.to_path_buf(),
            force: false,
        };
        let metrics = run_to(&cfg, &Common::default(), &vec![], &to(&file), "echo.txt").unwrap();
        assert_eq!(metrics["chars"], 2);
        assert_eq!(fs::read_to_string(&file).unwrap(), "42");
        let entries = fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(entries, 1, "no staging directory left beside the file");
        let dir = tmp.path().join("stage");
        run_to(&cfg, &Common::default(), &vec![], &to(&dir), "echo.txt").unwrap();
        assert!(dir.join(MANIFEST).exists());
    }
}
