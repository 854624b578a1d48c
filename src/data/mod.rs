//! The Kaggle files: row types, loading, validation, topic trees, folds and the synthetic
//! corpus generator.

pub mod load;
pub mod schema;
pub mod split;
pub mod summary;
pub mod synth;
pub mod tree;
pub mod validate;
pub mod write;

pub use load::{load_dataset, DataError, Dataset};
pub use schema::{Content, Correlation, Topic};
