//! One stage execution in progress. A stage writes into a staging directory next to its output
//! (`OUT.partial`); [`StageRun::finish`] writes `manifest.json` last, then renames the staging
//! directory into place. A killed stage therefore never looks done, and a resumable stage
//! (training) finds its checkpoints in `OUT.partial` when re-run with the same fingerprint.
//! The output was claimed first ([`Target::claim`]: what it may replace, and its lock), and a
//! previous output is swapped out only once the new one is complete.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

use super::manifest::{fingerprint, list_files, sha256_file, Artifact, InputRef, Manifest};
use super::manifest::{MANIFEST, VERSION};
use super::output::{sibling, Target};

/// The marker a staging directory carries while a stage writes it.
const MARKER: &str = ".fingerprint";

/// One stage execution in progress: staging directory, fingerprint, clock.
pub struct StageRun {
    stage: String,
    config: serde_json::Value,
    inputs: Vec<InputRef>,
    fingerprint: String,
    out: Target,
    staging: PathBuf,
    started: Instant,
    started_at_unix: u64,
}

impl StageRun {
    /// Starts a stage writing to the claimed `out`: `config` is what it hashes, `inputs` the
    /// fingerprints of the files or stage directories it reads.
    /// A resumable stage keeps what an interrupted run left in `OUT.partial` (checkpoints) if
    /// the fingerprint is the same; otherwise the staging directory starts empty.
    pub fn begin(
        stage: &str,
        config: serde_json::Value,
        inputs: Vec<InputRef>,
        out: Target,
        resumable: bool,
    ) -> Result<Self> {
        let fingerprint = fingerprint(stage, &config, &inputs);
        let staging = staging_path(&out.path);
        let marker = staging.join(MARKER);
        let keep = resumable
            && fs::read_to_string(&marker)
                .map(|f| f == fingerprint)
                .unwrap_or(false);
        if staging.exists() && !keep {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("clearing {}", staging.display()))?;
        }
        fs::create_dir_all(&staging)
            .with_context(|| format!("creating output directory {}", staging.display()))?;
        fs::write(&marker, &fingerprint)
            .with_context(|| format!("writing to {}", staging.display()))?;
        let started_at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Self {
            stage: stage.to_string(),
            config,
            inputs,
            fingerprint,
            out,
            staging,
            started: Instant::now(),
            started_at_unix,
        })
    }

    /// Where the stage writes its artifacts.
    pub fn dir(&self) -> &Path {
        &self.staging
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Records checksums of everything in the staging directory (except `keep_out` prefixes,
    /// e.g. resume checkpoints), writes `manifest.json` last and renames into place.
    pub fn finish(self, metrics: serde_json::Value, keep_out: &[&str]) -> Result<Manifest> {
        let _ = fs::remove_file(self.staging.join(MARKER));
        for rel in keep_out {
            let p = self.staging.join(rel);
            if p.is_dir() {
                fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            } else if p.exists() {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        let mut artifacts = BTreeMap::new();
        for file in list_files(&self.staging)? {
            let rel = file.strip_prefix(&self.staging).expect("inside staging");
            let bytes = fs::metadata(&file)?.len();
            artifacts.insert(
                rel.to_string_lossy().into_owned(),
                Artifact {
                    sha256: sha256_file(&file)?,
                    bytes,
                },
            );
        }
        let manifest = Manifest {
            stage: self.stage,
            version: VERSION.to_string(),
            fingerprint: self.fingerprint,
            config: self.config,
            inputs: self.inputs,
            artifacts,
            metrics,
            started_at_unix: self.started_at_unix,
            duration_s: self.started.elapsed().as_secs_f64(),
        };
        let json = serde_json::to_string_pretty(&manifest)?;
        fs::write(self.staging.join(MANIFEST), json)
            .with_context(|| format!("writing manifest in {}", self.staging.display()))?;
        replace(&self.staging, &self.out.path)?;
        Ok(manifest)
    }

    /// Gives up a failed run: the staging directory is removed unless it holds one of
    /// `resume_from` (a checkpoint a rerun resumes from), so no half-written output is left
    /// behind, and no `.partial` that a rerun would only clear.
    pub fn abandon(self, resume_from: &[&str]) {
        if !resume_from.iter().any(|e| self.staging.join(e).exists()) {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Puts the finished `staging` directory at `out`. A previous output is moved aside first and
/// removed only once the new one is in place, so a failure here leaves the previous output.
fn replace(staging: &Path, out: &Path) -> Result<()> {
    let moving = || format!("moving {} to {}", staging.display(), out.display());
    if !(out.exists() || out.is_symlink()) {
        return fs::rename(staging, out).with_context(moving);
    }
    let old = sibling(out, "replaced");
    remove_any(&old)?;
    fs::rename(out, &old).with_context(|| format!("moving {} aside", out.display()))?;
    if let Err(err) = fs::rename(staging, out) {
        let _ = fs::rename(&old, out);
        return Err(err).with_context(moving);
    }
    remove_any(&old)
}

/// Removes a file, symlink or directory tree at `path`, if there is one.
fn remove_any(path: &Path) -> Result<()> {
    let removed = match fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    removed.with_context(|| format!("removing {}", path.display()))
}

/// Whether `dir` is a staging directory a stage left (it carries the marker) or empty: what a
/// new run may clear without `--force`.
pub fn is_ours(dir: &Path) -> bool {
    dir.join(MARKER).exists()
        || fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false)
}

/// `OUT.partial`, next to `OUT`.
pub fn staging_path(out: &Path) -> PathBuf {
    sibling(out, "partial")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::manifest::{read_manifest, verify};
    use crate::stage::output::Replace;

    fn claim(out: &Path) -> Target {
        Target::claim(out, "t", &[], Replace::AnyStage).unwrap()
    }

    #[test]
    fn finish_writes_manifest_last_and_renames() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("stage");
        let run = StageRun::begin(
            "demo",
            serde_json::json!({"a": 1}),
            vec![],
            claim(&out),
            false,
        )
        .unwrap();
        fs::write(run.dir().join("x.txt"), "hello").unwrap();
        fs::create_dir_all(run.dir().join("ckpt")).unwrap();
        fs::write(run.dir().join("ckpt/state"), "s").unwrap();
        let m = run.finish(serde_json::json!({}), &["ckpt"]).unwrap();
        assert!(!staging_path(&out).exists());
        assert_eq!(m.artifacts.len(), 1);
        assert_eq!(read_manifest(&out).unwrap().unwrap(), m);
        assert_eq!(verify(&out, &m).unwrap(), None);
        fs::write(out.join("x.txt"), "hellO").unwrap();
        assert!(verify(&out, &m).unwrap().is_some());
    }

    #[test]
    fn resumable_stage_keeps_staging_only_for_same_fingerprint() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("s");
        let run = StageRun::begin("t", 1.into(), vec![], claim(&out), true).unwrap();
        fs::write(run.dir().join("ckpt"), "c").unwrap();
        drop(run);
        let run = StageRun::begin("t", 1.into(), vec![], claim(&out), true).unwrap();
        assert!(run.dir().join("ckpt").exists());
        drop(run);
        let run = StageRun::begin("t", 2.into(), vec![], claim(&out), true).unwrap();
        assert!(!run.dir().join("ckpt").exists());
    }
}
