//! What the node reports to Prometheus (through the `metrics` facade; the
//! binary installs the exporter and serves `/metrics`).
//!
//! Names follow Prometheus conventions: `paxsql_*_total` counters,
//! `*_seconds` histograms, plain gauges otherwise.

use paxsql_replica::{ReplicaStatus, Role};
use paxsql_types::{NodeId, RequestError, Response};
use std::time::Duration;

/// A group's replica, as gauges and counters (called a few times a second).
pub(crate) fn record_group(s: &ReplicaStatus) {
    let g = s.group.0.to_string();
    let gauge = |name: &'static str, v: f64| metrics::gauge!(name, "group" => g.clone()).set(v);
    gauge("paxsql_decided_index", s.decided.0 as f64);
    gauge("paxsql_applied_index", s.applied.0 as f64);
    gauge(
        "paxsql_apply_lag_entries",
        s.decided.0.saturating_sub(s.applied.0) as f64,
    );
    gauge("paxsql_accepted_index", s.accepted.0 as f64);
    gauge("paxsql_inflight_requests", s.inflight as f64);
    gauge("paxsql_log_bytes", s.log_bytes as f64);
    gauge(
        "paxsql_is_leader",
        if s.role == Role::Leader { 1.0 } else { 0.0 },
    );
    gauge("paxsql_ballot", f64::from(s.ballot));
    gauge("paxsql_group_failed", 0.0);
    let counter = |name: &'static str, v: u64| {
        metrics::counter!(name, "group" => g.clone()).absolute(v);
    };
    counter("paxsql_leader_changes_total", s.leader_changes);
    counter("paxsql_proposals_total", s.proposals);
    counter("paxsql_log_entries_proposed_total", s.entries_proposed);
    gauge("paxsql_log_compacted_index", s.compacted.0 as f64);
    counter("paxsql_snapshots_taken_total", s.snapshots_taken);
    counter("paxsql_snapshots_installed_total", s.snapshots_installed);
    counter("paxsql_snapshots_sent_total", s.snapshots_sent);
}

/// A group's replica stopped on this node (see `/status` for why).
pub(crate) fn record_group_failed(group: paxsql_types::GroupId) {
    metrics::gauge!("paxsql_group_failed", "group" => group.0.to_string()).set(1.0);
    metrics::counter!("paxsql_group_failures_total", "group" => group.0.to_string()).increment(1);
}

/// A read refused because too many were in flight on this node.
pub(crate) fn record_read_refused() {
    metrics::counter!("paxsql_reads_refused_total").increment(1);
}

/// A peer link went up or down.
pub(crate) fn record_peer(peer: NodeId, up: bool) {
    metrics::gauge!("paxsql_peer_up", "peer" => peer.0.to_string()).set(if up { 1.0 } else { 0.0 });
}

/// One client request's outcome and latency.
pub(crate) fn record_request(
    op: &'static str,
    level: &'static str,
    result: &Result<Response, RequestError>,
    took: Duration,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(RequestError::BadRequest(_)) => "bad_request",
        Err(RequestError::Unavailable(_)) => "unavailable",
        Err(RequestError::Overloaded(_)) => "overloaded",
        Err(RequestError::Conflict(_)) => "conflict",
    };
    metrics::counter!("paxsql_requests_total", "op" => op, "level" => level, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("paxsql_request_duration_seconds", "op" => op, "level" => level)
        .record(took.as_secs_f64());
}
