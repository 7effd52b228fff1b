//! Gradient averaging overlapped with the backward pass, as PyTorch DDP's reducer does it
//! (Li et al. 2020, "PyTorch Distributed", §3.2): the trainable parameters are grouped into
//! buckets of at most [`super::group::BUCKET_BYTES`], in reverse order (the backward pass
//! produces the last layers' gradients first); a hook after each parameter's gradient
//! accumulation counts it ready, and a bucket whose parameters are all ready starts its
//! all-reduce at once, while the backward pass goes on. Buckets start in their fixed order on
//! every rank (collectives must match), and [`Reducer::finish`] waits for them and writes the
//! means back. The sums are element-wise, so the result is the same, bit for bit, as
//! [`ProcessGroup::average_gradients`] after the backward pass.
use std::ffi::{c_char, c_void};
use std::sync::Mutex;

use tch::Tensor;
use torch_sys::C_tensor;

use super::group::{nbytes, BUCKET_BYTES};
use super::{DistError, ProcessGroup};

extern "C" {
    fn ember_pg_allreduce_sum_async(
        group: *mut c_void,
        tensor: *const C_tensor,
        work: *mut *mut c_void,
    ) -> *mut c_char;
    fn ember_work_wait(group: *mut c_void, work: *mut c_void) -> *mut c_char;
    fn ember_grad_hook(
        param: *const C_tensor,
        on_ready: extern "C" fn(*mut c_void, usize),
        ctx: *mut c_void,
        index: usize,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn ember_grad_hook_free(hook: *mut c_void);
}

/// One bucket: its parameters (indices into the reducer's), how many are not ready yet, and
/// its flat all-reduce once started.
struct Bucket {
    params: Vec<usize>,
    pending: usize,
    flat: Option<Tensor>,
    work: Option<*mut c_void>,
}

/// What the hooks update, behind the reducer's lock.
struct State<'g> {
    group: &'g ProcessGroup,
    params: Vec<Tensor>,
    bucket_of: Vec<usize>,
    buckets: Vec<Bucket>,
    /// The next bucket to start: buckets start in order.
    next: usize,
    /// Whether the backward pass under way is the one to average (the last micro-batch's).
    armed: bool,
    /// The first failure inside a hook, reported by `finish`.
    error: Option<DistError>,
}

// SAFETY: the raw work handles are c10d Work objects, which may be waited on from any thread;
// the state is only touched under the reducer's mutex.
unsafe impl Send for State<'_> {}

/// Averages the gradients of `params` over the ranks of a group while the backward pass runs.
/// [`Reducer::arm`] before the backward pass whose gradients are to be averaged,
/// [`Reducer::finish`] after it.
pub struct Reducer<'g> {
    /// Freed first (fields drop in order): no hook may call into a freed state.
    hooks: Vec<*mut c_void>,
    state: Box<Mutex<State<'g>>>,
}

impl<'g> Reducer<'g> {
    /// Hooks every trainable tensor of `params` (in order; the others are left alone).
    pub fn new(group: &'g ProcessGroup, params: &[Tensor]) -> Result<Self, DistError> {
        let params: Vec<Tensor> = (params.iter())
            .filter(|p| p.requires_grad())
            .map(Tensor::shallow_clone)
            .collect();
        let (buckets, bucket_of) = plan(&params);
        let hooked: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
        let state = Box::new(Mutex::new(State {
            group,
            params,
            bucket_of,
            buckets,
            next: 0,
            armed: false,
            error: None,
        }));
        let mut reducer = Self {
            hooks: Vec::new(),
            state,
        };
        let ctx = &*reducer.state as *const Mutex<State<'g>> as *mut c_void;
        for (i, p) in hooked.iter().enumerate() {
            let mut hook = std::ptr::null_mut();
            // SAFETY: a live tensor handle, a callback that outlives the hook (a plain fn), a
            // context that outlives it (the boxed state, freed after the hooks) and an out
            // pointer for the new hook.
            let err = unsafe { ember_grad_hook(p.as_ptr(), on_ready, ctx, i, &mut hook) };
            group.done("registering a gradient hook", err)?;
            reducer.hooks.push(hook);
        }
        Ok(reducer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<'g>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next backward pass's accumulated gradients are the ones to average.
    pub fn arm(&self) {
        self.lock().armed = true;
    }

    /// Starts what the hooks could not (none, when every parameter got its gradient), waits for
    /// every bucket and replaces each gradient by its mean over the ranks. Every trainable
    /// parameter must have a gradient (every rank must use every one).
    pub fn finish(&self) -> Result<(), DistError> {
        let mut st = self.lock();
        st.armed = false;
        let result = st.finish();
        st.reset();
        result
    }
}

impl State<'_> {
    fn finish(&mut self) -> Result<(), DistError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if let Some(b) = self.buckets.get(self.next) {
            let missing = b.params.iter().find(|&&i| !self.params[i].grad().defined());
            let (rank, i) = (self.group.rank(), missing.copied().unwrap_or(b.params[0]));
            return Err(DistError::Collective {
                op: "average_gradients",
                message: format!(
                    "parameter {i} has no gradient on rank {rank}: every rank must use every trainable parameter"
                ),
            });
        }
        let world = self.group.world_size() as f64;
        let _guard = tch::no_grad_guard();
        for b in &mut self.buckets {
            let (flat, work) = (b.flat.take(), b.work.take());
            let (Some(flat), Some(work)) = (flat, work) else {
                continue;
            };
            // SAFETY: a live group handle and a pending work handle this bucket started; the
            // call frees it.
            let err = unsafe { ember_work_wait(self.group.handle(), work) };
            self.group.done("average_gradients", err)?;
            let flat = flat / world;
            let mut offset = 0;
            for &i in &b.params {
                let mut g = self.params[i].grad();
                let n = g.numel() as i64;
                g.copy_(&flat.narrow(0, offset, n).view_as(&g));
                offset += n;
            }
        }
        Ok(())
    }

