//! One stage execution in progress. A stage writes into a staging directory next to its output
//! (`OUT.partial`); [`StageRun::finish`] writes `manifest.json` last, then renames the staging
//! directory into place. A killed stage therefore never looks done, and a resumable stage
//! (training) finds its checkpoints in `OUT.partial` when re-run with the same fingerprint.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};

use super::manifest::{fingerprint, list_files, sha256_file, Artifact, InputRef, Manifest};
use super::manifest::{MANIFEST, VERSION};

/// One stage execution in progress: staging directory, fingerprint, clock.
pub struct StageRun {
    stage: String,
    config: serde_json::Value,
    inputs: Vec<InputRef>,
    fingerprint: String,
    out: PathBuf,
    staging: PathBuf,
    started: Instant,
    started_at_unix: u64,
}

impl StageRun {
    /// Starts a stage writing to `out`: `config` is what it hashes, `inputs` the fingerprints of
    /// the files or stage directories it reads.
    /// A resumable stage keeps what an interrupted run left in `OUT.partial` (checkpoints) if
    /// the fingerprint is the same; otherwise the staging directory starts empty.
    pub fn begin(
        stage: &str,
        config: serde_json::Value,
        inputs: Vec<InputRef>,
        out: &Path,
        resumable: bool,
    ) -> Result<Self> {
        let fingerprint = fingerprint(stage, &config, &inputs);
        let staging = staging_path(out);
        let marker = staging.join(".fingerprint");
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
            out: out.to_path_buf(),
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
        let marker = self.staging.join(".fingerprint");
        let _ = fs::remove_file(&marker);
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
        if self.out.exists() {
            if !self.out.is_dir() {
                bail!("{} exists and is not a directory", self.out.display());
            }
            fs::remove_dir_all(&self.out)
                .with_context(|| format!("replacing {}", self.out.display()))?;
        }
        fs::rename(&self.staging, &self.out).with_context(|| {
            format!(
                "moving {} to {}",
                self.staging.display(),
                self.out.display()
            )
        })?;
        Ok(manifest)
    }

    /// Gives up a failed run: the staging directory is removed unless the stage resumes from
    /// it, so no half-written output is left behind.
    pub fn abandon(self, resumable: bool) {
        if !resumable {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// `OUT.partial`, next to `OUT`.
pub fn staging_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{name}.partial"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::manifest::{read_manifest, verify};

    #[test]
    fn finish_writes_manifest_last_and_renames() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("stage");
        let run =
            StageRun::begin("demo", serde_json::json!({"a": 1}), vec![], &out, false).unwrap();
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
        let run = StageRun::begin("t", 1.into(), vec![], &out, true).unwrap();
        fs::write(run.dir().join("ckpt"), "c").unwrap();
        drop(run);
        let run = StageRun::begin("t", 1.into(), vec![], &out, true).unwrap();
        assert!(run.dir().join("ckpt").exists());
        drop(run);
        let run = StageRun::begin("t", 2.into(), vec![], &out, true).unwrap();
        assert!(!run.dir().join("ckpt").exists());
    }
}
