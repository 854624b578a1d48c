//! The batch sampler of method §6: no topic twice in a batch, no ground-truth content of a batch
//! topic as another pair's content and no topic whose ground truth is already in the batch (no
//! in-batch false negatives), each pair once per epoch, a stop after `max_rejections` rejected
//! pairs in a row, hard negatives from the last training-set evaluation and missing-pair
//! oversampling.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet, VecDeque};

/// What the last training-set evaluation got wrong.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Feedback {
    /// Contents wrongly selected for a topic, best-scored first.
    pub wrong: HashMap<usize, Vec<usize>>,
    /// True (topic, content) pairs that were not selected.
    pub missing: Vec<(usize, usize)>,
}

pub struct SamplerSettings {
    pub batch_size: usize,
    pub max_rejections: usize,
    pub max_wrong: usize,
    pub hard_negatives: bool,
    pub missing_pairs: bool,
}

/// Training pairs and the ground truth the admission rule needs.
pub struct PairSet {
    pub pairs: Vec<(usize, usize)>,
    pub truth: HashMap<usize, HashSet<usize>>,
    /// Training topics owning each content.
    pub owners: HashMap<usize, Vec<usize>>,
}

impl PairSet {
    pub fn new(pairs: Vec<(usize, usize)>) -> Self {
        let mut truth: HashMap<usize, HashSet<usize>> = HashMap::new();
        let mut owners: HashMap<usize, Vec<usize>> = HashMap::new();
        for &(t, c) in &pairs {
            truth.entry(t).or_default().insert(c);
            owners.entry(c).or_default().push(t);
        }
        PairSet {
            pairs,
            truth,
            owners,
        }
    }
}

struct Batch<'a> {
    set: &'a PairSet,
    pairs: Vec<(usize, usize)>,
    topics: HashSet<usize>,
    contents: HashSet<usize>,
    /// Union of the ground truth of the batch's topics.
    truth: HashSet<usize>,
}

impl<'a> Batch<'a> {
    fn new(set: &'a PairSet) -> Self {
        Batch {
            set,
            pairs: Vec::new(),
            topics: HashSet::new(),
            contents: HashSet::new(),
            truth: HashSet::new(),
        }
    }
    fn fits(&self, t: usize, c: usize) -> bool {
        if self.topics.contains(&t) || self.truth.contains(&c) || self.contents.contains(&c) {
            return false;
        }
        // The reverse direction: none of t's true contents may already be in the batch.
        match self.set.truth.get(&t) {
            Some(gt) => gt.is_disjoint(&self.contents),
            None => true,
        }
    }
    fn admit(&mut self, t: usize, c: usize) {
        self.pairs.push((t, c));
        self.topics.insert(t);
        self.contents.insert(c);
        if let Some(gt) = self.set.truth.get(&t) {
            self.truth.extend(gt.iter().copied());
        }
    }
}

/// Admits (t, c), then the contents wrongly predicted for t, each with a topic owning it.
fn admit_with_negatives(
    batch: &mut Batch,
    used: &mut HashSet<(usize, usize)>,
    (t, c): (usize, usize),
    wrong: Option<&HashMap<usize, Vec<usize>>>,
    s: &SamplerSettings,
    rng: &mut ChaCha8Rng,
) {
    batch.admit(t, c);
    used.insert((t, c));
    let Some(w) = wrong.and_then(|w| w.get(&t)) else {
        return;
    };
    for &wc in w.iter().take(s.max_wrong) {
        if batch.pairs.len() >= s.batch_size {
            break;
        }
        let Some(owners) = batch.set.owners.get(&wc) else {
            continue;
        };
        let owner = owners[rng.gen_range(0..owners.len())];
        if !used.contains(&(owner, wc)) && batch.fits(owner, wc) {
            batch.admit(owner, wc);
            used.insert((owner, wc));
        }
    }
}

