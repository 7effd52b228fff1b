//! Padding token sequences into `[B, T]` id and mask tensors (1 = real token, 0 = padding).
use tch::{Device, Tensor};

/// Pads on the right: `[B, T]` ids and mask, T the longest sequence.
pub fn pad_right(seqs: &[Vec<i64>], pad: i64, device: Device) -> (Tensor, Tensor) {
    pad_to(seqs, pad, device, false)
}

/// Pads on the left, so every sequence ends at the last column (what generation needs).
pub fn pad_left(seqs: &[Vec<i64>], pad: i64, device: Device) -> (Tensor, Tensor) {
    pad_to(seqs, pad, device, true)
}

fn pad_to(seqs: &[Vec<i64>], pad: i64, device: Device, left: bool) -> (Tensor, Tensor) {
    let b = seqs.len();
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = vec![pad; b * t];
    let mut mask = vec![0i64; b * t];
    for (row, seq) in seqs.iter().enumerate() {
        let start = row * t + if left { t - seq.len() } else { 0 };
        ids[start..start + seq.len()].copy_from_slice(seq);
        mask[start..start + seq.len()].fill(1);
    }
    let shape = [b as i64, t as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_both_sides() {
        let seqs = vec![vec![5, 6, 7], vec![8]];
        let (ids, mask) = pad_left(&seqs, 0, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(ids.view(-1)).unwrap(),
            vec![5, 6, 7, 0, 0, 8]
        );
        assert_eq!(
            Vec::<i64>::try_from(mask.view(-1)).unwrap(),
            vec![1, 1, 1, 0, 0, 1]
        );
        let (ids, mask) = pad_right(&seqs, 9, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(ids.view(-1)).unwrap(),
            vec![5, 6, 7, 8, 9, 9]
        );
        assert_eq!(
            Vec::<i64>::try_from(mask.view(-1)).unwrap(),
            vec![1, 1, 1, 1, 0, 0]
        );
    }
}
