//! Relaxed negatives (`--negatives relaxed`): training on soft inputs, so that the energy
//! between the one-hot corners means something to the optimisers that move there (`refine
//! --method soft|langevin`). Each step starts from the batch's chosen answers in embedding
//! space, noised (Gaussian, `noise` × the embeddings' RMS), and takes `steps` normalised
//! gradient steps down the current model's energy (each position moves `lr` × RMS); the
//! continuous answers where descent lands are negatives: softplus(E(chosen) − E(landed)) ×
//! `weight` joins the loss. The descent itself is first order (no gradient through the steps:
//! libtorch's CPU attention has no double backward, so an unrolled objective in the style of
//! Energy-Based Transformers would need another attention path); the loss's gradient flows
//! through the energy at the landing point.
use tch::{Kind, Tensor};

use crate::model::{answer_mask, EnergyModel};

/// Relaxed-negative settings, read from `[reward.mine]`: `steps`, `lr`, `noise`.
pub(super) struct Relaxed {
    pub steps: usize,
    pub lr: f64,
    pub noise: f64,
    pub sep: i64,
    /// The longest sequence: each row's noise is drawn at this many positions, then cut.
    pub max_len: usize,
}

impl Relaxed {
    /// The energies `[B]` (with gradients to the model's parameters, `train` mode) of the
    /// continuous answers descent reaches from the noised chosen rows `ids`, `mask` `[B, T]`.
    /// Costs `steps` forwards and backwards plus one forward per row. Row i's noise comes from
    /// tch's generator seeded with `row_seeds[i]` ([`Relaxed::row_noise`]).
    pub fn energies(
        &self,
        model: &EnergyModel,
        ids: &Tensor,
        mask: &Tensor,
        train: bool,
        row_seeds: &[i64],
    ) -> Tensor {
        let trunk = model.trunk();
        let answer = answer_mask(ids, mask, self.sep); // [B, T]
        let moves = answer.unsqueeze(-1).to_kind(Kind::Float); // [B, T, 1]
        let rms = tch::no_grad(|| {
            trunk
                .wte()
                .square()
                .mean(Kind::Float)
                .sqrt()
                .double_value(&[])
        });
        let start = tch::no_grad(|| trunk.embed(ids));
        let noise = self.row_noise(&start, row_seeds); // [B, T, D]
        let mut e = &start + noise * (self.noise * rms) * &moves;
        for _ in 0..self.steps {
            let x = e.detach().set_requires_grad(true);
            let en = model.energy_from_embeds(&x, mask, Some(&answer), false);
            let g = Tensor::run_backward(&[en.sum(Kind::Float)], &[&x], false, false);
            let norm = g[0]
                .square()
                .sum_dim_intlist(-1, true, Kind::Float)
                .sqrt()
                .clamp_min(1e-12);
            e = tch::no_grad(|| x.detach() - &g[0] / norm * (self.lr * rms) * &moves);
        }
        model.energy_from_embeds(&e.detach(), mask, Some(&answer), train)
    }

    /// Standard normal noise shaped like `start` `[B, T, D]`, row i drawn from seed
    /// `row_seeds[i]` at `max_len` positions and cut to T: a row's noise depends neither on the
    /// batch it is in nor on its padding, so ranks that split a batch draw what one process does.
    fn row_noise(&self, start: &Tensor, row_seeds: &[i64]) -> Tensor {
        let (t, d) = (start.size()[1], start.size()[2]);
        let len = (self.max_len as i64).max(t);
        let rows: Vec<Tensor> = (row_seeds.iter())
            .map(|&seed| {
                tch::manual_seed(seed);
                Tensor::randn([len, d], (Kind::Float, start.device())).narrow(0, 0, t)
            })
            .collect();
        Tensor::stack(&rows, 0).to_kind(start.kind())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EnergyConfig, Pooling, Score};
    use policy::Tokenizer;
    use tch::{nn, Device};

    /// Descent from the chosen answers lowers their energy (in eval mode, without noise), and the
    /// landing energies carry gradients to the model.
    #[test]
    fn descent_lowers_the_energy_and_trains_the_model() {
        let tok = Tokenizer::char_level(["0123456789+="]).unwrap();
        let cfg = EnergyConfig {
            trunk: policy::TrunkConfig::Gpt2(policy::GptConfig {
                vocab_size: tok.vocab_size(),
                n_ctx: 16,
                d_model: 16,
                n_layer: 2,
                n_head: 2,
                dropout: 0.0,
                layer_norm_eps: 1e-5,
            }),
            max_len: 16,
            pooling: Pooling::Eos,
            score: Score::HeadNll,
            sep_id: tok.sep_id(),
        };
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = EnergyModel::new(vs.root(), &cfg);
        let rows: Vec<Vec<i64>> = [("1+2=", "3"), ("12+30=", "42")]
            .iter()
            .map(|(p, a)| tok.encode_pair(p, a).ids)
            .collect();
        let (ids, mask) = policy::batch::pad_right(&rows, tok.pad_id(), Device::Cpu);
        let at = |steps| Relaxed {
            steps,
            lr: 0.2,
            noise: 0.0,
            sep: tok.sep_id(),
            max_len: 16,
        };
        let seeds = [1, 2];
        let before = at(0).energies(&model, &ids, &mask, false, &seeds).detach();
        let before = Vec::<f32>::try_from(before).unwrap();
        let landed = at(3).energies(&model, &ids, &mask, false, &seeds);
        let after = Vec::<f32>::try_from(landed.detach()).unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert!(a < b, "{before:?} → {after:?}");
        }
        landed.sum(Kind::Float).backward();
        let head = vs.variables()["head.weight"].grad();
        assert!(head.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    /// A row's noise is its seed's, whatever the batch and the padding around it.
    #[test]
    fn a_rows_noise_depends_on_its_seed_only() {
        let r = Relaxed {
            steps: 0,
            lr: 0.0,
            noise: 1.0,
            sep: 0,
            max_len: 12,
        };
        let noise = |b: i64, t: i64, seeds: &[i64]| {
            r.row_noise(
                &Tensor::zeros([b, t, 4], (Kind::Float, tch::Device::Cpu)),
                seeds,
            )
        };
        let alone = noise(1, 5, &[7]);
        let in_batch = noise(3, 9, &[3, 7, 8]);
        assert!(alone.get(0).equal(&in_batch.get(1).narrow(0, 0, 5)));
        assert!(!in_batch.get(0).equal(&in_batch.get(1)));
    }
}
