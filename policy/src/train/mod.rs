//! The training-loop toolkit shared by SFT ([`crate::sft`]), the reward trainer and policy
//! fine-tuning, one piece per file:
//! - [`optim`]: [`OptimConfig`], the warmup + cosine schedule [`lr_at`], global-norm
//!   [`clip_grad_norm`] and [`AdamW`] (Loshchilov & Hutter 2019) with exportable moments;
//! - [`lm_loss`]: [`chunked_lm_loss`], the LM head's cross-entropy a block of rows at a time,
//!   without the `[N, V]` logits;
//! - [`checkpoint`]: atomic checkpoints of weights, moments and a JSON state
//!   ([`save_checkpoint`], [`load_checkpoint`]);
//! - [`sampler`]: the seeded [`EpochSampler`], whose batch of any step is known without replay;
//! - [`metrics`]: [`MetricsLog`], the JSONL log cut back to a resumed step (or round);
//! - [`cadence`]: when to validate and checkpoint ([`eval_due`], [`checkpoint_due`]);
//! - [`nonfinite`]: the one policy for non-finite losses: a non-finite loss or gradient norm
//!   skips its step with a warning (nothing is updated; the step still counts), and
//!   [`NONFINITE_LIMIT`] such steps in a row stop the run with [`NonFinite`], which says
//!   whether a checkpoint exists to resume from. Runs with finite losses never meet it.
//!
//! A loop built from these resumes bit-exactly: batch order and dropout are pure functions of
//! (seed, step), and the checkpoint holds the weights and the optimizer moments.
pub mod cadence;
pub mod checkpoint;
pub mod ddp;
pub mod lm_loss;
pub mod metrics;
pub mod nonfinite;
pub mod optim;
pub mod sampler;

pub use cadence::{checkpoint_due, eval_due};
pub use checkpoint::{load_checkpoint, save_checkpoint};
pub use ddp::{global_counts, replicate, Averager};
pub use lm_loss::chunked_lm_loss;
pub use metrics::MetricsLog;
pub use nonfinite::{NonFinite, NonFiniteGuard, NONFINITE_LIMIT};
pub use optim::{clip_grad_norm, clip_grad_norm_with, lr_at, AdamW, OptimConfig};
pub use sampler::EpochSampler;
