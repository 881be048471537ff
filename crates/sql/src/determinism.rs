//! Determinism rewriting (in progress).
