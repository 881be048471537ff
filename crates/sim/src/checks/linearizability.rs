//! Writes and `linearizable` reads, key by key, must be linearizable.
//!
//! Each key is a register (values are unique per write, `None` before the
//! first). Following Jepsen: a write that definitely failed is left out; a
//! write of unknown outcome may take effect at any time after its
//! invocation (return time infinite); a read that failed or timed out
//! observed nothing and is left out. A write of unknown outcome whose value
//! no checked read saw is left out too: it cannot constrain anything, and
//! keeping it would blow up the search. `local` and `leader` reads may be
//! stale and are not checked here (see `stale_reads`).

use super::Violation;
use crate::history::{History, Op, OpKind, Outcome};
use crate::lincheck::{self, Call, Register, RegisterOp, Verdict};
use paxsql_types::ReadLevel;
use std::collections::{BTreeMap, BTreeSet};

/// Search steps per key before giving up (a verdict of "unknown" is
/// reported as a violation too: it means the history is too ambiguous to
/// trust, and would hide a bug).
const STEP_BUDGET: u64 = 5_000_000;

/// A read of one key: invoked, returned, the value seen, the op's id.
type KeyRead = (u64, u64, Option<i64>, usize);

/// Checks every key's history.
pub fn check(history: &History, tick: u64) -> Vec<Violation> {
    let mut per_key: BTreeMap<i64, Vec<&Op>> = BTreeMap::new();
    let mut reads: BTreeMap<i64, Vec<KeyRead>> = BTreeMap::new();
    for op in &history.ops {
        match (&op.kind, &op.outcome) {
            (OpKind::Write { key, .. }, _) => per_key.entry(*key).or_default().push(op),
            (OpKind::Read { key, level }, Outcome::Read(vals))
                if *level == ReadLevel::Linearizable =>
            {
                if let Some((_, v)) = vals.iter().find(|(k, _)| k == key) {
                    reads
                        .entry(*key)
                        .or_default()
                        .push((op.invoke, op.return_seq(), *v, op.id));
                }
            }
            (OpKind::ReadAll, Outcome::Read(vals)) => {
                for (k, v) in vals {
                    reads
                        .entry(*k)
                        .or_default()
                        .push((op.invoke, op.return_seq(), *v, op.id));
                }
            }
            _ => {}
        }
    }
    let keys: BTreeSet<i64> = per_key.keys().chain(reads.keys()).copied().collect();
    let mut out = Vec::new();
    for key in keys {
        let writes = per_key.remove(&key).unwrap_or_default();
        let key_reads = reads.remove(&key).unwrap_or_default();
        let seen: BTreeSet<i64> = key_reads.iter().filter_map(|r| r.2).collect();
        let mut calls = Vec::new();
        let mut ids = Vec::new();
        for w in &writes {
            let OpKind::Write { value, .. } = w.kind else {
                continue;
            };
            let keep = match w.outcome {
                Outcome::Written => true,
                Outcome::Fail(_) => false,
                _ => seen.contains(&value),
            };
            if keep {
                calls.push(Call {
                    invoke: w.invoke,
                    ret: w.return_seq(),
                    op: RegisterOp::Write(value),
                });
                ids.push(w.id);
            }
        }
        for &(invoke, ret, v, id) in &key_reads {
            calls.push(Call {
                invoke,
                ret,
                op: RegisterOp::Read(v),
            });
            ids.push(id);
        }
        let verdict = lincheck::check::<Register>(&calls, STEP_BUDGET);
        if verdict != Verdict::Linearizable {
            let culprit = (verdict == Verdict::NotLinearizable)
                .then(|| first_violation(&calls))
                .flatten();
            // The operations up to the culprit's return (all of them if
            // there is none), in invocation order.
            let until = culprit.map_or(u64::MAX, |c| calls[c].ret);
            let mut shown: Vec<usize> = (0..calls.len())
                .filter(|&c| calls[c].invoke <= until)
                .collect();
            shown.sort_by_key(|&c| calls[c].invoke);
            let lines: Vec<String> = shown
                .iter()
                .map(|&c| {
                    let mark = if Some(c) == culprit { "==> " } else { "    " };
                    format!("{mark}{}", history.ops[ids[c]].describe())
                })
                .collect();
            out.push(Violation {
                check: "linearizability",
                tick,
                detail: format!(
                    "key {key}: {} ({} operations checked){}:\n{}",
                    match verdict {
                        Verdict::NotLinearizable => "not linearizable",
                        _ => "checker gave up (history too ambiguous)",
                    },
                    calls.len(),
                    culprit.map_or(String::new(), |c| format!(
                        "; first impossible: op{}, marked ==>",
                        ids[c]
                    )),
                    tail(&lines, 40)
                ),
            });
        }
    }
    out
}

/// The operation whose return first makes the history non-linearizable:
/// the history cut at a time is linearizable if the whole is, so a binary
/// search over the return times finds the earliest cut that is not.
fn first_violation(calls: &[Call<RegisterOp>]) -> Option<usize> {
    let mut returns: Vec<(u64, usize)> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.ret != u64::MAX)
        .map(|(i, c)| (c.ret, i))
        .collect();
    returns.sort_unstable();
    let linearizable_until = |t: u64| {
        let cut: Vec<Call<RegisterOp>> = calls
            .iter()
            .filter(|c| c.invoke <= t)
            .filter_map(|c| match (c.ret <= t, c.op) {
                (true, op) => Some(Call { op, ..*c }),
                // Unfinished at the cut: a write may still take effect, a
                // read has observed nothing yet.
                (false, RegisterOp::Write(_)) => Some(Call {
                    ret: u64::MAX,
                    ..*c
                }),
                (false, RegisterOp::Read(_)) => None,
            })
            .collect();
        lincheck::check::<Register>(&cut, STEP_BUDGET) == Verdict::Linearizable
    };
    let (mut lo, mut hi) = (0, returns.len());
    // Invariant: the cut at returns[lo - 1] is linearizable (or lo == 0),
    // the cut at returns[hi] is not (or hi == len).
    while lo < hi {
        let mid = (lo + hi) / 2;
        if linearizable_until(returns[mid].0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    returns.get(lo).map(|&(_, i)| i)
}

/// The last `n` lines (the end of a history is usually where it breaks).
fn tail(lines: &[String], n: usize) -> String {
    let skip = lines.len().saturating_sub(n);
    let mut s = String::new();
    if skip > 0 {
        s.push_str(&format!("    ... {skip} earlier operations\n"));
    }
    s.push_str(&lines[skip..].join("\n"));
    s
}