/// The batches of one epoch. `epoch` is 1-based: feedback is used from epoch 2 on.
pub fn epoch_batches(
    set: &PairSet,
    feedback: Option<&Feedback>,
    s: &SamplerSettings,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<(usize, usize)>> {
    let mut queue: VecDeque<(usize, usize)> = {
        let mut p = set.pairs.clone();
        p.shuffle(rng);
        p.into()
    };
    let mut missing: VecDeque<(usize, usize)> = feedback
        .filter(|_| s.missing_pairs)
        .map(|f| {
            let mut m = f.missing.clone();
            m.shuffle(rng);
            m.into()
        })
        .unwrap_or_default();
    let wrong = feedback.filter(|_| s.hard_negatives).map(|f| &f.wrong);
    let mut used: HashSet<(usize, usize)> = HashSet::new();
    let mut batches = Vec::new();
    let mut batch = Batch::new(set);
    let mut rejections = 0;
    while let Some((t, c)) = queue.pop_front() {
        if used.contains(&(t, c)) {
            continue;
        }
        if !batch.fits(t, c) {
            queue.push_back((t, c));
            rejections += 1;
            if rejections >= s.max_rejections {
                break;
            }
            continue;
        }
        rejections = 0;
        admit_with_negatives(&mut batch, &mut used, (t, c), wrong, s, rng);
        // Missing pairs: with probability 0.5 per step, one pair the model failed to retrieve.
        if batch.pairs.len() < s.batch_size && !missing.is_empty() && rng.gen_bool(0.5) {
            let (mt, mc) = missing.pop_front().expect("non-empty");
            if !used.contains(&(mt, mc)) && batch.fits(mt, mc) {
                admit_with_negatives(&mut batch, &mut used, (mt, mc), wrong, s, rng);
            } else {
                missing.push_back((mt, mc));
            }
        }
        if batch.pairs.len() >= s.batch_size {
            batches.push(std::mem::take(&mut batch.pairs));
            batch = Batch::new(set);
        }
    }
    if batch.pairs.len() >= 2 {
        batches.push(batch.pairs);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Random pairs with heavy content sharing between topics.
    fn random_set(seed: u64, contents: usize) -> PairSet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut pairs = HashSet::new();
        for t in 0..300 {
            for _ in 0..rng.gen_range(1..6) {
                pairs.insert((t, rng.gen_range(0..contents)));
            }
        }
        let mut v: Vec<_> = pairs.into_iter().collect();
        v.sort();
        PairSet::new(v)
    }

    fn check_invariants(set: &PairSet, batches: &[Vec<(usize, usize)>], b: usize) {
        let mut seen = HashSet::new();
        for batch in batches {
            assert!(batch.len() <= b && batch.len() >= 2);
            let topics: HashSet<usize> = batch.iter().map(|p| p.0).collect();
            assert_eq!(topics.len(), batch.len(), "a topic twice in a batch");
            for &(t, c) in batch {
                assert!(set.truth[&t].contains(&c), "not a true pair");
                assert!(seen.insert((t, c)), "pair used twice in an epoch");
                // No other pair's content is a true content of t (no in-batch false negative).
                for &(t2, c2) in batch {
                    if t2 != t {
                        assert!(
                            !set.truth[&t].contains(&c2),
                            "content {c2} of another pair is a truth of {t}"
                        );
                    }
                }
            }
        }
    }

    fn settings(b: usize) -> SamplerSettings {
        SamplerSettings {
            batch_size: b,
            max_rejections: 512,
            max_wrong: 128,
            hard_negatives: true,
            missing_pairs: true,
        }
    }

    #[test]
    fn batches_have_no_in_batch_false_negatives_and_use_each_pair_once() {
        let set = random_set(1, 400);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let batches = epoch_batches(&set, None, &settings(32), &mut rng);
        check_invariants(&set, &batches, 32);
        let used: usize = batches.iter().map(Vec::len).sum();
        assert!(
            used as f64 > 0.8 * set.pairs.len() as f64,
            "used {used} of {}",
            set.pairs.len()
        );
        // Deterministic for a seed.
        let again = epoch_batches(&set, None, &settings(32), &mut ChaCha8Rng::seed_from_u64(2));
        assert_eq!(batches, again);
    }

    #[test]
    fn rejections_stop_the_epoch() {
        // Every topic owns the same content: only one pair can be in any batch with another
        // topic, so building stalls and stops after max_rejections.
        let pairs: Vec<(usize, usize)> = (0..50).map(|t| (t, 7)).collect();
        let set = PairSet::new(pairs);
        let s = SamplerSettings {
            max_rejections: 10,
            ..settings(8)
        };
        let batches = epoch_batches(&set, None, &s, &mut ChaCha8Rng::seed_from_u64(0));
        assert!(
            batches.is_empty(),
            "a single-pair batch is useless for InfoNCE"
        );
    }

    #[test]
    fn hard_negatives_bring_wrong_contents_into_the_batch() {
        let set = random_set(3, 1500);
        // The model wrongly predicted five contents (owned by other topics) for topic 0.
        let gt0 = &set.truth[&0];
        let mut owned: Vec<usize> = set
            .owners
            .keys()
            .copied()
            .filter(|c| !gt0.contains(c))
            .collect();
        owned.sort();
        let fb = Feedback {
            wrong: HashMap::from([(0, owned[..5].to_vec())]),
            missing: set.pairs.iter().take(20).copied().collect(),
        };
        let meets = |feedback: Option<&Feedback>, seed: u64| {
            let batches = epoch_batches(
                &set,
                feedback,
                &settings(32),
                &mut ChaCha8Rng::seed_from_u64(seed),
            );
            check_invariants(&set, &batches, 32);
            batches.iter().any(|b| {
                b.iter().any(|p| p.0 == 0) && b.iter().any(|p| fb.wrong[&0].contains(&p.1))
            })
        };
        let with = (0..20).filter(|&s| meets(Some(&fb), s)).count();
        let without = (0..20).filter(|&s| meets(None, s)).count();
        assert!(
            with >= 18,
            "topic 0 met its wrong contents in {with} of 20 epochs"
        );
        assert!(without <= 8, "{without} of 20 by chance");
    }
}
