//! Negatives mined by refinement (`--negatives refine`): during training, gradient-guided token
//! swaps ([`crate::search::swap`], batched here) run on the current model from the batch's
//! chosen or rejected answers; the discrete answers they reach are the ones the model rates
//! better than where they started, so those that differ from the start and from the chosen
//! answer are negatives the model gets wrong. Each training pair keeps its last `replay` mined
//! negatives (a replay buffer, as Du & Mordatch 2019 keep Langevin samples), and all of them
//! join the pair's loss as softplus(E(chosen) − E(mined)) terms, whatever the main loss.
//!
//! Mining runs the model in eval mode and takes gradients with respect to the input
//! embeddings only (the parameters' gradients are untouched); its cost is counted in energy
//! forward equivalents (a forward and its backward = 3, one per scored swap), as refinement's
//! is. The buffer and the counts are part of the checkpoint, so a resumed run mines what an
//! uninterrupted one does.
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use policy::batch::pad_right;
use policy::Tokenizer;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::setup::Prepared;
use crate::batch::EncodedPairRow;
use crate::model::{answer_mask, EnergyModel};
use crate::search::swap::best_swaps;

/// Extra negatives beyond the data's rejected answers that training makes as it goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Negatives {
    /// None (the data's rejected answers, and the in-batch and sampled negatives).
    #[default]
    None,
    /// Answers that token-swap refinement on the current model reaches (`[reward.mine]`).
    Refine,
    /// Continuous answers that embedding-space descent from the noised chosen answers reaches
    /// (`[reward.mine]` `steps`, `lr`, `noise`, `weight`; [`super::relaxed`]).
    Relaxed,
}

impl std::fmt::Display for Negatives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Refine => "refine",
            Self::Relaxed => "relaxed",
        })
    }
}

/// Which answer of a pair mining starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MineFrom {
    /// The chosen answer: the swaps near a good answer that the model wrongly prefers.
    Chosen,
    /// The rejected answer (on policy data, a policy sample): where refinement at use starts.
    Rejected,
    /// Alternating between the two by pair and step.
    #[default]
    Both,
}

impl std::fmt::Display for MineFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Chosen => "chosen",
            Self::Rejected => "rejected",
            Self::Both => "both",
        })
    }
}

/// The settings of `--negatives refine` (a run config's `[reward.mine]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct MineConfig {
    /// With --negatives refine: start mining from the `chosen` answer, the `rejected` one, or
    /// `both` (alternating by pair and step).
    #[cfg_attr(feature = "clap", arg(id = "mine_from", long = "mine-from", value_name = "FROM", default_value_t = MineConfig::default().from))]
    pub from: MineFrom,
    /// With --negatives refine: token-swap steps per mined answer (relaxed: descent steps).
    #[cfg_attr(feature = "clap", arg(id = "mine_steps", long = "mine-steps", value_name = "N", default_value_t = MineConfig::default().steps))]
    pub steps: usize,
    /// With --negatives refine: swaps scored per step.
    #[cfg_attr(feature = "clap", arg(id = "mine_candidates", long = "mine-candidates", value_name = "N", default_value_t = MineConfig::default().candidates))]
    pub candidates: usize,
    /// With --negatives refine: mined negatives kept per training pair (the replay buffer).
    #[cfg_attr(feature = "clap", arg(id = "replay", long = "replay", value_name = "N", default_value_t = MineConfig::default().replay))]
    pub replay: usize,
    /// With --negatives refine|relaxed: weight of the mined negatives' loss term.
    #[cfg_attr(feature = "clap", arg(id = "mine_weight", long = "mine-weight", value_name = "W", default_value_t = MineConfig::default().weight))]
    pub weight: f64,
    /// With --negatives relaxed: the step of each position, in units of the embeddings' RMS.
    #[cfg_attr(feature = "clap", arg(id = "mine_lr", long = "mine-lr", value_name = "LR", default_value_t = MineConfig::default().lr))]
    pub lr: f64,
    /// With --negatives relaxed: the start's Gaussian noise, in units of the embeddings' RMS.
    #[cfg_attr(feature = "clap", arg(id = "mine_noise", long = "mine-noise", value_name = "SIGMA", default_value_t = MineConfig::default().noise))]
    pub noise: f64,
    /// With --negatives refine: mine every N training steps (the buffer is used at every step).
    #[cfg_attr(feature = "clap", arg(id = "mine_every", long = "mine-every", value_name = "N", default_value_t = MineConfig::default().every))]
    pub every: u64,
}

