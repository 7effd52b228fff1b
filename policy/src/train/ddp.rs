//! Data-parallel training on the default process group ([`crate::dist::group`]), as PyTorch's
//! DDP does it: every rank holds the whole model and optimizer, starts from rank 0's state
//! ([`replicate`]), trains on its shard of each global batch
//! ([`crate::dist::shard`]), and averages gradients before the update
//! ([`crate::dist::ProcessGroup::average_gradients`]), so the replicas stay equal.
//!
//! For the replicas to take the step one process takes on the whole batch, a loss that is a
//! mean over rows (or tokens) must divide by the *global* count: [`global_counts`] gives it.
use tch::{nn, Tensor};

use super::AdamW;
use crate::dist::{DistError, ProcessGroup, Reducer};

/// Makes every rank's variables (trainable or frozen, in name order), optimizer moments and
/// step count rank 0's. Run it after rank 0 resumed from its checkpoint and before the first
/// step.
pub fn replicate(pg: &ProcessGroup, vs: &nn::VarStore, opt: &mut AdamW) -> Result<(), DistError> {
    broadcast_variables(pg, vs)?;
    opt.broadcast_from_root(pg)
}

/// Makes every rank's variables (trainable or frozen, in name order) rank 0's: after a step
/// only rank 0 can take (restoring best weights that only its checkpoint kept).
pub fn broadcast_variables(pg: &ProcessGroup, vs: &nn::VarStore) -> Result<(), DistError> {
    let mut vars = vs.variables().into_iter().collect::<Vec<_>>();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let vars: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
    pg.broadcast_parameters(&vars)
}

/// The normalisers a rank's loss divides by so that the ranks' averaged gradients equal one
/// process's on the whole batch: the counts summed over the ranks, divided by the world size
/// (each rank's mean is then `sum_local / (n_global / world)`, and averaging over the ranks
/// gives `sum_global / n_global`). `counts` is a float tensor of any shape, on any device.
pub fn global_counts(pg: &ProcessGroup, counts: &Tensor) -> Result<Tensor, DistError> {
    let summed = counts.detach().to_device(tch::Device::Cpu).contiguous();
    pg.all_reduce_sum(&summed)?;
    Ok((summed / pg.world_size() as f64).to_device(counts.device()))
}

/// How a data-parallel loop averages its gradients over the default group: during the backward
/// pass ([`Reducer`]), unless `EMBER_DIST_OVERLAP=0` ([`crate::dist::overlap`]), then after it
/// ([`ProcessGroup::average_gradients`]); alone, not at all. Both give the same bits.
pub struct Averager {
    group: Option<&'static ProcessGroup>,
    reducer: Option<Reducer<'static>>,
}

impl Averager {
    /// For the trainable tensors of `params` (an optimizer's).
    pub fn new(params: &[Tensor]) -> Result<Self, DistError> {
        let group = crate::dist::group();
        let reducer = (group.filter(|_| crate::dist::overlap()))
            .map(|g| Reducer::new(g, params))
            .transpose()?;
        Ok(Self { group, reducer })
    }

    /// Before the backward pass whose accumulated gradients are to be averaged (the last
    /// micro-batch's).
    pub fn arm(&self) {
        if let Some(r) = &self.reducer {
            r.arm();
        }
    }

    /// After that backward pass: every rank's gradients of `params` are their mean.
    pub fn finish(&self, params: &[Tensor]) -> Result<(), DistError> {
        match (&self.reducer, self.group) {
            (Some(r), _) => r.finish(),
            (None, Some(g)) => g.average_gradients(params),
            (None, None) => Ok(()),
        }
    }
}
