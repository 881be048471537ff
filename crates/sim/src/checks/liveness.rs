//! Once every fault has healed and every node is up, the cluster recovers
//! on its own: within a bounded time every replica applies the same
//! entries and a linearizable read succeeds on every node.

use super::Violation;
use paxsql_replica::ReplicaStatus;

/// The heal phase ran out of time; says where it stood.
pub fn stuck(tick: u64, waited: u64, why: &str, statuses: &[ReplicaStatus]) -> Violation {
    let lines: Vec<String> = statuses
        .iter()
        .map(|s| {
            format!(
                "    node {}: {:?} leader={:?} ballot={} accepted={} decided={} applied={} inflight={}",
                s.node.0,
                s.role,
                s.leader.map(|l| l.0),
                s.ballot,
                s.accepted.0,
                s.decided.0,
                s.applied.0,
                s.inflight
            )
        })
        .collect();
    Violation {
        check: "liveness",
        tick,
        detail: format!(
            "{waited} ticks after the heal the cluster has not recovered ({why}):\n{}",
            lines.join("\n")
        ),
    }
}
