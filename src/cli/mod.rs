//! The subcommands, one module per stage of the pipeline; `main.rs` parses and dispatches.

pub(crate) mod bench;
pub(crate) mod cross;
pub(crate) mod data;
pub(crate) mod feedback;
pub(crate) mod model;
pub(crate) mod rerank;
pub(crate) mod select;
pub(crate) mod serve;
pub(crate) mod train;
