//! One seed reaches every RNG: each consumer derives a ChaCha8 generator from the seed, a
//! stream name and an index (e.g. the sampler's `(prompt_id, k)` or the SFT epoch).
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// FNV-1a of a stream name.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The ChaCha8 seed of stream `name` under `seed` (each index is a stream of that generator).
pub fn key(seed: u64, name: &str) -> u64 {
    seed ^ name_hash(name)
}

/// The generator of stream `name`, index `index`, under `seed`.
pub fn stream(seed: u64, name: &str, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(key(seed, name));
    rng.set_stream(index);
    rng
}

/// A torch seed derived from the same scheme (for dropout and initialisation).
pub fn torch_seed(seed: u64, name: &str, index: u64) -> i64 {
    use rand::Rng;
    (stream(seed, name, index).random::<u64>() >> 1) as i64
}

/// A uniform in the open interval (0, 1) with 53 bits.
pub fn open_uniform(rng: &mut ChaCha8Rng) -> f64 {
    use rand::Rng;
    ((rng.random::<u64>() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: u64 = stream(7, "sample", 3).random();
        assert_eq!(a, stream(7, "sample", 3).random::<u64>());
        assert_ne!(a, stream(7, "sample", 4).random::<u64>());
        assert_ne!(a, stream(7, "sft", 3).random::<u64>());
        assert_ne!(a, stream(8, "sample", 3).random::<u64>());
        let u = open_uniform(&mut stream(0, "x", 0));
        assert!(u > 0.0 && u < 1.0);
    }
}
