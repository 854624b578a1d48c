//! Kolibri Studio's side of the wire and of its database: the topics its recommend and
//! embed-topics requests carry ([`request`]), and the curators' recommendation feedback it
//! records, imported from a `psql` export ([`feedback`]).
//!
//! Sits above [`crate::store`] (its records) and below [`crate::serve`] (which takes requests in
//! these shapes).

pub mod feedback;
pub mod request;
