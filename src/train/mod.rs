//! Contrastive training (method §4–§7).

pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod curated;
pub mod grad_cache;
pub mod loss;
pub mod sampler;
pub mod schedule;
pub mod trainer;
