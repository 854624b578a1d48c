//! Learning rate: linear warm-up from 0, then polynomial decay to `lr_end` at the last step
//! (method §7); and the language-pool schedule of method §6.

/// Learning rate at optimizer step `step` (0-based) of `total` steps.
pub fn learning_rate(
    step: usize,
    total: usize,
    warmup: usize,
    lr: f64,
    lr_end: f64,
    power: f64,
) -> f64 {
    if step < warmup {
        return lr * step as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    lr_end + (lr - lr_end) * (1.0 - progress).powf(power)
}

/// The pool used in epoch `epoch` (1-based): epoch 1 uses pool 0; after epoch e (while
/// e < `until`) the next is 0 when e is even, else the next of the available pools in turn.
pub fn pool_for_epoch(epoch: usize, until: usize, pools: &[usize]) -> usize {
    if epoch <= 1 || pools.is_empty() {
        return 0;
    }
    let e = epoch - 1; // the epoch that just finished
    if e >= until || e.is_multiple_of(2) {
        return 0;
    }
    pools[((e - 1) / 2) % pools.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_polynomial_decay() {
        let f = |s| learning_rate(s, 100, 10, 2e-4, 5e-5, 1.5);
        assert_eq!(f(0), 0.0);
        assert!((f(5) - 1e-4).abs() < 1e-15);
        assert!((f(10) - 2e-4).abs() < 1e-15);
        // Half-way through the decay: lr_end + (lr − lr_end)·0.5^1.5
        let want = 5e-5 + 1.5e-4 * 0.5f64.powf(1.5);
        assert!((f(55) - want).abs() < 1e-15);
        assert!((f(100) - 5e-5).abs() < 1e-15);
        assert!((f(1000) - 5e-5).abs() < 1e-15);
    }

    #[test]
    fn pools_alternate_with_the_original_then_cycle() {
        let p: Vec<usize> = (1..=10)
            .map(|e| pool_for_epoch(e, 36, &[1, 2, 3]))
            .collect();
        assert_eq!(p, vec![0, 1, 0, 2, 0, 3, 0, 1, 0, 2]);
        assert_eq!(pool_for_epoch(38, 36, &[1, 2, 3]), 0);
        assert_eq!(pool_for_epoch(2, 36, &[]), 0);
    }
}
