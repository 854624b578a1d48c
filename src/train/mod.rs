//! Contrastive training (SPEC §4–§7).

pub mod adamw;
pub mod loss;
