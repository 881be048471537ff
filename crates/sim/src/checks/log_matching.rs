//! Log matching: an entry decided at an index is the same entry on every
//! replica, in every run of it. The first replica seen holding a decided
//! index sets the reference; every other replica's decided entries are
//! compared with it as they appear (and all over again after a restart).
//!
//! Replicas trim their logs (compaction) and a replica that installs a
//! snapshot never holds the entries below it: each replica is compared at
//! the indices it still holds, by index, against the reference where there
//! is one. An index no replica was seen holding before it was trimmed
//! everywhere has no reference; the state hashes (`divergence`) still
//! cover what it did.

use super::Violation;
use crate::node::SimReplica;
use paxsql_types::Entry;
use std::collections::BTreeMap;

/// The decided log as first seen, and how far each node was compared.
#[derive(Debug, Default)]
pub struct LogMatching {
    /// index -> the entry first seen decided there
    decided: BTreeMap<u64, Entry>,
    checked: BTreeMap<u64, u64>,
}

impl LogMatching {
    /// Compares what `node` decided since the last look.
    pub fn observe(
        &mut self,
        tick: u64,
        node: u64,
        decided: u64,
        replica: &SimReplica,
    ) -> Option<Violation> {
        let from = self.checked.get(&node).copied().unwrap_or(0);
        if decided <= from {
            return None;
        }
        // Only the indices this replica still holds (at or above its
        // trimmed prefix), each with its index.
        let entries = replica.decided_entries(from, decided);
        self.checked.insert(node, decided);
        for (index, e) in entries {
            let index = index.0;
            match self.decided.get(&index) {
                Some(reference) if *reference != e => {
                    self.checked.insert(node, index + 1);
                    return Some(Violation {
                        check: "log_matching",
                        tick,
                        detail: format!(
                            "node {node} decided a different entry at index {index}: {} \
                             (first decided there: {})",
                            summarize(&e),
                            summarize(reference)
                        ),
                    });
                }
                Some(_) => {}
                None => {
                    self.decided.insert(index, e);
                }
            }
        }
        None
    }

    /// A node restarted: compare its whole decided log again.
    pub fn on_restart(&mut self, node: u64) {
        self.checked.insert(node, 0);
    }
}

/// An entry in a line: its proposals' request ids and barriers.
fn summarize(e: &Entry) -> String {
    use paxsql_types::Proposal;
    let parts: Vec<String> = e
        .proposals
        .iter()
        .map(|p| match p {
            Proposal::Write(w) => format!("write {}", w.id),
            Proposal::Barrier(b) => format!("barrier n{}#{}", b.node.0, b.seq),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
