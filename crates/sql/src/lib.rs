//! SQL engines behind one trait, and determinism rules.

pub mod determinism;
