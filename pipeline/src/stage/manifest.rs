//! What a finished stage leaves behind: `manifest.json` (written last, with every artifact's
//! sha256), and the fingerprint that decides whether a stage is current — the hash of its name,
//! its config, its inputs' fingerprints and the tool version.
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::UsageError;

/// The tool version that enters every fingerprint.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const MANIFEST: &str = "manifest.json";

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

/// Whether inputs are checked against their manifests' checksums (`ember --no-verify` turns
/// it off for the process).
static VERIFY_INPUTS: AtomicBool = AtomicBool::new(true);

/// `ember --no-verify`: read stage directories without checking their files' checksums.
pub fn set_verify_inputs(on: bool) {
    VERIFY_INPUTS.store(on, Ordering::Relaxed);
}

/// Checks that the files of a stage directory an input points at are the ones its manifest
/// recorded: a model or table changed (or corrupted) since its stage wrote it is a usage error,
/// not a silently different input. Plain files and directories without a manifest pass.
pub fn verify_input(path: &Path) -> Result<()> {
    if !VERIFY_INPUTS.load(Ordering::Relaxed) || !path.is_dir() {
        return Ok(());
    }
    let Some(m) = read_manifest(path)? else {
        return Ok(());
    };
    match verify(path, &m)? {
        None => Ok(()),
        Some(reason) => Err(UsageError::with_hint(
            format!(
                "input {}: {reason} recorded in its manifest.json (changed or corrupt since `ember {}` wrote it)",
                path.display(),
                m.stage
            ),
            "re-create it (`ember run` re-runs a stage whose files changed), or pass --no-verify to read it as it is",
        )
        .into()),
    }
}

/// The fingerprint of each input, in order, as a stage's manifest records them.
pub fn input_refs(inputs: &[&Path]) -> Result<Vec<InputRef>> {
    inputs
        .iter()
        .map(|p| {
            if !p.exists() {
                return Err(crate::error::usage(format!(
                    "input {} does not exist",
                    p.display()
                )));
            }
            Ok(InputRef {
                path: p.display().to_string(),
                fingerprint: input_fingerprint(p)
                    .with_context(|| format!("reading input {}", p.display()))?,
            })
        })
        .collect()
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