impl Default for MineConfig {
    fn default() -> Self {
        Self {
            from: MineFrom::Both,
            steps: 2,
            candidates: 8,
            replay: 4,
            weight: 1.0,
            lr: 0.2,
            noise: 0.5,
            every: 1,
        }
    }
}

impl MineConfig {
    /// Every value that is wrong, by its key (as in a run config's `[reward]` section).
    pub(super) fn problems(&self) -> Vec<(&'static str, String)> {
        let positive = [
            ("mine.steps", self.steps as u64),
            ("mine.candidates", self.candidates as u64),
            ("mine.replay", self.replay as u64),
            ("mine.every", self.every),
        ];
        let mut bad: Vec<(&'static str, String)> = (positive.into_iter())
            .filter(|(_, v)| *v == 0)
            .map(|(k, _)| (k, "must be > 0".to_string()))
            .collect();
        for (key, v) in [("mine.weight", self.weight), ("mine.noise", self.noise)] {
            if !(v >= 0.0 && v.is_finite()) {
                bad.push((key, format!("must be ≥ 0, got {v}")));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bad.push(("mine.lr", format!("must be > 0, got {}", self.lr)));
        }
        bad
    }
}

/// What mining did over a run (the manifest's `mined`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MineStats {
    /// Answers refined.
    pub refined: u64,
    /// Refined answers that differ from their start and from the chosen answer: the negatives
    /// that joined the replay buffer (counted once each, however many steps reuse them).
    pub joined: u64,
    /// Mined negatives in the loss, summed over steps (buffer reuse included).
    pub used: u64,
    /// Energy forward equivalents spent mining (3 per forward + backward, 1 per scored swap).
    pub energy_fwd: f64,
    /// Seconds spent mining.
    pub seconds: f64,
    /// Of the joined negatives, those with a gold reward (synth prompts) …
    pub gold_known: u64,
    /// … that is lower than the chosen answer's (really worse),
    pub gold_worse: u64,
    /// … equal to it,
    pub gold_equal: u64,
    /// … or higher (a false negative: the model was right to prefer it).
    pub gold_better: u64,
}

/// The replay buffer (by training pair) and the counts: the checkpointed part of mining.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct MinerState {
    pub buffer: BTreeMap<usize, VecDeque<Vec<i64>>>,
    pub stats: MineStats,
}

/// Mines negatives for the batches of a run into its state.
pub(super) struct Miner<'a> {
    pub cfg: &'a MineConfig,
    pub state: &'a mut MinerState,
}

