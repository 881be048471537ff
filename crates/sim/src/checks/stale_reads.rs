//! Every read, at any level, returns a value some write put there: written
//! by a write to the same key that was invoked before the read returned,
//! and that did not definitely fail. `local` and `leader` reads may be
//! stale, so this is all that can be asked of them (`linearizable` reads
//! get the full check in `linearizability`).

use super::Violation;
use crate::history::{History, OpKind, Outcome};
use std::collections::BTreeMap;

/// Checks every successful read.
pub fn check(history: &History, tick: u64) -> Vec<Violation> {
    // value -> (key, invoked at, definitely failed)
    let mut writes: BTreeMap<i64, (i64, u64, bool, usize)> = BTreeMap::new();
    for op in &history.ops {
        if let OpKind::Write { key, value, .. } = op.kind {
            let failed = matches!(op.outcome, Outcome::Fail(_));
            writes.insert(value, (key, op.invoke, failed, op.id));
        }
    }
    let mut out = Vec::new();
    for op in &history.ops {
        let Outcome::Read(vals) = &op.outcome else {
            continue;
        };
        for (key, v) in vals {
            let Some(v) = v else { continue };
            let problem = match writes.get(v) {
                None => Some("a value no client ever wrote".to_string()),
                Some((k, _, _, w)) if k != key => {
                    Some(format!("a value written to key {k} by op{w}"))
                }
                Some((_, invoked, _, w)) if *invoked > op.return_seq() => Some(format!(
                    "a value written by op{w}, invoked after the read returned"
                )),
                Some((_, _, true, w)) => Some(format!(
                    "the value of op{w}, a write that definitely failed"
                )),
                _ => None,
            };
            if let Some(p) = problem {
                out.push(Violation {
                    check: "stale_reads",
                    tick,
                    detail: format!("{} read k{key}={v}: {p}", op.describe()),
                });
            }
        }
    }
    out
}
