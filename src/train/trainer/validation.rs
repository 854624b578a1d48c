//! Validation during training: ranking a fold with the current model, its F2 report, the
//! training set's wrong and missing pairs for the next epoch's sampler, and the settings a
//! saved model's `lecr.json` records.

use super::Trainer;
use crate::model::trained::TrainedWith;
use crate::select::{self, score::Report, GroupBy};
use crate::train::sampler::Feedback;
use anyhow::Result;
use std::collections::HashSet;

impl Trainer {
    /// Ranks `topics` with the current model (pool 0 texts).
    pub(super) fn rank(&self, topics: &[usize]) -> Result<Vec<select::Ranked>> {
        let langs: HashSet<&str> = topics
            .iter()
            .map(|&t| self.ds.topics[t].language.as_str())
            .collect();
        let contents: Vec<usize> = (0..self.ds.contents.len())
            .filter(|&c| langs.contains(self.ds.contents[c].language.as_str()))
            .collect();
        let sim = crate::pipeline::model_similarity(
            &self.ds,
            &self.model,
            "model",
            &self.topic_texts[0],
            topics,
            &contents,
            self.cfg.eval_batch_size,
        )?;
        select::rank(
            &self.ds,
            topics,
            sim.as_ref(),
            select::threshold::MAX_SELECTED,
        )
    }

    /// The settings of this run's validation, for a saved model's `lecr.json`.
    pub(super) fn trained_with(&self, epoch: usize, val_f2: Option<f64>) -> TrainedWith {
        TrainedWith {
            max_len: self.cfg.max_len,
            margin: self.cfg.margin,
            fold: (!self.cfg.train_on_all).then_some(self.cfg.fold),
            validation_topics: self.val_topics.len(),
            epoch,
            val_f2,
        }
    }

    /// Validation report on the fold (None with train_on_all).
    pub fn validate(&self) -> Result<Option<Report>> {
        if self.val_topics.is_empty() {
            return Ok(None);
        }
        let ranked = self.rank(&self.val_topics)?;
        Ok(Some(select::evaluate(
            &self.ds,
            &self.val_topics,
            &ranked,
            self.cfg.margin as f32,
            10,
            GroupBy::Language,
        )))
    }

    /// Wrong and missing pairs of the training topics at the validation margin.
    pub(super) fn training_feedback(&self) -> Result<Feedback> {
        let ranked = self.rank(&self.train_topics)?;
        let selected = select::select(&ranked, self.cfg.margin as f32);
        let mut fb = Feedback::default();
        for (&t, sel) in self.train_topics.iter().zip(&selected) {
            let truth = &self.pairs.truth[&t];
            let wrong: Vec<usize> = sel
                .iter()
                .map(|&c| c as usize)
                .filter(|c| !truth.contains(c))
                .collect();
            if !wrong.is_empty() {
                fb.wrong.insert(t, wrong);
            }
            let got: HashSet<usize> = sel.iter().map(|&c| c as usize).collect();
            let mut miss: Vec<usize> = truth.iter().copied().filter(|c| !got.contains(c)).collect();
            miss.sort();
            fb.missing.extend(miss.into_iter().map(|c| (t, c)));
        }
        Ok(fb)
    }
}
