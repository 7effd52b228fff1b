//! The stage contract. A stage is one function: its typed config (which names its inputs) in,
//! its [`Manifest`] out. It writes into a staging directory next to its output (`OUT.partial`)
//! and [`StageRun::finish`] writes `manifest.json` last, with every artifact's sha256, then
//! renames the staging directory into place. A killed stage therefore never looks done, and a
//! resumable stage (training) finds its checkpoints in `OUT.partial` when re-run.
//!
//! The fingerprint of a stage is the hash of its name, its config, its inputs' fingerprints and
//! the tool version: `ember run` skips a stage whose manifest carries the same fingerprint and
//! whose artifacts still match their checksums.
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The tool version that enters every fingerprint.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const MANIFEST: &str = "manifest.json";

/// Settings every stage shares, set once at the top of a run config (`seed`, `device`): one seed
/// reaches every RNG of every stage. Stages hash it with their own config section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Common {
    /// The one seed; every RNG derives from it with a named stream.
    pub seed: u64,
    /// `cpu`, `cuda` or `auto` for stages that run a model.
    pub device: String,
    /// `fp32` or `bf16` (autocast, CUDA only). Left out of the fingerprint when fp32, so runs
    /// made before the key existed keep theirs.
    #[serde(skip_serializing_if = "policy::device::Precision::is_fp32")]
    pub precision: policy::device::Precision,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            seed: 0,
            device: "cpu".to_string(),
            precision: Default::default(),
        }
    }
}

impl Common {
    /// The device a stage runs its models on, and the autocast scope its precision asks for:
    /// keep the guard alive while the model runs (`let (device, _amp) = common.device()?`).
    pub fn device(&self) -> Result<(tch::Device, Option<policy::device::Autocast>)> {
        let device = policy::device::resolve_str(&self.device)
            .map_err(|e| crate::error::usage(e.to_string()))?;
        let amp = self
            .precision
            .enter(device)
            .map_err(|e| crate::error::usage(e.to_string()))?;
        Ok((device, amp))
    }
}

/// What a finished stage wrote, read back by downstream stages, `ember status` and the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub stage: String,
    pub version: String,
    pub fingerprint: String,
    pub config: serde_json::Value,
    pub inputs: Vec<InputRef>,
    /// Relative path inside the stage directory → checksum and size.
    pub artifacts: BTreeMap<String, Artifact>,
    /// Headline numbers (e.g. reward accuracy), free-form per stage.
    pub metrics: serde_json::Value,
    pub started_at_unix: u64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputRef {
    pub path: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    pub sha256: String,
    pub bytes: u64,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The fingerprint of an input: a stage directory's manifest fingerprint, a file's sha256, or
/// for a plain directory the hash of its files' names and checksums.
pub fn input_fingerprint(path: &Path) -> Result<String> {
    if path.is_dir() {
        if let Some(m) = read_manifest(path)? {
            return Ok(m.fingerprint);
        }
        let mut hasher = Sha256::new();
        for file in list_files(path)? {
            let rel = file
                .strip_prefix(path)
                .unwrap_or(&file)
                .to_string_lossy()
                .into_owned();
            hasher.update(rel.as_bytes());
            hasher.update(sha256_file(&file)?.as_bytes());
        }
        Ok(hex::encode(hasher.finalize()))
    } else {
        sha256_file(path)
    }
}

/// Hash of stage name + canonical config JSON + input fingerprints + tool version.
pub fn fingerprint(stage: &str, config: &serde_json::Value, inputs: &[InputRef]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(stage.as_bytes());
    hasher.update(config.to_string().as_bytes());
    for input in inputs {
        hasher.update(input.fingerprint.as_bytes());
    }
    hasher.update(VERSION.as_bytes());
    hex::encode(hasher.finalize())
}

/// The fingerprint of each input, in order, as [`StageRun::begin`] records them.
pub fn input_refs(inputs: &[&Path]) -> Result<Vec<InputRef>> {
    inputs
        .iter()
        .map(|p| {
            Ok(InputRef {
                path: p.display().to_string(),
                fingerprint: input_fingerprint(p)
                    .with_context(|| format!("reading input {}", p.display()))?,
            })
        })
        .collect()
}

/// The fingerprint [`StageRun::begin`] would give `stage` with this config and these inputs:
/// what `ember run` compares with a finished stage's manifest to decide whether to skip it.
pub fn expected_fingerprint(
    stage: &str,
    config: &impl Serialize,
    inputs: &[&Path],
) -> Result<String> {
    let config = serde_json::to_value(config).context("serialising the stage config")?;
    Ok(fingerprint(stage, &config, &input_refs(inputs)?))
}

/// Reads `DIR/manifest.json` if present.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    if !path.exists() {
        return Ok(None);
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(manifest))
}

/// Checks every artifact of a manifest against its recorded checksum and size.
/// Returns the first mismatch as a human-readable reason.
pub fn verify(dir: &Path, manifest: &Manifest) -> Result<Option<String>> {
    for (rel, art) in &manifest.artifacts {
        let path = dir.join(rel);
        let Ok(meta) = fs::metadata(&path) else {
            return Ok(Some(format!("{rel} is missing")));
        };
        if meta.len() != art.bytes || sha256_file(&path)? != art.sha256 {
            return Ok(Some(format!("{rel} does not match its checksum")));
        }
    }
    Ok(None)
}

/// Every regular file below `dir`, sorted, skipping `manifest.json` at the top.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path != dir.join(MANIFEST) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

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
    /// Starts a stage writing to `out`. Inputs are the files or stage directories it reads.
    /// A resumable stage keeps what an interrupted run left in `OUT.partial` (checkpoints) if
    /// the fingerprint is the same; otherwise the staging directory starts empty.
    pub fn begin(
        stage: &str,
        config: &impl Serialize,
        inputs: &[&Path],
        out: &Path,
        resumable: bool,
    ) -> Result<Self> {
        let config = serde_json::to_value(config).context("serialising the stage config")?;
        let inputs = input_refs(inputs)?;
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

    #[test]
    fn finish_writes_manifest_last_and_renames() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("stage");
        let run = StageRun::begin("demo", &serde_json::json!({"a": 1}), &[], &out, false).unwrap();
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
        let run = StageRun::begin("t", &1, &[], &out, true).unwrap();
        fs::write(run.dir().join("ckpt"), "c").unwrap();
        drop(run);
        let run = StageRun::begin("t", &1, &[], &out, true).unwrap();
        assert!(run.dir().join("ckpt").exists());
        drop(run);
        let run = StageRun::begin("t", &2, &[], &out, true).unwrap();
        assert!(!run.dir().join("ckpt").exists());
    }
}
