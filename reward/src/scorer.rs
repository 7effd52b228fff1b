//! [`EnergyScorer`]: a trained model directory loaded for scoring. Its [`EnergyScorer::score`] is
//! the one function every consumer (`ember reward score`, rank, refine re-scoring) uses to turn
//! (prompt, answer) texts into energies.
use std::path::{Path, PathBuf};

use policy::Tokenizer;
use tch::{nn, Device};
use tracing::{instrument, warn};

use crate::batch::{clip_answer, fit_left, Fit};
use crate::error::{Result, RewardError};
use crate::eval::to_vec;
use crate::model::{EnergyConfig, EnergyModel};
use crate::store;

/// A loaded energy model with its tokenizer.
#[derive(Debug)]
pub struct EnergyScorer {
    pub vs: nn::VarStore,
    pub model: EnergyModel,
    pub config: EnergyConfig,
    pub tokenizer: Tokenizer,
    pub device: Device,
    pub dir: PathBuf,
}

impl EnergyScorer {
    /// Loads `dir/{config.json, model.safetensors, tokenizer.json}`.
    pub fn load(dir: impl AsRef<Path>, device: Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(store::CONFIG_FILE);
        if !cfg_path.exists() {
            return Err(RewardError::Input {
                path: dir.to_path_buf(),
                message: "not an energy model directory (no config.json); train one with `ember reward train`".into(),
            });
        }
        let config: EnergyConfig = store::read_json(&cfg_path)?;
        config.check().map_err(|m| RewardError::Input {
            path: cfg_path.clone(),
            message: m,
        })?;
        let tokenizer = Tokenizer::load(dir.join(store::TOKENIZER_FILE))?;
        let mut vs = nn::VarStore::new(device);
        let model = EnergyModel::new(vs.root(), &config);
        let w = dir.join(store::WEIGHTS_FILE);
        policy::weights::load_checked(&mut vs, &w)?;
        Ok(Self {
            vs,
            model,
            config,
            tokenizer,
            device,
            dir: dir.to_path_buf(),
        })
    }

    /// Token ids of (prompt, answer) as the model sees them, and whether the answer had to be
    /// clipped (it alone exceeds `max_len`; then SEP + its first tokens + EOS are scored).
    pub fn encode(&self, prompt: &str, answer: &str) -> (Vec<i64>, bool) {
        let enc = self.tokenizer.encode_pair(prompt, answer);
        match fit_left(enc.ids, enc.answer_start, self.config.max_len) {
            (ids, Fit::AnswerTooLong) => (
                clip_answer(&ids, enc.answer_start, self.config.max_len),
                true,
            ),
            (ids, _) => (ids, false),
        }
    }

    /// Energies of already-encoded sequences, `batch` at a time, right-padded, in input order.
    pub fn energies_of_ids(&self, seqs: &[Vec<i64>], batch: usize) -> Vec<f32> {
        self.energies_shared(seqs, batch, None)
            .expect("no collective runs without a process group")
    }

    /// [`Self::energies_of_ids`], the batches shared by the ranks of `group` (each batch the one
    /// a single process forms, so the energies are the same bits), every energy on every rank.
    fn energies_shared(
        &self,
        seqs: &[Vec<i64>],
        batch: usize,
        group: Option<&policy::dist::ProcessGroup>,
    ) -> Result<Vec<f32>> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len()); // similar lengths together: less padding
        let chunks: Vec<&[usize]> = order.chunks(batch.max(1)).collect();
        let energies = tch::no_grad(|| {
            policy::dist::map_chunks(group, chunks.len(), |c| {
                let rows: Vec<Vec<i64>> = chunks[c].iter().map(|&i| seqs[i].clone()).collect();
                let (ids, mask) =
                    policy::batch::pad_right(&rows, self.tokenizer.pad_id(), self.device);
                to_vec(&self.model.energy(&ids, &mask, false))
            })
        })?;
        let mut out = vec![0f32; seqs.len()];
        for (chunk, e) in chunks.iter().zip(energies) {
            for (&i, v) in chunk.iter().zip(e) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Energy of each (prompt, answer): the single discrete scoring function of Ember.
    #[instrument(skip_all, fields(n = answers.len()))]
    pub fn score(&self, prompts: &[String], answers: &[String], batch: usize) -> Result<Vec<f32>> {
        if prompts.len() != answers.len() {
            return Err(RewardError::Config(format!(
                "score: {} prompts but {} answers",
                prompts.len(),
                answers.len()
            )));
        }
        let mut clipped = 0usize;
        let seqs: Vec<Vec<i64>> = prompts
            .iter()
            .zip(answers)
            .map(|(p, a)| {
                let (ids, c) = self.encode(p, a);
                clipped += usize::from(c);
                ids
            })
            .collect();
        if clipped > 0 {
            warn!(
                clipped,
                max_len = self.config.max_len,
                "answers longer than the model's max_len were clipped"
            );
        }
        self.energies_shared(&seqs, batch, policy::dist::group())
    }
}

/// The policy crate's search and fine-tuning loops score through this: [`EnergyScorer::score`]
/// and reward = −energy ([`crate::reward_from_energy`]).
impl policy::score::Scorer for EnergyScorer {
    fn energies(
        &self,
        prompts: &[String],
        answers: &[String],
        batch: usize,
    ) -> policy::Result<Vec<f32>> {
        self.score(prompts, answers, batch)
            .map_err(|e| policy::PolicyError::scorer("scoring energies", e))
    }

    fn reward(&self, energy: f64) -> f64 {
        crate::reward_from_energy(energy)
    }
}
