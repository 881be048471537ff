//! No request id is applied twice: every write records its request id in
//! the `ops` table in the same transaction as its effect, and after the run
//! each id is there at most once, on every replica. Ids nobody sent must not
//! be there either.

use super::{FinalState, Violation};
use crate::history::{History, OpKind};
use std::collections::BTreeSet;

/// Checks every replica's `ops` table.
pub fn check(history: &History, finals: &[FinalState], tick: u64) -> Vec<Violation> {
    let sent: BTreeSet<&str> = history
        .ops
        .iter()
        .filter_map(|o| match &o.kind {
            OpKind::Write { req, .. } => Some(req.as_str()),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for f in finals {
        for (req, &count) in &f.ops {
            if count > 1 {
                out.push(Violation {
                    check: "exactly_once",
                    tick,
                    detail: format!("node {}: request {req} applied {count} times", f.node),
                });
            }
            if !sent.contains(req.as_str()) {
                out.push(Violation {
                    check: "exactly_once",
                    tick,
                    detail: format!("node {}: request {req} applied but never sent", f.node),
                });
            }
        }
    }
    out
}