impl Miner<'_> {
    /// The mined negatives of each pair of the batch `idx` (indices into the training pairs) at
    /// `step`: on a mining step, refines one answer per pair on `model` first and adds what it
    /// reaches to the pair's buffer.
    pub fn negatives(
        &mut self,
        model: &EnergyModel,
        data: &Prepared,
        idx: &[usize],
        step: u64,
    ) -> Vec<Vec<Vec<i64>>> {
        if step.is_multiple_of(self.cfg.every) {
            self.mine(model, data, idx, step);
        }
        let out: Vec<Vec<Vec<i64>>> = (idx.iter())
            .map(|i| {
                self.state
                    .buffer
                    .get(i)
                    .map_or(Vec::new(), |b| b.iter().cloned().collect())
            })
            .collect();
        self.state.stats.used += out.iter().map(Vec::len).sum::<usize>() as u64;
        out
    }

    fn mine(&mut self, model: &EnergyModel, data: &Prepared, idx: &[usize], step: u64) {
        let clock = Instant::now();
        let pairs: Vec<&EncodedPairRow> = idx.iter().map(|&i| &data.train_pairs[i]).collect();
        let starts: Vec<Vec<i64>> = (pairs.iter().enumerate())
            .map(|(j, p)| match self.starts_at_chosen(j, step) {
                true => p.chosen.clone(),
                false => p.rejected.clone(),
            })
            .collect();
        let search = Search::new(model, &data.tok, data.ecfg.max_len, self.cfg);
        let (reached, cost) = search.descend(&starts);
        let st = &mut self.state.stats;
        st.refined += pairs.len() as u64;
        st.energy_fwd += cost;
        for (((&i, p), start), seq) in idx.iter().zip(&pairs).zip(&starts).zip(reached) {
            if seq == *start || seq == p.chosen {
                continue;
            }
            let buf = self.state.buffer.entry(i).or_default();
            if buf.contains(&seq) {
                continue;
            }
            count_gold(st, data, p, &seq, search.sep);
            st.joined += 1;
            buf.push_back(seq);
            while buf.len() > self.cfg.replay {
                buf.pop_front();
            }
        }
        st.seconds += clock.elapsed().as_secs_f64();
    }

    /// Whether pair `j` of the batch at `step` starts from its chosen answer.
    fn starts_at_chosen(&self, j: usize, step: u64) -> bool {
        match self.cfg.from {
            MineFrom::Chosen => true,
            MineFrom::Rejected => false,
            MineFrom::Both => (j as u64 + step).is_multiple_of(2),
        }
    }
}

/// Counts `seq`'s gold against the chosen answer's when the prompt is a synth prompt.
fn count_gold(st: &mut MineStats, data: &Prepared, p: &EncodedPairRow, seq: &[i64], sep: i64) {
    let row = &data.train_rows[p.row];
    let (start, end) = answer_span(seq, sep);
    let answer = data.tok.decode(&seq[start..end]);
    let (Some(mined), Some(chosen)) = (
        policy::pool::gold_of(&row.prompt, &answer),
        policy::pool::gold_of(&row.prompt, &row.chosen),
    ) else {
        return;
    };
    st.gold_known += 1;
    match mined.total_cmp(&chosen) {
        std::cmp::Ordering::Less => st.gold_worse += 1,
        std::cmp::Ordering::Equal => st.gold_equal += 1,
        std::cmp::Ordering::Greater => st.gold_better += 1,
    }
}

/// The answer of an encoded sequence (prompt + SEP + answer + EOS): the tokens after its last
/// separator, without the final EOS, as `[start, end)`.
fn answer_span(seq: &[i64], sep: i64) -> (usize, usize) {
    let start = seq.iter().rposition(|&t| t == sep).map_or(0, |s| s + 1);
    (start.min(seq.len() - 1), seq.len() - 1)
}

/// Batched token-swap descent on the energy model (the swaps of [`crate::search::swap`], on
/// whole encoded sequences, many at once).
struct Search<'m> {
    model: &'m EnergyModel,
    steps: usize,
    candidates: usize,
    /// Tokens a swap may put in: the tokenizer's, without padding and separator.
    vocab: i64,
    pad: i64,
    sep: i64,
    eos: i64,
    max_len: usize,
}

/// Scored sequences per forward when mining.
const SCORE_BATCH: usize = 64;

impl<'m> Search<'m> {
    fn new(model: &'m EnergyModel, tok: &Tokenizer, max_len: usize, cfg: &MineConfig) -> Self {
        Self {
            model,
            steps: cfg.steps,
            candidates: cfg.candidates,
            vocab: tok.vocab_size(),
            pad: tok.pad_id(),
            sep: tok.sep_id(),
            eos: tok.eos_id(),
            max_len,
        }
    }

