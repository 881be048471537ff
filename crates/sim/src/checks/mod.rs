//! The invariants a run must keep, one per file. Some watch the run as it
//! goes (election, log matching, divergence, durability), the others read
//! the history and the replicas' final state once everything has healed.

pub mod divergence;
pub mod durability;
pub mod election;
pub mod exactly_once;
pub mod linearizability;
pub mod liveness;
pub mod log_matching;
pub mod lost_writes;
pub mod stale_reads;

use std::collections::{BTreeMap, BTreeSet};

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The check that found it (its file's name).
    pub check: &'static str,
    /// When it was found.
    pub tick: u64,
    /// What exactly, for a human.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] t={}: {}", self.check, self.tick, self.detail)
    }
}

/// One replica's state after the final heal, read straight from its engine.
#[derive(Clone, Debug)]
pub struct FinalState {
    /// The node.
    pub node: u64,
    /// Entries applied.
    pub applied: u64,
    /// The engine's content hash.
    pub hash: u64,
    /// The register table.
    pub kv: BTreeMap<i64, i64>,
    /// Every request id in the `ops` table, with how often it is there.
    pub ops: BTreeMap<String, u64>,
}

impl FinalState {
    /// The distinct request ids recorded.
    pub fn requests(&self) -> BTreeSet<&str> {
        self.ops.keys().map(String::as_str).collect()
    }
}
