//! lecr: recommends educational content for the topics of a curriculum.
//!
//! The crate reads as the pipeline it runs:
//! [`data`] (Kaggle files, validation, trees, folds, synthetic corpora) → [`text`] (what the
//! encoder sees) → encoder → training → selection and score → reranker → [`store`] (durable state) →
//! [`studio`] (Kolibri Studio's requests and feedback) → [`serve`] (the service).

pub mod bench;
pub mod cross;
pub mod data;
pub mod features;
pub mod io;
pub mod kernels;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod rerank;
pub mod select;
pub mod serve;
pub mod store;
pub mod studio;
pub mod text;
pub mod train;
