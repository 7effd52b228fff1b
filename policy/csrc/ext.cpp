// What Ember needs from libtorch that tch 0.24 does not wrap, behind a C ABI: the fused AdamW
// kernel and the multi-tensor (foreach) norm and scaling that gradient clipping uses, as
// torch.optim.AdamW(fused=True) and torch.nn.utils.clip_grad_norm_ call them.
//
// Tensors cross as tch's handles (`at::Tensor*`). Every function returns nullptr on success or
// a message (malloc'd; free it with ember_ext_free) naming what libtorch refused: a C++
// exception never crosses into Rust.
#include <cstdlib>
#include <vector>

#include "guard.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/stack.h>

namespace {

std::vector<at::Tensor> list(const at::Tensor* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

}  // namespace

extern "C" {

void ember_ext_free(char* message) { std::free(message); }

// One AdamW step over n parameters (in place): at::_fused_adamw_ with the moments `exp_avg`,
// `exp_avg_sq` and `steps` (one float scalar tensor per parameter, the step count after this
// update, as torch.optim.AdamW increments it before the kernel runs).
char* ember_fused_adamw(const at::Tensor* const* params, const at::Tensor* const* grads,
                        const at::Tensor* const* exp_avg, const at::Tensor* const* exp_avg_sq,
                        const at::Tensor* const* steps, size_t n, double lr, double beta1,
                        double beta2, double weight_decay, double eps) {
  return ember::guarded([&] {
    auto p = list(params, n), g = list(grads, n), m = list(exp_avg, n), v = list(exp_avg_sq, n),
         s = list(steps, n);
    at::_fused_adamw_(p, g, m, v, {}, s, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  });
}

// The global L2 norm of n tensors, written to *out (a new float scalar tensor the caller owns).
char* ember_foreach_global_norm(const at::Tensor* const* tensors, size_t n, at::Tensor** out) {
  return ember::guarded([&] {
    auto norms = at::_foreach_norm(list(tensors, n), 2);
    *out = new at::Tensor(at::stack(norms).norm());
  });
}

// Multiplies n tensors in place by `scale` (a scalar tensor on their device: no host sync).
char* ember_foreach_mul_(const at::Tensor* const* tensors, size_t n, const at::Tensor* scale) {
  return ember::guarded([&] {
    auto t = list(tensors, n);
    at::_foreach_mul_(t, *scale);
  });
}

}  // extern "C"
