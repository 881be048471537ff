//! Log matching: an entry decided at an index is the same entry on every
//! replica, in every run of it. The first replica to decide an index sets
//! the reference; every other replica's decided entries are compared with
//! it as they appear (and all over again after a restart).

use super::Violation;
use crate::node::SimReplica;
use paxsql_types::Entry;
use std::collections::BTreeMap;

/// The decided log as first seen, and how far each node was compared.
#[derive(Debug, Default)]
pub struct LogMatching {
    decided: Vec<Entry>,
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
        let entries = replica.decided_entries(from, decided);
        for (i, e) in entries.into_iter().enumerate() {
            let index = from + i as u64;
            match self.decided.get(index as usize) {
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
                None => self.decided.push(e),
            }
            self.checked.insert(node, index + 1);
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
