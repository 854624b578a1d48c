//! The dynamic threshold of method §8: keep every content whose similarity reaches
//! `max − margin·max`, at least the best one, at most `cap` (the highest).

/// Default cap on selected contents per topic.
pub const MAX_SELECTED: usize = 128;

/// How many of a ranked list (similarities sorted high to low) are selected.
/// The dynamic threshold's rule in words (the page and the commands print it).
pub fn describe(margin: f32) -> String {
    let m = (margin as f64 * 1e6).round() / 1e6;
    format!("similarity ≥ (1 − {m}) × the best")
}

pub fn selected_len(ranked_sims: &[f32], margin: f32, cap: usize) -> usize {
    let Some(&max) = ranked_sims.first() else {
        return 0;
    };
    let th = max - margin * max;
    // `partition_point` needs the predicate true then false: sims are sorted descending.
    let n = ranked_sims.partition_point(|&s| s >= th);
    n.clamp(1, cap.max(1))
}

/// Indices of the `r` highest values of `row`, sorted high to low (ties: lower index first).
pub fn top_r(row: &[f32], r: usize) -> Vec<(u32, f32)> {
    // A few best of a long row (ranking against a language's contents): one pass with a heap
    // of the r kept so far, instead of materialising and partitioning the whole row.
    if r > 0 && r.saturating_mul(8) < row.len() {
        return top_r_heap(row, r);
    }
    let mut idx: Vec<(u32, f32)> = row
        .iter()
        .enumerate()
        .map(|(i, &s)| (i as u32, s))
        .collect();
    if r < idx.len() {
        idx.select_nth_unstable_by(r, best_first);
        idx.truncate(r);
        // Callers keep these lists: do not hold on to a row-sized buffer per topic.
        idx.shrink_to_fit();
    }
    idx.sort_unstable_by(best_first);
    idx
}

/// Higher similarity first; among equals the lower index.
fn best_first(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Heap order: the worst kept entry on top.
struct Kept(u32, f32);

impl PartialEq for Kept {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Kept {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        best_first(&(self.0, self.1), &(o.0, o.1))
    }
}

fn top_r_heap(row: &[f32], r: usize) -> Vec<(u32, f32)> {
    let mut heap = std::collections::BinaryHeap::with_capacity(r + 1);
    for (i, &s) in row.iter().enumerate() {
        if heap.len() < r {
            heap.push(Kept(i as u32, s));
        } else if let Some(mut worst) = heap.peek_mut() {
            // A later index never beats an equal value: only strictly greater ones enter.
            if s.total_cmp(&worst.1).is_gt() {
                *worst = Kept(i as u32, s);
            }
        }
    }
    let mut out: Vec<(u32, f32)> = heap.into_iter().map(|k| (k.0, k.1)).collect();
    out.sort_unstable_by(best_first);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(row: &[f32], margin: f32, cap: usize) -> Vec<u32> {
        let ranked = top_r(row, row.len());
        let sims: Vec<f32> = ranked.iter().map(|r| r.1).collect();
        let n = selected_len(&sims, margin, cap);
        let mut out: Vec<u32> = ranked[..n].iter().map(|r| r.0).collect();
        out.sort();
        out
    }

    #[test]
    fn threshold_is_relative_to_the_best() {
        // max 0.8, margin 0.25 -> th 0.6
        assert_eq!(
            select(&[0.8, 0.61, 0.6, 0.59, -0.2], 0.25, 128),
            vec![0, 1, 2]
        );
        assert_eq!(select(&[0.8, 0.61, 0.6, 0.59, -0.2], 0.0, 128), vec![0]);
    }

    #[test]
    fn ties_at_the_threshold_are_all_selected() {
        assert_eq!(select(&[0.5, 0.5, 0.5, 0.1], 0.1, 128), vec![0, 1, 2]);
    }

    #[test]
    fn all_equal_rows_select_everything_up_to_the_cap() {
        assert_eq!(select(&[0.3; 6], 0.16, 128), vec![0, 1, 2, 3, 4, 5]);
        // The cap keeps the highest; among equals the lower indices.
        assert_eq!(select(&[0.3; 6], 0.16, 4), vec![0, 1, 2, 3]);
    }

    #[test]
    fn negative_best_still_selects_one() {
        // max −0.2: the formula gives th = −0.16 > max, so only the best is kept.
        assert_eq!(select(&[-0.5, -0.2, -0.3], 0.2, 128), vec![1]);
    }

    #[test]
    fn the_cap_keeps_the_highest() {
        let row: Vec<f32> = (0..300).map(|i| 1.0 - i as f32 * 0.0001).collect();
        let s = select(&row, 0.5, 128);
        assert_eq!(s.len(), 128);
        assert_eq!(s, (0..128).collect::<Vec<u32>>());
    }

    #[test]
    fn heap_and_partition_give_the_same_top() {
        // Coarse values make many ties; both paths must agree on the set and the order.
        let mut x: u64 = 42;
        for len in [50, 300, 2000] {
            let row: Vec<f32> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((x >> 40) % 50) as f32 / 50.0 - 0.3
                })
                .collect();
            for r in [1, 5, 20, 37] {
                let mut all: Vec<(u32, f32)> = row
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (i as u32, s))
                    .collect();
                all.sort_by(best_first);
                all.truncate(r);
                assert_eq!(top_r_heap(&row, r), all, "len {len} r {r}");
                assert_eq!(top_r(&row, r), all, "len {len} r {r}");
            }
        }
    }

    #[test]
    fn top_r_orders_and_truncates() {
        let row = [0.1, 0.9, 0.5, 0.9, -1.0];
        assert_eq!(top_r(&row, 3), vec![(1, 0.9), (3, 0.9), (2, 0.5)]);
        assert!(top_r(&[], 3).is_empty());
        assert_eq!(selected_len(&[], 0.1, 128), 0);
    }
}
