//! The safe wrapper around `csrc/ext.cpp`, the C++ shim over libtorch functions tch does not wrap:
//! the fused AdamW kernel and the multi-tensor (foreach) norm and scaling, which
//! `torch.optim.AdamW(fused=True)` and `torch.nn.utils.clip_grad_norm_` use. Compiled by
//! `build.rs` with `cc` against the headers of the libtorch tch links.
//!
//! A libtorch error comes back as [`ExtError`] carrying its message; no C++ exception crosses
//! into Rust.
use std::ffi::{c_char, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

/// What libtorch refused, with its message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct ExtError(pub String);

type Handle = *const C_tensor;

extern "C" {
    fn ember_ext_free(message: *mut c_char);
    fn ember_fused_adamw(
        params: *const Handle,
        grads: *const Handle,
        exp_avg: *const Handle,
        exp_avg_sq: *const Handle,
        steps: *const Handle,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    fn ember_foreach_global_norm(
        tensors: *const Handle,
        n: usize,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn ember_foreach_mul_(tensors: *const Handle, n: usize, scale: Handle) -> *mut c_char;
}

/// A status returned by any of the shim's functions (here and in [`crate::dist`]): `None` for
/// null (success), else its message, freed here.
pub(crate) fn take_message(message: *mut c_char) -> Option<String> {
    if message.is_null() {
        return None;
    }
    // SAFETY: a non-null status is a NUL-terminated string malloc'd by the shim, freed once here.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    unsafe { ember_ext_free(message) };
    Some(text)
}

/// Frees a buffer the shim malloc'd and handed over.
///
/// # Safety
/// `ptr` came from the shim's `malloc` and is freed once.
pub(crate) unsafe fn free(ptr: *mut u8) {
    unsafe { ember_ext_free(ptr.cast()) }
}

fn status(message: *mut c_char) -> Result<(), ExtError> {
    take_message(message).map_or(Ok(()), |m| Err(ExtError(m)))
}

fn handles<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Vec<Handle> {
    tensors.into_iter().map(Tensor::as_ptr).collect()
}

/// The tensors of one fused AdamW call, index-aligned: parameter, gradient, first and second
/// moment, and the step count (a float scalar tensor on the parameter's device, the count after
/// this update).
pub struct AdamwGroup<'a> {
    pub params: Vec<&'a Tensor>,
    pub grads: Vec<&'a Tensor>,
    pub exp_avg: Vec<&'a Tensor>,
    pub exp_avg_sq: Vec<&'a Tensor>,
    pub steps: Vec<&'a Tensor>,
}

/// One AdamW update of every tensor of `group` in place with libtorch's fused kernel
/// (`at::_fused_adamw_`, CPU and CUDA): decoupled weight decay `weight_decay`, bias-corrected
/// moments, as `torch.optim.AdamW(fused=True)`.
pub fn fused_adamw(
    group: &AdamwGroup,
    lr: f64,
    betas: (f64, f64),
    weight_decay: f64,
    eps: f64,
) -> Result<(), ExtError> {
    let n = group.params.len();
    let lists = [
        &group.grads,
        &group.exp_avg,
        &group.exp_avg_sq,
        &group.steps,
    ];
    if lists.iter().any(|l| l.len() != n) {
        return Err(ExtError(
            "fused AdamW needs as many gradients, moments and steps as parameters".into(),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let [p, g, m, v, s] = [
        &group.params,
        &group.grads,
        &group.exp_avg,
        &group.exp_avg_sq,
        &group.steps,
    ]
    .map(|l| handles(l.iter().copied()));
    // SAFETY: five arrays of n live tensor handles, borrowed for the call; the kernel updates
    // parameters and moments in place and keeps no reference.
    status(unsafe {
        ember_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            lr,
            betas.0,
            betas.1,
            weight_decay,
            eps,
        )
    })
}

/// The global L2 norm of `tensors` (a scalar tensor on their device) from one multi-tensor norm
/// kernel (`at::_foreach_norm`) instead of one kernel per tensor.
pub fn global_norm(tensors: &[Tensor]) -> Result<Tensor, ExtError> {
    let h = handles(tensors);
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: n live handles borrowed for the call; on success `out` is a new tensor we own.
    status(unsafe { ember_foreach_global_norm(h.as_ptr(), h.len(), &mut out) })?;
    // SAFETY: `out` was allocated by the shim as a new `at::Tensor` and is owned from here.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Multiplies every tensor of `tensors` in place by the scalar tensor `scale` (on their device:
/// no host sync), in one multi-tensor kernel (`at::_foreach_mul_`).
pub fn mul_(tensors: &[Tensor], scale: &Tensor) -> Result<(), ExtError> {
    let h = handles(tensors);
    // SAFETY: n live handles and the scale, borrowed for the call.
    status(unsafe { ember_foreach_mul_(h.as_ptr(), h.len(), scale.as_ptr()) })
}
