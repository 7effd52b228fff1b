//! REINFORCE leave-one-out (RLOO; Kool et al. 2019, Ahmadian et al. 2024): k samples per prompt,
//! each sample's baseline is the mean reward of the other k − 1, so the advantage needs no value
//! network and stays unbiased. The reward is the energy reward with a KL penalty to the
//! reference policy on the sampled sequence: −E − β·(log π − log π_ref).

/// Leave-one-out advantages of one prompt's k rewards: a_i = r_i − mean_{j≠i} r_j
/// = k/(k−1)·(r_i − mean r). `None` for k < 2 (no baseline exists).
pub fn advantages(rewards: &[f64]) -> Option<Vec<f64>> {
    let k = rewards.len();
    if k < 2 {
        return None;
    }
    let total: f64 = rewards.iter().sum();
    Some(
        rewards
            .iter()
            .map(|&r| r - (total - r) / (k - 1) as f64)
            .collect(),
    )
}

/// Leave-one-out advantages for a flat list of samples grouped by prompt, `k` per prompt in order
/// (the layout `policy::sample` returns). Panics unless the length is a multiple of k ≥ 2.
pub fn grouped_advantages(rewards: &[f64], k: usize) -> Vec<f64> {
    assert!(
        k >= 2 && rewards.len().is_multiple_of(k),
        "RLOO needs k ≥ 2 samples per prompt"
    );
    rewards
        .chunks(k)
        .flat_map(|c| advantages(c).expect("k ≥ 2"))
        .collect()
}

/// The per-sample RLOO reward: `reward` (the energy reward −E) minus β times the sampled
/// sequence's log-ratio log π − log π_ref.
pub fn kl_penalized(reward: f64, logp: f64, logp_ref: f64, beta: f64) -> f64 {
    reward - beta * (logp - logp_ref)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_by_hand() {
        // r = [1, 2, 6]: baselines (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5.
        let a = advantages(&[1.0, 2.0, 6.0]).unwrap();
        assert_eq!(a, vec![-3.0, -1.5, 4.5]);
        // Two samples: ±the difference.
        assert_eq!(advantages(&[-0.5, 0.25]).unwrap(), vec![-0.75, 0.75]);
        // Equal rewards carry no signal.
        assert_eq!(advantages(&[3.0; 4]).unwrap(), vec![0.0; 4]);
        assert_eq!(advantages(&[1.0]), None);
        assert_eq!(advantages(&[]), None);
    }

    #[test]
    fn advantages_sum_to_zero_and_equal_the_scaled_centred_rewards() {
        let r = [0.3, -1.2, 2.5, 0.0, 0.9];
        let a = advantages(&r).unwrap();
        let mean = r.iter().sum::<f64>() / 5.0;
        assert!(a.iter().sum::<f64>().abs() < 1e-12);
        for (ai, ri) in a.iter().zip(r) {
            assert!((ai - 5.0 / 4.0 * (ri - mean)).abs() < 1e-12);
        }
    }

    #[test]
    fn grouped_by_prompt() {
        let a = grouped_advantages(&[1.0, 3.0, 10.0, 10.0], 2);
        assert_eq!(a, vec![-2.0, 2.0, 0.0, 0.0]);
    }

    #[test]
    fn kl_penalty_by_hand() {
        // −E = −0.5, log π − log π_ref = −2 − (−3) = 1, β = 0.1: −0.5 − 0.1 = −0.6.
        assert!((kl_penalized(-0.5, -2.0, -3.0, 0.1) + 0.6).abs() < 1e-12);
        assert_eq!(kl_penalized(-0.5, -2.0, -3.0, 0.0), -0.5);
    }
}
