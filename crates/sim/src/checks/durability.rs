//! The log is the durable truth: a restarted replica's log covers every
//! entry its database has applied.
//!
//! The replica applies an entry only after the sync that made it durable,
//! and SQLite keeps every committed entry across a process crash; so after
//! a restart the log must be at least as long as the applied index. If it
//! is shorter, entries were applied (and clients answered) from a log that
//! was not on disk.

use super::Violation;
use paxsql_replica::ReplicaStatus;

/// Checks a replica right after it restarted.
pub fn on_restart(tick: u64, status: &ReplicaStatus) -> Option<Violation> {
    (status.accepted < status.applied).then(|| Violation {
        check: "durability",
        tick,
        detail: format!(
            "node {} restarted with {} log entries but {} applied in its database: \
             applied entries were lost from the log",
            status.node, status.accepted, status.applied
        ),
    })
}
