//! Atomic checkpoints holding the weights, the optimizer moments and a JSON state: written to
//! `DIR.tmp` and swapped in by renames, so a run killed at any moment leaves either the previous
//! checkpoint or the new one.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

use super::AdamW;
use crate::error::{PolicyError, Result};

const MODEL: &str = "model.safetensors";
const OPTIM: &str = "optim.safetensors";
const STATE: &str = "state.json";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.{suffix}"))
}

/// Writes weights, optimizer moments and `state` into `dir` atomically: everything goes into
/// `dir.tmp`, which then replaces `dir` by renames (the previous checkpoint survives as
/// `dir.old` until the new one is in place).
pub fn save_checkpoint(
    dir: &Path,
    vs: &nn::VarStore,
    opt: &AdamW,
    state: &impl Serialize,
) -> Result<()> {
    let tmp = sibling(dir, "tmp");
    let old = sibling(dir, "old");
    let io = |op, p: &Path| {
        let p = p.to_path_buf();
        move |e| PolicyError::io(op, p, e)
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("clearing", &tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
    vs.save(tmp.join(MODEL))
        .map_err(|e| PolicyError::torch(format!("writing {}", tmp.display()), e))?;
    Tensor::write_safetensors(&opt.state(), tmp.join(OPTIM))
        .map_err(|e| PolicyError::torch(format!("writing {}", tmp.display()), e))?;
    let mut state = serde_json::to_value(state).expect("serialisable state");
    state["optimizer_t"] = opt.t.into();
    crate::write_json(&tmp.join(STATE), &state)?;
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io("clearing", &old))?;
        }
        std::fs::rename(dir, &old).map_err(io("moving", dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io("moving", &tmp))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io("removing", &old))?;
    }
    Ok(())
}

/// Restores a checkpoint written by [`save_checkpoint`] into `vs` and `opt`; returns its state
/// (`None` when there is none). Falls back to `dir.old` if a save was interrupted mid-swap.
pub fn load_checkpoint<S: for<'de> Deserialize<'de>>(
    dir: &Path,
    vs: &mut nn::VarStore,
    opt: &mut AdamW,
) -> Result<Option<S>> {
    let old = sibling(dir, "old");
    let dir = if dir.join(STATE).exists() {
        dir.to_path_buf()
    } else if old.join(STATE).exists() {
        old
    } else {
        return Ok(None);
    };
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| PolicyError::io("reading", &state_path, e))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| PolicyError::Json {
            path: state_path.clone(),
            source,
        })?;
    vs.load(dir.join(MODEL))
        .map_err(|e| PolicyError::torch(format!("loading {}", dir.display()), e))?;
    let optim = dir.join(OPTIM);
    let tensors = Tensor::read_safetensors(&optim)
        .map_err(|e| PolicyError::torch(format!("loading {}", optim.display()), e))?;
    opt.load_state(tensors.into_iter().collect(), &optim)?;
    opt.t = value["optimizer_t"].as_u64().unwrap_or(0);
    let state = serde_json::from_value(value).map_err(|source| PolicyError::Json {
        path: state_path,
        source,
    })?;
    Ok(Some(state))
}
