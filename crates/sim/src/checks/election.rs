//! Election safety, as far as OmniPaxos' public API shows it.
//!
//! OmniPaxos ballots are (n, priority, pid), so two nodes may lead with the
//! same number n at once (a stale leader and a new one) without harm; what
//! must hold is checked here:
//!
//! - **Promises are durable**: a replica's promised ballot never goes
//!   back, neither while it runs nor across a restart (compared with what
//!   it had promised at its last poll: everything before a poll's sync is
//!   allowed to be lost, nothing after it). A node that forgets a promise can
//!   help elect a second leader behind the first one's back.
//! - **Leader completeness**: a replica that leads (accept phase) with a
//!   ballot number higher than any leader seen so far holds, in its log,
//!   at least as many entries as any replica has ever seen decided.
//!   Every decided entry was accepted by a majority, which the new leader's
//!   prepare quorum intersects.

use super::Violation;
use paxsql_replica::{ReplicaStatus, Role};
use std::collections::BTreeMap;

/// What has been seen so far.
#[derive(Debug, Default)]
pub struct Election {
    /// Highest ballot number seen in the leader role.
    max_leader_ballot: Option<u32>,
    /// Highest decided index seen on any replica.
    max_decided: u64,
    /// Each node's promise at its last poll.
    promised: BTreeMap<u64, u32>,
}

impl Election {
    /// Looks at every live replica after a tick's polls.
    pub fn observe(&mut self, tick: u64, statuses: &[ReplicaStatus]) -> Vec<Violation> {
        let mut out = Vec::new();
        for s in statuses {
            self.max_decided = self.max_decided.max(s.decided.0);
        }
        let mut highest = self.max_leader_ballot;
        for s in statuses.iter().filter(|s| s.role == Role::Leader) {
            let new_high = self.max_leader_ballot.is_none_or(|m| s.ballot > m);
            if new_high && s.accepted.0 < self.max_decided {
                out.push(Violation {
                    check: "election",
                    tick,
                    detail: format!(
                        "node {} leads with ballot {}, the highest yet, but its log has {} \
                         entries while {} were decided",
                        s.node.0, s.ballot, s.accepted.0, self.max_decided
                    ),
                });
            }
            highest = Some(highest.map_or(s.ballot, |h| h.max(s.ballot)));
        }
        self.max_leader_ballot = highest;
        for s in statuses {
            let before = self.promised.insert(s.node.0, s.ballot);
            if let Some(b) = before.filter(|&b| b > s.ballot) {
                out.push(Violation {
                    check: "election",
                    tick,
                    detail: format!(
                        "node {}'s promise went back from ballot {b} to {}",
                        s.node.0, s.ballot
                    ),
                });
            }
        }
        out
    }

    /// A replica restarted: it must remember what it promised before.
    pub fn on_restart(&mut self, tick: u64, status: &ReplicaStatus) -> Option<Violation> {
        let node = status.node.0;
        let before = self.promised.get(&node).copied()?;
        if status.ballot >= before {
            return None;
        }
        self.promised.insert(node, status.ballot);
        Some(Violation {
            check: "election",
            tick,
            detail: format!(
                "node {node} restarted with promise {} after having promised {before}",
                status.ballot
            ),
        })
    }
}
