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

/// Hard negatives per topic: the curators' rejections (every epoch, all of them) and the
/// contents the last training-set evaluation wrongly selected (when enabled).
pub struct Negatives<'a> {
    pub curated: &'a HashMap<usize, Vec<usize>>,
    pub wrong: Option<&'a HashMap<usize, Vec<usize>>>,
}

impl Negatives<'_> {
    /// t's negatives in order: rejected ones first, then up to `max_wrong` wrong ones.
    fn of(&self, t: usize, max_wrong: usize) -> Vec<usize> {
        let mut out: Vec<usize> = self.curated.get(&t).cloned().unwrap_or_default();
        if let Some(w) = self.wrong.and_then(|w| w.get(&t)) {
            let wrong = w.iter().filter(|c| !out.contains(c)).take(max_wrong);
            out.extend(wrong.copied().collect::<Vec<_>>());
        }
        out
    }
}

/// Admits (t, c), then t's hard negatives, each through a topic owning it: the first owner,
/// from a random start, whose pair is still unused this epoch and fits the batch.
fn admit_with_negatives(
    batch: &mut Batch,
    used: &mut HashSet<(usize, usize)>,
    (t, c): (usize, usize),
    negatives: &Negatives,
    s: &SamplerSettings,
    rng: &mut ChaCha8Rng,
) {
    batch.admit(t, c);
    used.insert((t, c));
    for wc in negatives.of(t, s.max_wrong) {
        if batch.pairs.len() >= s.batch_size {
            break;
        }
        let Some(owners) = batch.set.owners.get(&wc) else {
            continue;
        };
        let start = rng.gen_range(0..owners.len());
        let owner = (0..owners.len())
            .map(|i| owners[(start + i) % owners.len()])
            .find(|&o| !used.contains(&(o, wc)) && batch.fits(o, wc));
        if let Some(o) = owner {
            batch.admit(o, wc);
            used.insert((o, wc));
        }
    }
}

/// Curators' rejections of training topics not yet admitted this epoch ("pending"). A
/// pending topic waits for a batch with room for its rejections and none of them a truth of a
/// topic already there (at the latest, the next batch's start); the pairs of the contents it
/// rejected wait until it is admitted, so each rejection has an unused pair to bring it in.
struct Awaited<'a> {
    curated: &'a HashMap<usize, Vec<usize>>,
    /// Pending topics per rejected content.
    by_content: HashMap<usize, usize>,
    pending: HashSet<usize>,
}

impl<'a> Awaited<'a> {
    fn new(set: &PairSet, curated: &'a HashMap<usize, Vec<usize>>) -> Self {
        let mut by_content = HashMap::new();
        let mut pending = HashSet::new();
        for (&t, cs) in curated {
            if !set.truth.contains_key(&t) {
                continue; // not a training topic: never admitted
            }
            pending.insert(t);
            for c in cs.iter().filter(|c| set.owners.contains_key(c)) {
                *by_content.entry(*c).or_insert(0) += 1;
            }
        }
        Awaited {
            curated,
            by_content,
            pending,
        }
    }
    /// A pair owning a content that a pending topic rejected (and not itself of such a topic).
    fn holds_pair(&self, t: usize, c: usize) -> bool {
        !self.pending.contains(&t) && self.by_content.contains_key(&c)
    }
    /// A pending topic whose rejections could not all join this batch with its pair (t, c).
    fn holds_topic(
        &self,
        (t, c): (usize, usize),
        batch: &Batch,
        used: &HashSet<(usize, usize)>,
        batch_size: usize,
    ) -> bool {
        if !self.pending.contains(&t) {
            return false;
        }
        let rejected: Vec<usize> = self.curated[&t]
            .iter()
            .copied()
            .filter(|c| batch.set.owners.contains_key(c))
            .collect();
        if batch.pairs.len() + 1 + rejected.len().min(batch_size - 1) > batch_size {
            return true;
        }
        let gt = batch.set.truth.get(&t);
        // Whether some unused pair (o, wc) fits the batch once (t, c) is in it.
        let joins = |wc: usize| {
            if batch.contents.contains(&wc) {
                return true; // already there as another pair's content
            }
            if wc == c || batch.truth.contains(&wc) || gt.is_some_and(|g| g.contains(&wc)) {
                return false;
            }
            batch.set.owners[&wc].iter().any(|&o| {
                o != t
                    && !used.contains(&(o, wc))
                    && !batch.topics.contains(&o)
                    && batch.set.truth[&o].is_disjoint(&batch.contents)
                    && !batch.set.truth[&o].contains(&c)
            })
        };
        !rejected.into_iter().all(joins)
    }
    fn admitted(&mut self, t: usize) {
        if !self.pending.remove(&t) {
            return;
        }
        for c in self.curated.get(&t).into_iter().flatten() {
            if let Some(n) = self.by_content.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    self.by_content.remove(c);
                }
            }
        }
    }
}

