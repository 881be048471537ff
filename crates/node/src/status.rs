//! What a node says of itself and of its peers: `/status`, `/nodes`,
//! `/readyz`, and the reports nodes send each other twice a second (which
//! also find a replica stuck behind its group's leader).

use crate::group::GroupInput;
use crate::transport::{self, Links};
use crate::NodeHandle;
use paxsql_replica::{ReplicaStatus, Role};
use paxsql_types::{GroupId, LogIndex, NodeId};
use serde::Serialize;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// This node's status (`/status`).
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// This node.
    pub node_id: u64,
    /// Whether the database is spread over data groups (`--groups` above 1).
    pub sharded: bool,
    /// Its peer address.
    pub peer_addr: String,
    /// The SQL engine.
    pub engine: &'static str,
    /// Where its files are.
    pub data_dir: String,
    /// Each group's replica on this node.
    pub groups: Vec<GroupStatus>,
}

/// One group's replica as `/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct GroupStatus {
    /// The group.
    pub group: u32,
    /// What it holds: `metadata` (the shard map: group 0 of a sharded
    /// node) or `data` (tables; group 0 of an unsharded node too).
    pub kind: &'static str,
    /// leader, follower or candidate.
    pub role: &'static str,
    /// The believed leader.
    pub leader: Option<u64>,
    /// The promised ballot.
    pub ballot: u32,
    /// Entries known decided.
    pub decided_index: u64,
    /// Entries applied to the engine.
    pub applied_index: u64,
    /// Entries in the local log.
    pub accepted_index: u64,
    /// Clients waiting.
    pub inflight: usize,
    /// Entries trimmed from the local log (it holds `compacted..accepted`).
    pub compacted_index: u64,
    /// Bytes of the log file.
    pub log_bytes: u64,
    /// Times this replica trimmed its log since start.
    pub snapshots_taken: u64,
    /// Database images it installed since start (catch-up by snapshot).
    pub snapshots_installed: u64,
    /// Database images it sent to other replicas since start.
    pub snapshots_sent: u64,
    /// The current configuration (each membership change starts the next).
    pub config_id: u32,
    /// Its members.
    pub members: Vec<u64>,
    /// This node is not a member any more.
    pub removed: bool,
    /// Why this group stopped on this node, if it did (the node stays up
    /// to say so; a restart reopens the group from its files).
    pub failure: Option<String>,
    /// The work one replicated statement may do, in SQLite VM steps
    /// (`SET PAXSQL STATEMENT_BUDGET`); absent for engines that do not
    /// count work.
    pub statement_budget: Option<u64>,
}

/// A node of the cluster as `/nodes` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    /// The node.
    pub id: u64,
    /// Its peer address.
    pub addr: String,
    /// Whether this node currently has a link to it.
    pub reachable: bool,
    /// Whether it leads group 0 as far as this node knows.
    pub leader: bool,
    /// Its role in group 0 as it last reported it.
    pub role: Option<String>,
    /// Entries of group 0 it knew decided, as it last reported.
    pub decided_index: Option<u64>,
    /// Entries of group 0 it had applied, as it last reported.
    pub applied_index: Option<u64>,
    /// Milliseconds since that report (0 for this node).
    pub last_seen_ms: Option<u64>,
}

pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
    }
}

pub(crate) fn report_of(s: &ReplicaStatus) -> transport::PeerReport {
    transport::PeerReport {
        role: role_name(s.role).to_owned(),
        decided: s.decided.0,
        applied: s.applied.0,
        groups: vec![(s.group.0, s.decided.0)],
    }
}

