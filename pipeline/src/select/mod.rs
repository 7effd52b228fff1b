//! Rank-and-select: the small pure pieces behind `ember rank` and `ember finetune`.
//!
//! - [`bon`]: best-of-n from N ≥ n samples with the unbiased (U-statistic) estimators of the
//!   selected answer's energy, gold and win rate, next to the bounds of Beirami et al. 2024.
//! - [`kl`]: Monte-Carlo KL(π‖π_ref) from sampled answers' log-probs (k1, k3; Schulman 2020).
//! - [`keep`]: which lowest-energy answers a fine-tuning round keeps (`best|below:E|above-median`).
//! - [`rloo`]: REINFORCE leave-one-out advantages (Ahmadian et al. 2024) and the KL-penalised reward.
//! - [`stats`]: means, bootstrap standard errors, share of distinct answers, named RNG streams.
pub mod bon;
pub mod keep;
pub mod kl;
pub mod rloo;
pub mod stats;
