//! On-disk formats: the model directory (`config.json` [`EnergyConfig`], `model.safetensors`,
//! `tokenizer.json`, `train_config.json`, `energy_stats.json`), the scalar state of a training
//! checkpoint (written with `policy::train::save_checkpoint`, atomic) and the best weights
//! beside it (`best/STEP.safetensors`, written to a temporary name and renamed).
use std::fs;
use std::path::Path;

use policy::Tokenizer;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tch::{nn, Tensor};

use crate::error::{Result, RewardError};
use crate::model::EnergyConfig;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TRAIN_CONFIG_FILE: &str = "train_config.json";
pub const STATS_FILE: &str = "energy_stats.json";
pub const CKPT_DIR: &str = "ckpt";

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable value");
    fs::write(path, text).map_err(|e| RewardError::io("writing", path, e))
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| RewardError::io("reading", path, e))?;
    serde_json::from_str(&text).map_err(|source| RewardError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the model directory's weights, config and tokenizer (the caller adds the rest).
pub fn save_model(
    dir: &Path,
    vs: &nn::VarStore,
    cfg: &EnergyConfig,
    tok: &Tokenizer,
) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| RewardError::io("creating", dir, e))?;
    write_json(&dir.join(CONFIG_FILE), cfg)?;
    let w = dir.join(WEIGHTS_FILE);
    vs.save(&w)
        .map_err(|e| RewardError::torch(format!("writing {}", w.display()), e))?;
    tok.save(dir.join(TOKENIZER_FILE))?;
    Ok(())
}

/// Deep copies of all variables, sorted by name.
pub fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Copies `weights` into the variables of `vs` (names must match).
pub fn restore(vs: &nn::VarStore, weights: &[(String, Tensor)]) -> Result<()> {
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, w) in weights {
            let mut v = vars
                .get(name)
                .ok_or_else(|| RewardError::Config(format!("no variable {name} to restore")))?
                .shallow_clone();
            v.copy_(w);
        }
        Ok(())
    })
}

/// The scalar state of a training checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps completed.
    pub step: u64,
    pub best_accuracy: Option<f64>,
    pub best_step: u64,
    /// Evaluations since the best one (early stopping).
    pub evals_since_best: u64,
    /// Non-finite losses skipped so far.
    pub nonfinite: u64,
    pub stopped_early: bool,
}

/// Directory (inside a run directory) of the best weights seen by validation.
pub const BEST_DIR: &str = "best";

/// `dir/best/STEP.safetensors`.
pub fn best_path(dir: &Path, step: u64) -> std::path::PathBuf {
    dir.join(BEST_DIR).join(format!("{step}.safetensors"))
}

/// Writes the best weights of `step` atomically and removes those of other steps.
pub fn save_best(dir: &Path, step: u64, weights: &[(String, Tensor)]) -> Result<()> {
    let dst = best_path(dir, step);
    let tmp = dir.join(BEST_DIR).join("tmp.safetensors");
    fs::create_dir_all(dir.join(BEST_DIR)).map_err(|e| RewardError::io("creating", dir, e))?;
    Tensor::write_safetensors(weights, &tmp)
        .map_err(|e| RewardError::torch(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, &dst).map_err(|e| RewardError::io("renaming", &tmp, e))?;
    Ok(())
}

/// Removes best-weight files of steps other than `keep`.
pub fn prune_best(dir: &Path, keep: u64) {
    let keep = best_path(dir, keep);
    for entry in fs::read_dir(dir.join(BEST_DIR))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = entry.path();
        if p != keep {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Reads the best weights of `step`.
pub fn load_best(dir: &Path, step: u64) -> Result<Vec<(String, Tensor)>> {
    let p = best_path(dir, step);
    Tensor::read_safetensors(&p)
        .map_err(|e| RewardError::torch(format!("reading {}", p.display()), e))
}