    /// Up to `steps` swap steps from each of `starts`: a sequence takes its best candidate when
    /// that lowers its energy and stops when none does. Returns where each one ended and the
    /// cost in energy forward equivalents.
    fn descend(&self, starts: &[Vec<i64>]) -> (Vec<Vec<i64>>, f64) {
        let mut current = starts.to_vec();
        let mut active: Vec<usize> = (0..current.len()).collect();
        let mut cost = 0.0;
        for _ in 0..self.steps {
            if active.is_empty() {
                break;
            }
            let rows: Vec<Vec<i64>> = active.iter().map(|&i| current[i].clone()).collect();
            let (energies, grads) = self.embedding_grads(&rows);
            cost += 3.0 * rows.len() as f64;
            let candidates: Vec<Vec<Vec<i64>>> = (rows.iter().enumerate())
                .map(|(i, r)| self.swaps(r, &grads.get(i as i64)))
                .collect();
            let flat: Vec<Vec<i64>> = candidates.iter().flatten().cloned().collect();
            let scores = self.score(&flat);
            cost += flat.len() as f64;
            let mut at = 0;
            let mut still = Vec::new();
            for ((&i, cands), e) in active.iter().zip(&candidates).zip(energies) {
                let s = &scores[at..at + cands.len()];
                at += cands.len();
                let best = (0..cands.len()).min_by(|&a, &b| s[a].total_cmp(&s[b]));
                if let Some(b) = best.filter(|&b| s[b] < e) {
                    current[i] = cands[b].clone();
                    still.push(i);
                }
            }
            active = still;
        }
        (current, cost)
    }

    /// The energies of `rows` and the gradient of each one's energy with respect to its input
    /// embeddings `[B, T, D]`.
    fn embedding_grads(&self, rows: &[Vec<i64>]) -> (Vec<f32>, Tensor) {
        let trunk = self.model.trunk();
        let (ids, mask) = pad_right(rows, self.pad, trunk.wte().device());
        let embeds = trunk.embed(&ids).detach().set_requires_grad(true);
        let answer = answer_mask(&ids, &mask, self.sep);
        let e = self
            .model
            .energy_from_embeds(&embeds, &mask, Some(&answer), false); // [B]
        let g = Tensor::run_backward(&[e.sum(Kind::Float)], &[&embeds], false, false);
        let e = Vec::<f32>::try_from(e.detach().to_device(tch::Device::Cpu)).expect("f32");
        (e, g[0].shallow_clone())
    }

    /// The `candidates` single-token swaps of `seq`'s answer that its embedding gradient `g`
    /// `[T, D]` ranks best: the gradient with respect to the one-hot rows of the answer and its
    /// EOS is g times the embedding matrix. Never a padding or separator token; appending only
    /// while the sequence is below `max_len`.
    fn swaps(&self, seq: &[i64], g: &Tensor) -> Vec<Vec<i64>> {
        let (start, end) = answer_span(seq, self.sep);
        let answer = &seq[start..end];
        let wte = self.model.trunk().wte().detach().narrow(0, 0, self.vocab); // [V, D]
        let rows = (end + 1 - start) as i64; // the answer and its EOS
        let grad = g.narrow(0, start as i64, rows).matmul(&wte.tr()); // [L + 1, V]
        let banned: Vec<i64> = [self.pad, self.sep]
            .into_iter()
            .filter(|&t| t < self.vocab)
            .collect();
        let grad = grad.index_fill(
            1,
            &Tensor::from_slice(&banned).to_device(grad.device()),
            f64::INFINITY,
        );
        let longest = answer.len() + usize::from(seq.len() < self.max_len);
        best_swaps(&grad, answer, self.candidates, self.eos, longest)
            .into_iter()
            .filter(|a| !a.is_empty())
            .map(|a| [&seq[..start], &a[..], &[self.eos]].concat())
            .collect()
    }