    /// Ready for the next armed backward pass.
    fn reset(&mut self) {
        for b in &mut self.buckets {
            b.pending = b.params.len();
            b.flat = None;
            if let Some(work) = b.work.take() {
                // A bucket started but not waited for (an error before it): wait, to free it.
                // SAFETY: as in `finish`.
                let _ = unsafe { ember_work_wait(self.group.handle(), work) };
            }
        }
        self.next = 0;
    }

    /// Parameter `i`'s gradient is accumulated: starts every bucket, in order, that is ready.
    fn ready(&mut self, i: usize) {
        if !self.armed || self.error.is_some() {
            return;
        }
        let b = self.bucket_of[i];
        self.buckets[b].pending = self.buckets[b].pending.saturating_sub(1);
        while self.next < self.buckets.len() && self.buckets[self.next].pending == 0 {
            if let Err(e) = self.start(self.next) {
                self.error = Some(e);
                return;
            }
            self.next += 1;
        }
    }

    fn start(&mut self, b: usize) -> Result<(), DistError> {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = (self.buckets[b].params.iter())
            .map(|&i| self.params[i].grad().reshape([-1]))
            .collect();
        let flat = Tensor::cat(&grads, 0);
        let mut work = std::ptr::null_mut();
        // SAFETY: a live group handle, a live tensor (kept in the bucket until the work is
        // waited for) and an out pointer for the work.
        let err =
            unsafe { ember_pg_allreduce_sum_async(self.group.handle(), flat.as_ptr(), &mut work) };
        self.group.done("average_gradients", err)?;
        self.buckets[b].flat = Some(flat);
        self.buckets[b].work = Some(work);
        Ok(())
    }
}

/// The hooks' entry: never unwinds into C++.
extern "C" fn on_ready(ctx: *mut c_void, index: usize) {
    // SAFETY: ctx is the reducer's boxed state, alive while its hooks are registered.
    let state = unsafe { &*(ctx as *const Mutex<State<'_>>) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        state.lock().unwrap_or_else(|e| e.into_inner()).ready(index);
    }));
}

impl Drop for Reducer<'_> {
    fn drop(&mut self) {
        for hook in self.hooks.drain(..) {
            // SAFETY: a hook this reducer registered, freed once.
            unsafe { ember_grad_hook_free(hook) };
        }
    }
}

/// Buckets of at most BUCKET_BYTES (one kind and device each) over the parameters in reverse
/// order, and each parameter's bucket.
fn plan(params: &[Tensor]) -> (Vec<Bucket>, Vec<usize>) {
    let mut buckets: Vec<Bucket> = Vec::new();
    let mut bucket_of = vec![0; params.len()];
    let mut bytes = 0;
    for i in (0..params.len()).rev() {
        let p = &params[i];
        let fits = buckets.last().is_some_and(|b: &Bucket| {
            let first = &params[b.params[0]];
            first.kind() == p.kind()
                && first.device() == p.device()
                && bytes + nbytes(p) <= BUCKET_BYTES
        });
        if !fits {
            buckets.push(Bucket {
                params: Vec::new(),
                pending: 0,
                flat: None,
                work: None,
            });
            bytes = 0;
        }
        let b = buckets.last_mut().expect("pushed above");
        b.params.push(i);
        b.pending += 1;
        bytes += nbytes(p);
        bucket_of[i] = buckets.len() - 1;
    }
    (buckets, bucket_of)
}