/// One epoch's batch building: the queue of pairs, the batch being filled and what was used.
struct Builder<'a> {
    set: &'a PairSet,
    s: &'a SamplerSettings,
    negatives: Negatives<'a>,
    awaited: Awaited<'a>,
    /// Pairs of pending topics that did not suit the batch they came to.
    waiting: VecDeque<(usize, usize)>,
    used: HashSet<(usize, usize)>,
    batch: Batch<'a>,
    batches: Vec<Vec<(usize, usize)>>,
}

impl Builder<'_> {
    fn admit(&mut self, (t, c): (usize, usize), rng: &mut ChaCha8Rng) {
        admit_with_negatives(
            &mut self.batch,
            &mut self.used,
            (t, c),
            &self.negatives,
            self.s,
            rng,
        );
        self.awaited.admitted(t);
    }
    /// Whether (t, c) can join the batch now.
    fn admissible(&self, (t, c): (usize, usize)) -> bool {
        !self.used.contains(&(t, c))
            && self.batch.fits(t, c)
            && !self
                .awaited
                .holds_topic((t, c), &self.batch, &self.used, self.s.batch_size)
    }
    /// A fresh batch starts with the waiting pairs that suit it.
    fn start_batch(&mut self, rng: &mut ChaCha8Rng) {
        for _ in 0..self.waiting.len() {
            let p = self.waiting.pop_front().expect("counted");
            if self.used.contains(&p) {
                continue;
            }
            // In an empty batch, a topic whose rejections can never join goes in regardless.
            let alone = self.batch.pairs.is_empty() && self.batch.fits(p.0, p.1);
            if self.batch.pairs.len() < self.s.batch_size && (alone || self.admissible(p)) {
                self.admit(p, rng);
            } else {
                self.waiting.push_back(p);
            }
        }
    }
    /// Closes the batch when full, or when `force` and it has the two pairs InfoNCE needs.
    /// The next batch starts with waiting pairs, which may fill it too: close until one has
    /// room.
    fn close_batch(&mut self, mut force: bool, rng: &mut ChaCha8Rng) {
        loop {
            let n = self.batch.pairs.len();
            if n < self.s.batch_size && !(force && n >= 2) {
                return;
            }
            self.batches.push(std::mem::take(&mut self.batch.pairs));
            self.batch = Batch::new(self.set);
            self.start_batch(rng);
            force = false;
        }
    }
}

