//! The mean cross-entropy of an LM head without its logits: [`chunked_lm_loss`] computes the
//! loss and its gradients a block of rows at a time, so the `[N, V]` logits, log-probabilities
//! and their gradients never exist whole (Liger-Kernel's fused linear cross-entropy, and what
//! TRL and OpenRLHF use for large vocabularies). At SmolLM2's vocabulary (49,152) a batch of
//! 4,096 tokens would otherwise hold several 800 MB tensors.
//!
//! The gradients are computed in the forward pass, block by block, and handed to autograd
//! through a surrogate that is linear in the hidden states and the head: its value is the loss
//! and its gradients are those computed. So the loss may be scaled (averaged over micro-batches)
//! but must not enter the objective non-linearly.
use tch::{Kind, Tensor};

/// Elements of one block of logits (16 MB in fp32): what the chunk loop keeps at a time.
pub const CHUNK_ELEMENTS: i64 = 1 << 22;

/// Mean over the `N` rows of `h` `[N, D]` of `logsumexp(h·Wᵀ) − (h·Wᵀ)[target]`, the head `w`
/// `[V, D]` and `targets` `[N]` (i64); differentiable in `h` and `w` when they require grad.
/// Rows go `max(1, chunk_elements / V)` at a time.
pub fn chunked_lm_loss(h: &Tensor, w: &Tensor, targets: &Tensor, chunk_elements: i64) -> Tensor {
    let (n, _) = h.size2().expect("hidden states are [N, D]");
    let v = w.size()[0];
    let device = h.device();
    let grad = h.requires_grad() || w.requires_grad();
    let rows = (chunk_elements / v).max(1);
    let (total, grads) = tch::no_grad(|| {
        let (h, w) = (h.detach(), w.detach());
        let mut total = Tensor::zeros([], (Kind::Float, device));
        let mut grads = grad.then(|| {
            (
                Tensor::zeros([n, h.size()[1]], (Kind::Float, device)),
                Tensor::zeros([v, w.size()[1]], (Kind::Float, device)),
            )
        });
        for start in (0..n).step_by(rows as usize) {
            let len = rows.min(n - start);
            let hc = h.narrow(0, start, len);
            let tc = targets.narrow(0, start, len).unsqueeze(1); // [C, 1]
            let logits = hc.matmul(&w.tr()).to_kind(Kind::Float); // [C, V]
            let lse = logits.logsumexp([1], true); // [C, 1]
            total += (&lse - logits.gather(1, &tc, false)).sum(Kind::Float);
            if let Some((gh, gw)) = grads.as_mut() {
                // d(mean loss)/d logits = (softmax − one-hot) / N
                let mut g = (logits - &lse).exp();
                let _ =
                    g.scatter_add_(1, &tc, &Tensor::full([len, 1], -1.0, (Kind::Float, device)));
                let _ = g.g_div_scalar_(n as f64);
                // fp32 throughout; under autocast the first product runs in the reduced type
                // (an out-of-place matmul), the in-place accumulation in fp32.
                gh.narrow(0, start, len)
                    .copy_(&g.matmul(&w).to_kind(Kind::Float)); // [C, D]
                let _ = gw.addmm_(&g.tr(), &hc.to_kind(Kind::Float)); // [V, D]
            }
        }
        (total / n as f64, grads)
    });
    let Some((gh, gw)) = grads else {
        return total;
    };
    // Value: the loss. Gradient: gh in h, gw in w.
    let surrogate =
        (h * gh.to_kind(h.kind())).sum(Kind::Float) + (w * gw.to_kind(w.kind())).sum(Kind::Float);
    total + &surrogate - surrogate.detach()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn loss_and_gradients_equal_the_full_cross_entropy() {
        tch::manual_seed(0);
        let (n, d, v) = (13i64, 8i64, 11i64);
        let h0 = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
        let w0 = Tensor::randn([v, d], (Kind::Float, Device::Cpu));
        let targets = Tensor::randint(v, [n], (Kind::Int64, Device::Cpu));
        let leaf = |t: &Tensor| t.detach().copy().set_requires_grad(true);
        let (h1, w1) = (leaf(&h0), leaf(&w0));
        let full = h1.matmul(&w1.tr()).cross_entropy_for_logits(&targets);
        (&full * 3.0).backward();
        // Blocks of 1, 4 and all rows: uneven last blocks included.
        for chunk in [v, 4 * v, 100 * v] {
            let (h2, w2) = (leaf(&h0), leaf(&w0));
            let ours = chunked_lm_loss(&h2, &w2, &targets, chunk);
            let diff = (&ours - &full).abs().double_value(&[]);
            assert!(diff < 1e-5, "chunk {chunk}: loss differs by {diff}");
            (&ours * 3.0).backward(); // a scaled loss scales the gradients
            for (a, b) in [(h1.grad(), h2.grad()), (w1.grad(), w2.grad())] {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "chunk {chunk}: gradient differs by {diff}");
            }
        }
        // Without gradients: the same value, nothing to backpropagate.
        let plain = chunked_lm_loss(&h0, &w0, &targets, v);
        assert!(!plain.requires_grad());
        assert!((plain - full).abs().double_value(&[]) < 1e-5);
    }
}
