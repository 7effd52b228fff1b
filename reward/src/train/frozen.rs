//! Training only the top blocks of a pretrained trunk (`train_blocks`): the embedding and the
//! blocks below are frozen (no gradient, no optimizer state), and with `cache_frozen` each
//! sequence's output of the frozen part is computed once and kept, so later epochs run only
//! the trained blocks. Frozen blocks run in eval mode (no dropout). A row's frozen output does
//! not depend on the batch it comes in (positions come from the mask and padding is never
//! attended to), so the cache is keyed by the row's token ids.
use std::collections::HashMap;

use policy::batch::pad_right;
use tch::{nn, Kind, Tensor};

use super::TrainConfig;
use crate::model::{EnergyModel, HEAD_PREFIXES};

/// How energies of training batches are computed.
pub(super) struct Frozen {
    /// Frozen blocks (0 = the whole trunk trains).
    k: usize,
    /// Frozen-part outputs `[T, D]` by token ids (None = recompute every time).
    cache: Option<HashMap<Vec<i64>, Tensor>>,
}

impl Frozen {
    /// Freezes the bottom of `model`'s trunk in `vs` per `cfg` (call before building the
    /// optimizer: it only takes variables that require a gradient).
    pub fn new(cfg: &TrainConfig, model: &EnergyModel, vs: &nn::VarStore) -> Self {
        let trunk = &model.config().trunk;
        let n_layer = trunk.n_layer();
        let Some(top) = cfg.train_blocks else {
            return Self { k: 0, cache: None };
        };
        let k = (n_layer - (top as i64).min(n_layer)) as usize;
        let mut trained: Vec<String> = (k as i64..n_layer).map(|i| trunk.block_prefix(i)).collect();
        trained.push(trunk.final_norm_prefix().to_string());
        trained.extend(HEAD_PREFIXES.iter().map(|p| p.to_string()));
        for (name, t) in vs.variables() {
            if !trained.iter().any(|p| name.starts_with(p.as_str())) {
                let _ = t.set_requires_grad(false);
            }
        }
        Self {
            k,
            cache: (k > 0 && cfg.cache_frozen).then(HashMap::new),
        }
    }

    /// Frozen blocks.
    pub fn blocks(&self) -> usize {
        self.k
    }

    /// Sequences whose frozen output is cached.
    pub fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, HashMap::len)
    }

    /// Energies `[R]` of a right-padded batch `ids`, `mask` `[R, T]`; only its first
    /// `cacheable` rows' frozen outputs are kept.
    pub fn energy(
        &mut self,
        model: &EnergyModel,
        ids: &Tensor,
        mask: &Tensor,
        cacheable: i64,
        train: bool,
    ) -> Tensor {
        let k = self.k;
        if k == 0 {
            return model.energy(ids, mask, train);
        }
        let lower = |ids: &Tensor, mask: &Tensor| {
            tch::no_grad(|| {
                model
                    .trunk()
                    .lower(&model.trunk().embed(ids), mask, k, false)
            })
        };
        let x = match &mut self.cache {
            None => lower(ids, mask),
            Some(cache) => cached_lower(cache, ids, mask, cacheable as usize, lower),
        };
        model.energy_from_lower(&x, ids, mask, k, train)
    }
}

/// The real tokens of each row of a right-padded batch.
fn rows_of(ids: &Tensor, mask: &Tensor) -> Vec<Vec<i64>> {
    let lens: Vec<i64> = Vec::try_from(
        mask.sum_dim_intlist(1, false, Kind::Int64)
            .to_device(tch::Device::Cpu),
    )
    .expect("i64 lengths");
    let ids = ids.to_device(tch::Device::Cpu);
    lens.iter()
        .enumerate()
        .map(|(i, &n)| Vec::try_from(ids.get(i as i64).narrow(0, 0, n)).expect("i64 ids"))
        .collect()
}

/// `[R, T, D]` frozen outputs of a right-padded batch, computing (in one batch) the rows not
/// cached and caching those among the first `cacheable`; padding positions are zero.
fn cached_lower(
    cache: &mut HashMap<Vec<i64>, Tensor>,
    ids: &Tensor,
    mask: &Tensor,
    cacheable: usize,
    lower: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> Tensor {
    let rows = rows_of(ids, mask);
    let missing: Vec<Vec<i64>> = rows
        .iter()
        .filter(|r| !cache.contains_key(*r))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut fresh = HashMap::new();
    if !missing.is_empty() {
        let (m_ids, m_mask) = pad_right(&missing, 0, ids.device());
        let x = lower(&m_ids, &m_mask);
        for (i, row) in missing.into_iter().enumerate() {
            let n = row.len() as i64;
            fresh.insert(row, x.get(i as i64).narrow(0, 0, n).copy());
        }
    }
    let (r, t) = mask.size2().expect("mask is [R, T]");
    let d = x_width(cache, &fresh);
    let out = Tensor::zeros([r, t, d], (Kind::Float, ids.device()));
    for (i, row) in rows.iter().enumerate() {
        let x = cache.get(row).unwrap_or_else(|| &fresh[row]);
        out.get(i as i64).narrow(0, 0, x.size()[0]).copy_(x);
    }
    for row in rows.into_iter().take(cacheable) {
        if let Some(x) = fresh.remove(&row) {
            cache.insert(row, x);
        }
    }
    out
}

/// The width D of the cached or fresh outputs.
fn x_width(cache: &HashMap<Vec<i64>, Tensor>, fresh: &HashMap<Vec<i64>, Tensor>) -> i64 {
    (cache.values().chain(fresh.values()).next()).map_or(0, |x| x.size()[1])
}
