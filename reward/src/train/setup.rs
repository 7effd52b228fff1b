//! What a run trains on, before the first step: the tokenizer, the model shape (the init
//! checkpoint's trunk or a fresh one), the encoded and fitted pairs, and the trunk weights.
use std::path::{Path, PathBuf};

use datasets::table::PairRow;
use policy::{GptConfig, Tokenizer, TrunkConfig};
use tch::nn;
use tracing::info;

use super::{TrainConfig, TrainInputs};
use crate::batch::EncodedPairRow;
use crate::data::{encode_rows, load_pairs, FitCounts};
use crate::error::{Result, RewardError};
use crate::loss::TieMode;
use crate::model::{EnergyConfig, HEAD_PREFIXES};

/// The tokenizer, model shape and pairs of a run.
pub(super) struct Prepared {
    pub tok: Tokenizer,
    pub ecfg: EnergyConfig,
    pub train_rows: Vec<PairRow>,
    pub val_rows: Vec<PairRow>,
    pub train_pairs: Vec<EncodedPairRow>,
    /// The validation pairs scored at each evaluation (at most `eval_pairs`).
    pub val_pairs: Vec<EncodedPairRow>,
    pub train_fit: FitCounts,
    pub val_fit: FitCounts,
}

impl Prepared {
    /// Loads the tokenizer and both splits of `inputs.data`, and encodes them; an error when
    /// no training pair fits `max_len`.
    pub fn load(cfg: &TrainConfig, inputs: &TrainInputs) -> Result<Self> {
        let tok = Tokenizer::load(tokenizer_path(inputs)?)?;
        let ecfg = energy_config(cfg, inputs.init.as_deref(), &tok)?;
        let train_rows = load_pairs(&inputs.data.join("train.parquet"))?;
        let val_rows = load_pairs(&inputs.data.join("val.parquet"))?;
        let (mut train_pairs, train_fit) = encode_rows(&tok, &train_rows, ecfg.max_len, cfg.ties);
        if cfg.train_pairs > 0 && cfg.train_pairs < train_pairs.len() {
            train_pairs = subset(train_pairs, cfg.train_pairs, cfg.seed);
            info!(pairs = cfg.train_pairs, "training on a subset of the pairs");
        }
        let (mut val_pairs, val_fit) = encode_rows(&tok, &val_rows, ecfg.max_len, TieMode::Skip);
        info!(?train_fit, ?val_fit, "encoded pairs");
        if train_pairs.is_empty() {
            return Err(RewardError::Input {
                path: inputs.data.join("train.parquet"),
                message: format!(
                    "no usable pairs after fitting to max_len {}: {train_fit:?}",
                    ecfg.max_len
                ),
            });
        }
        if cfg.eval_pairs > 0 {
            val_pairs.truncate(cfg.eval_pairs);
        }
        Ok(Self {
            tok,
            ecfg,
            train_rows,
            val_rows,
            train_pairs,
            val_pairs,
            train_fit,
            val_fit,
        })
    }
}

/// `n` of `pairs` drawn without replacement by `seed`, in their original order.
fn subset(pairs: Vec<EncodedPairRow>, n: usize, seed: u64) -> Vec<EncodedPairRow> {
    use rand::seq::SliceRandom;
    let mut idx: Vec<usize> = (0..pairs.len()).collect();
    idx.shuffle(&mut policy::rng::stream(seed, "reward-train-pairs", 0));
    let mut keep = vec![false; pairs.len()];
    idx[..n].iter().for_each(|&i| keep[i] = true);
    pairs
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect()
}

/// The model shape: the init checkpoint's trunk, or a fresh one from the config.
fn energy_config(cfg: &TrainConfig, init: Option<&Path>, tok: &Tokenizer) -> Result<EnergyConfig> {
    let trunk = match init {
        Some(dir) => policy::read_config(&dir.join(policy::CONFIG_FILE))?,
        None => TrunkConfig::Gpt2(GptConfig {
            vocab_size: tok.vocab_size(),
            n_ctx: cfg.max_len as i64,
            d_model: cfg.d_model,
            n_layer: cfg.n_layer,
            n_head: cfg.n_head,
            dropout: cfg.dropout,
            layer_norm_eps: 1e-5,
        }),
    };
    if trunk.vocab_size() < tok.vocab_size() {
        return Err(RewardError::Config(format!(
            "the tokenizer has {} tokens but the trunk only {}",
            tok.vocab_size(),
            trunk.vocab_size()
        )));
    }
    let max_len = cfg.max_len.min(trunk.n_ctx() as usize);
    let ecfg = EnergyConfig {
        trunk,
        max_len,
        pooling: cfg.pooling,
        score: cfg.score,
        sep_id: tok.sep_id(),
    };
    ecfg.check().map_err(RewardError::Config)?;
    Ok(ecfg)
}

/// Loads the trunk of a policy checkpoint; every variable but the head's ([`HEAD_PREFIXES`])
/// must be found.
pub(super) fn load_trunk(vs: &mut nn::VarStore, init: &Path) -> Result<()> {
    let w = init.join(policy::WEIGHTS_FILE);
    policy::weights::load_checked_partial(vs, &w, |name| {
        HEAD_PREFIXES.iter().any(|p| name.starts_with(p))
    })?;
    Ok(())
}

fn tokenizer_path(inputs: &TrainInputs) -> Result<PathBuf> {
    match (&inputs.tokenizer, &inputs.init) {
        // A directory (what `ember tokenizer train --out` writes) means its tokenizer.json.
        (Some(t), _) if t.is_dir() => Ok(t.join(policy::TOKENIZER_FILE)),
        (Some(t), _) => Ok(t.clone()),
        (None, Some(init)) => Ok(init.join(policy::TOKENIZER_FILE)),
        (None, None) => Err(RewardError::Config(
            "give --tokenizer FILE|DIR or --init SFT_DIR".into(),
        )),
    }
}