/// Tells every peer, twice a second, how this node's groups stand.
///
/// It also watches for a replica left behind, in every group: OmniPaxos can
/// leave a replica that rejoins after a partition waiting for a sync
/// message that was lost. When the group's leader reports a decided index
/// this replica has not reached and this replica has made no progress for
/// `STUCK_AFTER`, the group is told the link to the leader restarted, which
/// makes OmniPaxos resynchronise with it.
pub(crate) async fn report_loop(
    links: Arc<Links>,
    groups: Vec<(Arc<Mutex<ReplicaStatus>>, SyncSender<GroupInput>)>,
) {
    const STUCK_AFTER: Duration = Duration::from_secs(2);
    let mut every = tokio::time::interval(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let mut progress = vec![(LogIndex(0), started); groups.len()];
    loop {
        every.tick().await;
        let own: Vec<ReplicaStatus> = groups
            .iter()
            .map(|(s, _)| s.lock().expect("status lock").clone())
            .collect();
        let mut report = report_of(&own[0]);
        report.groups = own.iter().map(|s| (s.group.0, s.decided.0)).collect();
        links.broadcast_report(report);
        for ((s, (_, tx)), last) in own.iter().zip(&groups).zip(progress.iter_mut()) {
            if s.decided != last.0 {
                *last = (s.decided, std::time::Instant::now());
                continue;
            }
            let Some(leader) = s.leader.filter(|&l| l != s.node) else {
                continue;
            };
            let leader_decided = links
                .reports
                .lock()
                .expect("reports lock")
                .get(&leader)
                .and_then(|(r, _)| r.decided_in(s.group));
            let behind = leader_decided.is_some_and(|d| d > s.decided.0);
            if behind && last.1.elapsed() >= STUCK_AFTER {
                tracing::info!(
                    group = s.group.0,
                    leader = leader.0,
                    decided = s.decided.0,
                    leader_decided,
                    "replica stuck behind the leader; resynchronising"
                );
                let _ = tx.try_send(GroupInput::Connected(leader));
                last.1 = std::time::Instant::now();
            }
        }
    }
}

pub(crate) fn initial_status(node: NodeId, group: GroupId) -> ReplicaStatus {
    ReplicaStatus {
        node,
        group,
        role: Role::Candidate,
        leader: None,
        ballot: 0,
        decided: LogIndex(0),
        applied: LogIndex(0),
        accepted: LogIndex(0),
        inflight: 0,
        leader_changes: 0,
        proposals: 0,
        entries_proposed: 0,
        log_bytes: 0,
        compacted: LogIndex(0),
        snapshots_taken: 0,
        snapshots_installed: 0,
        snapshots_sent: 0,
        config_id: 1,
        members: Vec::new(),
        base: LogIndex(0),
        removed: false,
        statement_budget: None,
    }
}

impl NodeHandle {
    /// `metadata` for the shard map's group, `data` for the others.
    pub(crate) fn group_kind(&self, group: GroupId) -> &'static str {
        match self.is_sharded() && group.0 == 0 {
            true => "metadata",
            false => "data",
        }
    }

    pub(crate) fn group_status(&self, g: GroupId) -> ReplicaStatus {
        self.inner.groups[&g]
            .status
            .lock()
            .expect("status lock")
            .clone()
    }

    /// This node's status.
    pub fn status(&self) -> NodeStatus {
        let groups = self
            .inner
            .groups
            .keys()
            .map(|&g| {
                let s = self.group_status(g);
                GroupStatus {
                    group: g.0,
                    kind: self.group_kind(g),
                    role: role_name(s.role),
                    leader: s.leader.map(|l| l.0),
                    ballot: s.ballot,
                    decided_index: s.decided.0,
                    applied_index: s.applied.0,
                    accepted_index: s.accepted.0,
                    inflight: s.inflight,
                    compacted_index: s.compacted.0,
                    log_bytes: s.log_bytes,
                    snapshots_taken: s.snapshots_taken,
                    snapshots_installed: s.snapshots_installed,
                    snapshots_sent: s.snapshots_sent,
                    config_id: s.config_id,
                    members: s.members.iter().map(|m| m.0).collect(),
                    removed: s.removed,
                    failure: self.inner.groups[&g].health.failure(),
                    statement_budget: s.statement_budget,
                }
            })
            .collect();
        NodeStatus {
            node_id: self.inner.cfg.id.0,
            sharded: self.is_sharded(),
            peer_addr: self.inner.cfg.peers[&self.inner.cfg.id].clone(),
            engine: self.inner.cfg.engine.name(),
            data_dir: self.inner.cfg.data_dir.display().to_string(),
            groups,
        }
    }

    /// Every node of the cluster as this node sees it.
    pub fn nodes(&self) -> Vec<PeerStatus> {
        let own = self.group_status(GroupId(0));
        let reports = self
            .inner
            .links
            .reports
            .lock()
            .expect("reports lock")
            .clone();
        // The members of the current configuration (it changes at run time).
        let known = self.inner.links.peers();
        own.members
            .iter()
            .filter_map(|id| known.get(id).map(|addr| (*id, addr)))
            .map(|(id, addr)| {
                let (report, seen) = if id == self.id() {
                    (Some(report_of(&own)), Some(0))
                } else {
                    match reports.get(&id) {
                        Some((r, at)) => (Some(r.clone()), Some(at.elapsed().as_millis() as u64)),
                        None => (None, None),
                    }
                };
                PeerStatus {
                    id: id.0,
                    addr: addr.clone(),
                    reachable: self.inner.links.connected(id),
                    leader: own.leader == Some(id),
                    role: report.as_ref().map(|r| r.role.clone()),
                    decided_index: report.as_ref().map(|r| r.decided),
                    applied_index: report.as_ref().map(|r| r.applied),
                    last_seen_ms: seen,
                }
            })
            .collect()
    }

    /// Ok once every group has a leader in the accept phase and has applied
    /// all it knows decided.
    pub fn ready(&self) -> Result<(), String> {
        for (&g, handle) in &self.inner.groups {
            if let Some(reason) = handle.health.failure() {
                return Err(format!("group {g} stopped on this node: {reason}"));
            }
            let s = self.group_status(g);
            if s.removed {
                return Err(format!("group {g}: this node was removed from the cluster"));
            }
            if s.leader.is_none() || s.role == Role::Candidate {
                return Err(format!("group {g}: no leader yet"));
            }
            if s.applied < s.decided {
                return Err(format!(
                    "group {g}: catching up ({} of {} applied)",
                    s.applied, s.decided
                ));
            }
        }
        Ok(())
    }
}