/// The batches of one epoch. `feedback` (the last training-set evaluation) is given from
/// epoch 2 on; `curated` holds the curators' rejected contents per topic, used every epoch.
pub fn epoch_batches(
    set: &PairSet,
    feedback: Option<&Feedback>,
    curated: &HashMap<usize, Vec<usize>>,
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
    let mut b = Builder {
        set,
        s,
        negatives: Negatives {
            curated,
            wrong: feedback.filter(|_| s.hard_negatives).map(|f| &f.wrong),
        },
        awaited: Awaited::new(set, curated),
        waiting: VecDeque::new(),
        used: HashSet::new(),
        batch: Batch::new(set),
        batches: Vec::new(),
    };
    let mut rejections = 0;
    while let Some((t, c)) = queue.pop_front() {
        if b.used.contains(&(t, c)) {
            continue;
        }
        if b.batch.fits(t, c)
            && b.awaited
                .holds_topic((t, c), &b.batch, &b.used, s.batch_size)
        {
            b.waiting.push_back((t, c));
            continue;
        }
        if !b.batch.fits(t, c) || b.awaited.holds_pair(t, c) {
            queue.push_back((t, c));
            rejections += 1;
            if rejections >= s.max_rejections {
                break;
            }
            continue;
        }
        rejections = 0;
        b.admit((t, c), rng);
        // Missing pairs: with probability 0.5 per step, one pair the model failed to retrieve.
        if b.batch.pairs.len() < s.batch_size && !missing.is_empty() && rng.gen_bool(0.5) {
            let p = missing.pop_front().expect("non-empty");
            if b.admissible(p) && !b.awaited.holds_pair(p.0, p.1) {
                b.admit(p, rng);
            } else {
                missing.push_back(p);
            }
        }
        b.close_batch(false, rng);
    }
    // Pending topics still waiting get a batch of their own.
    if !b.waiting.is_empty() {
        b.close_batch(true, rng);
        if b.batch.pairs.is_empty() {
            b.start_batch(rng);
        }
    }
    if b.batch.pairs.len() >= 2 {
        b.batches.push(b.batch.pairs);
    }
    b.batches
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

    fn none() -> HashMap<usize, Vec<usize>> {
        HashMap::new()
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
        let batches = epoch_batches(&set, None, &none(), &settings(32), &mut rng);
        check_invariants(&set, &batches, 32);
        let used: usize = batches.iter().map(Vec::len).sum();
        assert!(
            used as f64 > 0.8 * set.pairs.len() as f64,
            "used {used} of {}",
            set.pairs.len()
        );
        // Deterministic for a seed.
        let again = epoch_batches(
            &set,
            None,
            &none(),
            &settings(32),
            &mut ChaCha8Rng::seed_from_u64(2),
        );
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
        let batches = epoch_batches(&set, None, &none(), &s, &mut ChaCha8Rng::seed_from_u64(0));
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
                &none(),
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

    #[test]
    fn curated_rejections_meet_their_topic_every_epoch() {
        let set = random_set(5, 1500);
        // Ten topics, each rejecting two contents that other topics own and that clash with
        // none of its own links.
        let mut contents: Vec<usize> = set.owners.keys().copied().collect();
        contents.sort();
        let mut curated: HashMap<usize, Vec<usize>> = HashMap::new();
        for t in (0..300).step_by(30) {
            let gt = &set.truth[&t];
            let ok: Vec<usize> = contents
                .iter()
                .copied()
                .filter(|c| {
                    !gt.contains(c)
                        && set.owners[c]
                            .iter()
                            .any(|o| *o != t && set.truth[o].is_disjoint(gt))
                })
                .skip(t)
                .take(2)
                .collect();
            curated.insert(t, ok);
        }
        // A rejection that can never join (a truth of its own topic) does not starve the topic.
        let own = *set.truth[&155].iter().min().unwrap();
        curated.insert(155, vec![own]);
        let met = |batches: &[Vec<(usize, usize)>]| -> usize {
            curated
                .iter()
                .flat_map(|(t, cs)| cs.iter().map(move |c| (*t, *c)))
                .filter(|(t, c)| {
                    batches
                        .iter()
                        .any(|b| b.iter().any(|p| p.0 == *t) && b.iter().any(|p| p.1 == *c))
                })
                .count()
        };
        let mut without = 0;
        for seed in 0..10 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let batches = epoch_batches(&set, None, &curated, &settings(32), &mut rng);
            check_invariants(&set, &batches, 32);
            assert_eq!(met(&batches), 20 + 1, "seed {seed}");
            let trained = batches.iter().flatten().filter(|p| p.0 == 155).count();
            assert_eq!(trained, set.truth[&155].len(), "seed {seed}");
            let used: usize = batches.iter().map(Vec::len).sum();
            assert!(used as f64 > 0.8 * set.pairs.len() as f64, "used {used}");
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            without += met(&epoch_batches(&set, None, &none(), &settings(32), &mut rng));
        }
        assert!(without < 100, "{without} of 200 by chance");
    }

    #[test]
    fn small_batches_with_many_rejections_stay_within_size() {
        // Every third topic rejects three contents: waiting topics and their negatives crowd
        // the start of each batch, which must still close at the batch size.
        let set = random_set(9, 600);
        let mut contents: Vec<usize> = set.owners.keys().copied().collect();
        contents.sort();
        let curated: HashMap<usize, Vec<usize>> = (0..300)
            .step_by(3)
            .map(|t| {
                let gt = &set.truth[&t];
                let cs = contents.iter().copied().filter(|c| !gt.contains(c));
                (t, cs.skip(t).take(3).collect())
            })
            .collect();
        for b in [3, 4, 6] {
            for seed in 0..5 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let batches = epoch_batches(&set, None, &curated, &settings(b), &mut rng);
                check_invariants(&set, &batches, b);
                assert!(!batches.is_empty());
            }
        }
    }
}
