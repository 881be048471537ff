//! The log is the durable truth: a restarted replica's log covers every
//! entry its database has applied, and its database covers every entry its
//! log has trimmed.
//!
//! The replica applies an entry only after the sync that made it durable,
//! and SQLite keeps every committed entry across a process crash; so after
//! a restart the log must be at least as long as the applied index. If it
//! is shorter, entries were applied (and clients answered) from a log that
//! was not on disk.
//!
//! The log is trimmed only below what the database has made durable
//! (`persist`), so after a restart the applied index is at least the
//! trimmed prefix — unless the database file itself was lost (a fault of
//! its own): then the replica must fetch an image, and until it holds its
//! data again this half of the check does not apply to it.

use super::Violation;
use paxsql_replica::ReplicaStatus;

/// Checks a replica right after it restarted; `database_lost` says that its
/// database file was lost since it last held all its data.
pub fn on_restart(tick: u64, status: &ReplicaStatus, database_lost: bool) -> Vec<Violation> {
    let mut out = Vec::new();
    if status.accepted < status.applied {
        out.push(Violation {
            check: "durability",
            tick,
            detail: format!(
                "node {} restarted with {} log entries but {} applied in its database: \
                 applied entries were lost from the log",
                status.node, status.accepted, status.applied
            ),
        });
    }
    if !database_lost && status.applied < status.compacted {
        out.push(Violation {
            check: "durability",
            tick,
            detail: format!(
                "node {} restarted with its log trimmed below {} but only {} applied in its \
                 database: the log was trimmed beyond what the database had made durable",
                status.node, status.compacted, status.applied
            ),
        });
    }
    out
}
