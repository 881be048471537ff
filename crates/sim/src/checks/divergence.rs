//! Replicas never diverge: two replicas that have applied the same number
//! of entries hold the same content (the engine's `state_hash`, which
//! covers schema and rows of every user table).
//!
//! Sampled during the run (the first hash seen at an applied index is the
//! reference for every later sample at that index, from any replica, in any
//! of its runs), and checked on every replica after the final heal.

use super::{FinalState, Violation};
use std::collections::BTreeMap;

/// The hashes seen so far.
#[derive(Debug, Default)]
pub struct Divergence {
    /// applied index -> (hash, node that had it)
    seen: BTreeMap<u64, (u64, u64)>,
}

impl Divergence {
    /// A replica of `node` had `hash` at `applied`.
    pub fn observe(&mut self, tick: u64, node: u64, applied: u64, hash: u64) -> Option<Violation> {
        match self.seen.get(&applied) {
            None => {
                self.seen.insert(applied, (hash, node));
                None
            }
            Some(&(h, n)) if h != hash => Some(Violation {
                check: "divergence",
                tick,
                detail: format!(
                    "at applied index {applied}, node {node} has state hash {hash:016x} \
                     but node {n} had {h:016x}"
                ),
            }),
            Some(_) => None,
        }
    }

    /// Every replica, after the heal, applied the same entries and holds the
    /// same content.
    pub fn finish(&mut self, finals: &[FinalState], tick: u64) -> Vec<Violation> {
        let mut out = Vec::new();
        for f in finals {
            out.extend(self.observe(tick, f.node, f.applied, f.hash));
        }
        if let Some(first) = finals.first() {
            for f in &finals[1..] {
                if f.applied != first.applied {
                    out.push(Violation {
                        check: "divergence",
                        tick,
                        detail: format!(
                            "after the heal node {} applied {} entries, node {} applied {}",
                            f.node, f.applied, first.node, first.applied
                        ),
                    });
                }
            }
        }
        out
    }
}