    /// Energies of `seqs`, `SCORE_BATCH` at a time, without gradients.
    fn score(&self, seqs: &[Vec<i64>]) -> Vec<f32> {
        let device = self.model.trunk().wte().device();
        tch::no_grad(|| {
            (seqs.chunks(SCORE_BATCH))
                .flat_map(|chunk| {
                    let (ids, mask) = pad_right(chunk, self.pad, device);
                    let e = self.model.energy(&ids, &mask, false);
                    Vec::<f32>::try_from(e.to_device(tch::Device::Cpu)).expect("f32")
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EnergyConfig, Pooling, Score};
    use tch::{nn, Device};

    /// A random two-block energy model over a character tokenizer.
    fn tiny(score: Score) -> (nn::VarStore, EnergyModel, Tokenizer) {
        let tok = Tokenizer::char_level(["0123456789+="]).unwrap();
        let trunk = policy::TrunkConfig::Gpt2(policy::GptConfig {
            vocab_size: tok.vocab_size(),
            n_ctx: 24,
            d_model: 16,
            n_layer: 2,
            n_head: 2,
            dropout: 0.0,
            layer_norm_eps: 1e-5,
        });
        let cfg = EnergyConfig {
            trunk,
            max_len: 24,
            pooling: Pooling::Eos,
            score,
            sep_id: tok.sep_id(),
        };
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = EnergyModel::new(vs.root(), &cfg);
        (vs, model, tok)
    }

    /// Swap descent never raises a sequence's energy, keeps prompts and EOS, and counts its
    /// cost exactly: 3 per sequence per step it is still descending, 1 per scored swap.
    #[test]
    fn descent_lowers_the_energy_and_counts_its_cost() {
        for score in [Score::Head, Score::HeadNll] {
            let (_vs, model, tok) = tiny(score);
            let cfg = MineConfig {
                steps: 3,
                candidates: 5,
                ..MineConfig::default()
            };
            let search = Search::new(&model, &tok, 24, &cfg);
            let starts: Vec<Vec<i64>> = ["1+2=3", "12+30=42", "9+9=18"]
                .map(|a| {
                    let (p, ans) = a.split_at(a.find('=').unwrap() + 1);
                    tok.encode_pair(p, ans).ids
                })
                .to_vec();
            let before = search.score(&starts);
            let (reached, cost) = search.descend(&starts);
            let after = search.score(&reached);
            let mut moved = 0;
            for ((s, r), (b, a)) in starts.iter().zip(&reached).zip(before.iter().zip(&after)) {
                assert!(a <= b, "{score:?}: {b} → {a}");
                let (ps, _) = answer_span(s, tok.sep_id());
                assert_eq!(s[..ps], r[..ps], "the prompt and separator stay");
                assert_eq!(r.last(), Some(&tok.eos_id()));
                moved += usize::from(r != s);
            }
            assert!(
                moved > 0,
                "{score:?}: a random model has lower swaps somewhere"
            );
            // Each step costs 3 + 5 per sequence still descending: at least the first step of
            // all three, at most every step of all three.
            assert!((24.0..=72.0).contains(&cost), "{cost}");
            assert_eq!(cost % 8.0, 0.0, "{cost}");
        }
    }

    #[test]
    fn answer_span_is_after_the_last_separator() {
        // prompt 5 1 6, SEP 1 (a chat template's turn-start opens every turn), answer 7 8, EOS 2
        assert_eq!(answer_span(&[5, 1, 6, 1, 7, 8, 2], 1), (4, 6));
        assert_eq!(answer_span(&[1, 2], 1), (1, 1));
    }

    #[test]
    fn problems_name_the_keys() {
        let cfg = MineConfig {
            steps: 0,
            weight: f64::NAN,
            ..MineConfig::default()
        };
        let keys: Vec<&str> = cfg.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["mine.steps", "mine.weight"]);
    }
}
