//! No acknowledged write is lost, and no failed write took effect.
//!
//! After the final heal, on every replica: the request id of every
//! acknowledged write is in `ops`, and no definitely failed write's id is;
//! and each key holds either the value of an acknowledged write to it or
//! the value of a write that was not over before that write began — never
//! nothing, and never something older than an acknowledged write.

use super::{FinalState, Violation};
use crate::history::{History, OpKind, Outcome};
use std::collections::BTreeMap;

/// Checks every replica's final state against the history.
pub fn check(history: &History, finals: &[FinalState], tick: u64) -> Vec<Violation> {
    // value -> (invoked, returned) of its write
    let mut by_value: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for op in &history.ops {
        if let OpKind::Write { value, .. } = op.kind {
            by_value.insert(value, (op.invoke, op.return_seq()));
        }
    }
    let mut out = Vec::new();
    for f in finals {
        for op in &history.ops {
            let OpKind::Write { key, req, .. } = &op.kind else {
                continue;
            };
            let recorded = f.ops.contains_key(req);
            match &op.outcome {
                Outcome::Written if !recorded => out.push(Violation {
                    check: "lost_writes",
                    tick,
                    detail: format!(
                        "node {}: acknowledged {} is missing from ops",
                        f.node,
                        op.describe()
                    ),
                }),
                Outcome::Fail(_) if recorded => out.push(Violation {
                    check: "lost_writes",
                    tick,
                    detail: format!("node {}: failed {} took effect", f.node, op.describe()),
                }),
                _ => {}
            }
            if op.outcome != Outcome::Written {
                continue;
            }
            let problem = match f.kv.get(key) {
                None => Some("the key has no value".to_string()),
                Some(v) => match by_value.get(v) {
                    None => Some(format!("the key holds {v}, which nobody wrote")),
                    Some(&(_, returned)) if returned < op.invoke => Some(format!(
                        "the key holds {v}, written by a write that was over before this one began"
                    )),
                    _ => None,
                },
            };
            if let Some(p) = problem {
                out.push(Violation {
                    check: "lost_writes",
                    tick,
                    detail: format!("node {}: acknowledged {}: {p}", f.node, op.describe()),
                });
            }
        }
    }
    out
}
