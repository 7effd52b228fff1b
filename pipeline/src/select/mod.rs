//! Rank-and-select: the small pure pieces behind `ember rank` and `ember finetune`.
//!
//! - [`bon`]: best-of-n from N ≥ n samples with the unbiased (U-statistic) estimators of the
//!   selected answer's energy, gold and win rate, next to the bounds of Beirami et al. 2024.
//! - [`kl`]: Monte-Carlo KL(π‖π_ref) from sampled answers' log-probs (k1, k3; Schulman 2020).
//! - [`keep`]: which lowest-energy answers a fine-tuning round keeps (`best|below:E|above-median`).
//! - [`rloo`]: REINFORCE leave-one-out advantages (Ahmadian et al. 2024) and the KL-penalised reward.
//! - [`stats`]: means, bootstrap standard errors, share of distinct answers, named RNG streams.
//! - [`pool`]: N scored samples per prompt (sampling + energies + gold), Parquet I/O.
//! - [`summary`]: the best-of-n table of `ember rank`, aggregated with Polars.
//! - [`heldout`]: the per-round held-out evaluation of `ember finetune`.
//! - [`rounds`]: the resumable training steps of one fine-tuning round (SFT+KL, RLOO).
//! - [`update`]: the fine-tuning losses (SFT with a KL penalty, RLOO policy gradient).
pub mod bon;
pub mod heldout;
pub mod keep;
pub mod kl;
pub mod pool;
pub mod rloo;
pub mod rounds;
pub mod stats;
pub mod summary;
pub mod update;
