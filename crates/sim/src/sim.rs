//! The world: nodes, network, clients and the clock, and the loop that
//! drives them one tick at a time.

use crate::checks::{
    divergence::Divergence, durability, election::Election, log_matching::LogMatching, Violation,
};
use crate::client::{read_outcome, Client};
use crate::config::{Params, SimConfig};
use crate::history::{History, Outcome};
use crate::net::{Net, Sent};
use crate::node::SimNode;
use crate::rng::SimRng;
use crate::trace::Trace;
use omnipaxos::messages::Message;
use paxsql_replica::{Output, PeerMsg, Role};
use paxsql_sql::SqlEngine;
use paxsql_types::{NodeId, RequestError, Response};
use std::collections::{BTreeMap, BTreeSet};

/// Ticks the tables may take to be created before the run counts as stuck.
pub(crate) const SETUP_TICKS_MAX: u64 = 2000;
/// State hashes are sampled every this many ticks during the run.
const HASH_EVERY_TICKS: u64 = 16;
/// The heal phase ends once the cluster has been quiet this long.
pub(crate) const QUIET_TICKS: u64 = 20;

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Ticks simulated.
    pub ticks: u64,
    /// Client operations (setup and final reads included).
    pub ops: usize,
    /// Operations that succeeded.
    pub ok: usize,
    /// Operations that definitely failed.
    pub failed: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
    /// Node crashes (each node of a power loss counts).
    pub crashes: u64,
    /// Crashes that lost the node's database file (counted in `crashes`).
    pub database_losses: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Sessions broken at random.
    pub session_losses: u64,
    /// Messages queued on a link.
    pub messages_sent: u64,
    /// Messages lost (sent on a down link, or in flight when it broke).
    pub messages_dropped: u64,
    /// Role or leader changes seen.
    pub leader_changes: u64,
    /// Entries decided by the end.
    pub decided: u64,
    /// Log trims (persist, then trim below the durable point), all nodes.
    pub snapshots_taken: u64,
    /// Database images installed from a peer, all nodes.
    pub snapshots_installed: u64,
    /// Database images sent to a peer (each transfer started), all nodes.
    pub snapshots_sent: u64,
    /// Runaway writes sent (`--runaways`).
    pub runaways: u64,
    /// Runaway writes that ended with the statement budget's error.
    pub runaways_stopped: u64,
    /// Sharded runs: splits and relocations done.
    pub splits: u64,
    /// Sharded runs: relocations done.
    pub relocations: u64,
    /// Sharded runs: operations sent on to another group after a "wrong
    /// range" answer.
    pub reroutes: u64,
}

/// The outcome of one run.
#[derive(Debug)]
pub struct Report {
    /// What was run.
    pub config: SimConfig,
    /// What the seed chose.
    pub params: Params,
    /// Every broken invariant found (empty: the run passed).
    pub violations: Vec<Violation>,
    /// Counts.
    pub stats: Stats,
    /// The trace, if one was asked for.
    pub trace: Vec<String>,
    /// Every client operation.
    pub history: History,
}

impl Report {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Setup {
        started: bool,
    },
    Workload {
        until: u64,
    },
    Heal {
        since: u64,
        probing: bool,
        quiet_since: Option<u64>,
    },
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waiter {
    Client(usize),
    /// The final read at a node, of a group.
    Probe(u64, u32),
    /// A step of a shard map change.
    Admin,
}

pub(crate) struct Sim {
    pub(crate) cfg: SimConfig,
    pub(crate) params: Params,
    pub(crate) rng: SimRng,
    pub(crate) now: u64,
    pub(crate) nodes: BTreeMap<u64, SimNode>,
    /// Groups per node: 1, or the metadata group 0 and the data groups.
    pub(crate) groups: u32,
    pub(crate) net: Net,
    pub(crate) clients: Vec<Client>,
    /// Who waits on each token handed to a replica, and for which op.
    pub(crate) tokens: BTreeMap<u64, (Waiter, usize)>,
    pub(crate) next_token: u64,
    pub(crate) next_value: i64,
    pub(crate) history: History,
    pub(crate) trace: Trace,
    pub(crate) violations: Vec<Violation>,
    /// The watchers, one per group.
    pub(crate) election: Vec<Election>,
    pub(crate) log_matching: Vec<LogMatching>,
    pub(crate) divergence: Vec<Divergence>,
    pub(crate) phase: Phase,
    pub(crate) stats: Stats,
    /// (role, leader, ballot) of each replica (node, group) at the last look.
    pub(crate) roles: BTreeMap<(u64, u32), (Role, Option<u64>, u32)>,
    /// A crash waiting for its node to have unsynced log bytes, until a
    /// tick: the node, the tick, whether it loses its database.
    pub(crate) crash_pending: Option<(u64, u64, bool)>,
    /// Final reads per node: the op, and whether it was answered.
    pub(crate) probes: BTreeMap<u64, (usize, bool)>,
    /// Sharded runs: the map, its changes, and the final reads' parts.
    pub(crate) shard: Option<crate::shard::ShardState>,
    pub(crate) dir: tempfile::TempDir,
}

/// Runs one seed to the end and checks it. A panic anywhere in the
/// replica, the engine or the simulator is reported as a violation.
pub fn run(cfg: &SimConfig) -> Report {
    let mut sim = Sim::new(cfg.clone());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.run()));
    if let Err(panic) = outcome {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into());
        sim.violations.push(Violation {
            check: "panic",
            tick: sim.now,
            detail: msg,
        });
    }
    sim.report()
}

/// A scratch directory for the SQLite files: in memory (/dev/shm) when the
/// machine has one, since the files die with the run anyway.
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("paxsql-sim-");
        b
    };
    if shm.is_dir() {
        if let Ok(d) = builder().tempdir_in(shm) {
            return d;
        }
    }
    builder().tempdir().expect("creating a temporary directory")
}

impl Sim {
    fn new(cfg: SimConfig) -> Sim {
        let mut rng = SimRng::new(cfg.seed);
        let params = Params::draw(&cfg, &mut rng);
        let ids: Vec<u64> = (1..=params.nodes as u64).collect();
        let groups = cfg.groups.map_or(1, |g| g + 1);
        let dir = scratch_dir();
        let nodes = ids
            .iter()
            .map(|&id| {
                let snapshot = (params.snapshot_entries, params.snapshot_chunk_bytes);
                let mut node = SimNode::new(id, &ids, groups, dir.path(), cfg.broken, snapshot);
                node.read_index = !cfg.barrier_reads;
                (id, node)
            })
            .collect();
        let shard = cfg.groups.map(crate::shard::ShardState::new);
        let net = Net::new(&ids, params.delay_ticks_max);
        let clients = (0..params.clients).map(|_| Client::new()).collect();
        Sim {
            trace: Trace::new(cfg.trace),
            cfg,
            params,
            rng,
            now: 0,
            nodes,
            groups,
            net,
            clients,
            tokens: BTreeMap::new(),
            next_token: 0,
            next_value: 0,
            history: History::default(),
            violations: Vec::new(),
            election: (0..groups).map(|_| Election::default()).collect(),
            log_matching: (0..groups).map(|_| LogMatching::default()).collect(),
            divergence: (0..groups).map(|_| Divergence::default()).collect(),
            phase: Phase::Setup { started: false },
            stats: Stats::default(),
            roles: BTreeMap::new(),
            crash_pending: None,
            probes: BTreeMap::new(),
            shard,
            dir,
        }
    }

    fn run(&mut self) {
        let params = format!("{:?}", self.params);
        self.trace
            .event(0, || format!("seed {} params {params}", self.cfg.seed));
        self.trace
            .event(0, || format!("scratch dir {}", self.dir.path().display()));
        for id in self.node_ids() {
            self.restart(id);
        }
        while self.phase != Phase::Done {
            self.step();
        }
        self.final_checks();
    }

    /// Every group id: 0, or 0 (metadata) and the data groups.
    pub(crate) fn group_ids(&self) -> std::ops::Range<u32> {
        0..self.groups
    }

    pub(crate) fn node_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub(crate) fn alive_nodes(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.alive())
            .map(|n| n.id)
            .collect()
    }

    pub(crate) fn step(&mut self) {
        self.now += 1;
        self.stats.ticks = self.now;
        // 1. Partitions that end now heal; crashed nodes due restart.
        for name in self.net.heal(self.now, false) {
            self.trace.event(self.now, || format!("heal: {name}"));
        }
        for id in self.node_ids() {
            let n = &self.nodes[&id];
            if !n.alive() && n.restart_at <= self.now {
                self.restart(id);
            }
        }
        // 2. Sessions (re)start; both ends are told.
        let alive: BTreeSet<u64> = self.alive_nodes().into_iter().collect();
        for (a, b) in self.net.reconnect(self.now, &alive) {
            self.trace
                .event(self.now, || format!("session {a}->{b} up"));
            for g in self.group_ids() {
                self.replica(a, g).connected(NodeId(b));
                self.replica(b, g).connected(NodeId(a));
            }
        }
        // 3. Messages due are delivered.
        for (from, to, (g, msg)) in self.net.due(self.now, &mut self.rng) {
            if self.trace.messages() {
                if let Some(d) = describe(&msg) {
                    self.trace
                        .message(self.now, || format!("deliver {from}->{to} g{g} {d}"));
                }
            }
            if !self.nodes[&to].alive() {
                continue; // a replica of the node failed earlier in this tick
            }
            if let Err(e) = self.replica(to, g).receive(NodeId(from), msg) {
                self.replica_failed(to, g, e);
            }
        }
        // 4. Faults, here: a crash now loses what the deliveries wrote.
        self.maybe_fault();
        // 5. Clocks.
        for id in self.alive_nodes() {
            for g in self.group_ids() {
                self.replica(id, g).tick();
            }
        }
        // 6. Clients (and the end of the run).
        self.clients_act();
        self.advance_phase();
        // 7. Every replica runs its loop; its outputs are routed.
        let mut order: Vec<(u64, u32)> = self
            .alive_nodes()
            .into_iter()
            .flat_map(|id| self.group_ids().map(move |g| (id, g)))
            .collect();
        self.rng.shuffle(&mut order);
        for (id, g) in order {
            // A replica that failed takes its node (every group) down.
            if self.nodes[&id].alive() {
                self.poll(id, g);
            }
        }
        // 8. Watch.
        self.observe();
    }

    pub(crate) fn replica(&mut self, id: u64, g: u32) -> &mut crate::node::SimReplica {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.slot_mut(g).replica.as_mut())
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// Production stops the process; so does the simulator. No fault
    /// injected here makes storage or SQLite fail, so it is a finding too.
    pub(crate) fn replica_failed(&mut self, id: u64, g: u32, e: paxsql_replica::ReplicaError) {
        self.violations.push(Violation {
            check: "replica_error",
            tick: self.now,
            detail: format!("node {id} group {g}: {e}"),
        });
        let unsynced = self.nodes[&id].unsynced_bytes();
        self.crash(id, unsynced, false, self.now + 10);
    }

    pub(crate) fn poll(&mut self, id: u64, g: u32) {
        let outputs = match self.replica(id, g).poll() {
            Ok(o) => o,
            Err(e) => {
                self.replica_failed(id, g, e);
                return;
            }
        };
        let mut outputs: std::collections::VecDeque<Output> = outputs.into();
        while let Some(out) = outputs.pop_front() {
            match out {
                // Reads run at once, on the replica's thread: the same state
                // a reader connection would see at this instant.
                Output::Read { to, stmts } => {
                    let answer = self.replica(id, g).answer_read(to, &stmts);
                    outputs.push_front(answer);
                }
                Output::Send { to, msg } => {
                    let d = if self.trace.messages() {
                        describe(&msg)
                    } else {
                        None
                    };
                    let sent = self.net.send(self.now, &mut self.rng, id, to.0, (g, msg));
                    if let Some(d) = d {
                        let what = match sent {
                            Sent::Queued(due) => {
                                format!("send {id}->{} g{g} {d} (due t={due})", to.0)
                            }
                            Sent::Dropped => format!("drop {id}->{} g{g} {d} (link down)", to.0),
                        };
                        self.trace.message(self.now, || what);
                    }
                }
                Output::Reply { token, result } => self.on_reply(id, token, result),
                // The simulator makes no membership changes.
                Output::Reconfigured(_) => {}
            }
        }
    }

    pub(crate) fn on_reply(
        &mut self,
        node: u64,
        token: u64,
        result: Result<Response, RequestError>,
    ) {
        let Some((waiter, op)) = self.tokens.remove(&token) else {
            self.trace.event(self.now, || {
                format!("node {node}: late answer to token {token} ignored")
            });
            return;
        };
        match waiter {
            Waiter::Client(i) => self.client_reply(i, op, result),
            Waiter::Admin => self.admin_reply(result),
            Waiter::Probe(n, g) if self.shard.is_some() => self.probe_part(n, g, op, result),
            Waiter::Probe(n, _) => {
                let outcome = read_outcome(&result, None, self.params.keys);
                if let Outcome::Read(_) = outcome {
                    self.probe_done(n, op, outcome);
                } else {
                    // Not served (e.g. timed out): ask again.
                    self.trace.event(self.now, || {
                        format!("final read at node {n} failed: {outcome:?}")
                    });
                    self.submit_probe(n, op);
                }
            }
        }
    }

    pub(crate) fn restart(&mut self, id: u64) {
        let epoch = self.rng.u64();
        let now = self.now;
        let node = self.nodes.get_mut(&id).expect("known node");
        let first = node.runs == 0;
        if let Err(e) = node.start(epoch) {
            self.violations.push(Violation {
                check: "restart",
                tick: now,
                detail: format!("node {id} cannot restart: {e}"),
            });
            node.restart_at = u64::MAX;
            return;
        }
        for g in self.group_ids() {
            let status = self.replica(id, g).status();
            let database_lost = self.nodes[&id].slot(g).database_lost;
            let group = self.group_label(g);
            self.trace.event(now, || {
                format!(
                    "{} node {id}{group} (epoch {epoch:x}): log {}..{}{}, decided {}, applied {}, promise {}",
                    if first { "start" } else { "restart" },
                    status.compacted.0,
                    status.accepted.0,
                    if database_lost { ", database lost" } else { "" },
                    status.decided.0,
                    status.applied.0,
                    status.ballot
                )
            });
            if !first {
                let found = durability::on_restart(now, &status, database_lost);
                self.found(g, found);
                let found = self.election[g as usize].on_restart(now, &status);
                self.found(g, found);
            }
            self.log_matching[g as usize].on_restart(id);
        }
        if let Some(&(op, false)) = self.probes.get(&id) {
            self.submit_probe(id, op);
        }
    }

    // ----- watching -----------------------------------------------------

    pub(crate) fn observe(&mut self) {
        for g in self.group_ids() {
            self.observe_group(g);
        }
    }

    fn observe_group(&mut self, g: u32) {
        let statuses = self.statuses(g);
        let now = self.now;
        let found = self.election[g as usize].observe(now, &statuses);
        self.found(g, found);
        let label = self.group_label(g);
        for s in &statuses {
            let id = s.node.0;
            let role = (s.role, s.leader.map(|l| l.0), s.ballot);
            if self.roles.insert((id, g), role) != Some(role) {
                self.stats.leader_changes += 1;
                self.trace.event(now, || {
                    format!(
                        "node {id}{label}: {:?}, leader {:?}, ballot {} (log {}, decided {}, applied {})",
                        s.role,
                        s.leader.map(|l| l.0),
                        s.ballot,
                        s.accepted.0,
                        s.decided.0,
                        s.applied.0
                    )
                });
            }
            let slot = self.nodes.get_mut(&id).expect("known node").slot_mut(g);
            let installed_before = slot
                .last_status
                .as_ref()
                .map_or(0, |l| l.snapshots_installed);
            if s.snapshots_installed > installed_before {
                self.trace.event(now, || {
                    format!(
                        "node {id}{label}: installed a snapshot, now applied {}, log {}..{}, decided {}",
                        s.applied.0, s.compacted.0, s.accepted.0, s.decided.0
                    )
                });
            }
            slot.note_status(s);
            slot.last_status = Some(s.clone());
            let replica = slot.replica.as_ref().expect("alive");
            let found = self.log_matching[g as usize].observe(now, id, s.decided.0, replica);
            self.found(g, found);
            if g == 0 {
                self.stats.decided = self.stats.decided.max(s.decided.0);
            }
        }
        if now.is_multiple_of(HASH_EVERY_TICKS) {
            for s in &statuses {
                let id = s.node.0;
                match self.replica(id, g).engine_mut().state_hash() {
                    Ok(h) => {
                        let v = self.divergence[g as usize].observe(now, id, s.applied.0, h);
                        self.found(g, v);
                    }
                    Err(e) => self.violations.push(Violation {
                        check: "replica_error",
                        tick: now,
                        detail: format!("node {id}{label}: state hash failed: {e}"),
                    }),
                }
            }
        }
    }

    pub(crate) fn report(mut self) -> Report {
        self.stats.messages_sent = self.net.sent;
        self.stats.messages_dropped = self.net.dropped;
        self.stats.ops = self.history.ops.len();
        if let Some(shard) = &self.shard {
            self.stats.splits = shard.splits;
            self.stats.relocations = shard.relocations;
            self.stats.reroutes = shard.reroutes;
        }
        for node in self.nodes.values() {
            let c = node.snapshot_counts();
            self.stats.snapshots_taken += c.taken;
            self.stats.snapshots_installed += c.installed;
            self.stats.snapshots_sent += c.sent;
        }
        for op in &self.history.ops {
            match op.outcome {
                Outcome::Written | Outcome::Read(_) => self.stats.ok += 1,
                Outcome::Fail(ref why) => {
                    self.stats.failed += 1;
                    if why.starts_with("statement budget exceeded") {
                        self.stats.runaways_stopped += 1;
                    }
                }
                Outcome::Info(_) | Outcome::Pending => self.stats.unknown += 1,
            }
        }
        Report {
            violations: cap_per_check(std::mem::take(&mut self.violations)),
            config: self.cfg,
            params: self.params,
            stats: self.stats,
            trace: std::mem::take(&mut self.trace.lines),
            history: self.history,
        }
    }
}

/// Violations reported per check at most; one broken invariant tends to
/// be found again at every later tick.
const VIOLATIONS_PER_CHECK_MAX: usize = 5;

fn cap_per_check(all: Vec<Violation>) -> Vec<Violation> {
    let mut count: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut out: Vec<Violation> = Vec::new();
    for v in all {
        let n = count.entry(v.check).or_default();
        *n += 1;
        if *n <= VIOLATIONS_PER_CHECK_MAX {
            out.push(v);
        }
    }
    for (check, n) in count {
        if n > VIOLATIONS_PER_CHECK_MAX {
            if let Some(last) = out.iter_mut().rev().find(|v| v.check == check) {
                last.detail.push_str(&format!(
                    "\n    (and {} more {check} violations)",
                    n - VIOLATIONS_PER_CHECK_MAX
                ));
            }
        }
    }
    out
}

/// A short description of a message, or `None` for heartbeats (too many).
fn describe(msg: &PeerMsg) -> Option<String> {
    let text = match msg {
        PeerMsg::Paxos {
            msg: Message::BLE(_),
            ..
        } => return None,
        PeerMsg::Paxos {
            msg: Message::SequencePaxos(m),
            ..
        } => format!("{:?}", m.msg),
        PeerMsg::ConfigChanged(m) => format!("ConfigChanged(config {})", m.config_id),
        PeerMsg::Forward(ps) => format!("Forward({} proposals)", ps.len()),
        PeerMsg::LeaderRead { id, .. } => format!("LeaderRead #{id}"),
        PeerMsg::LeaderReadReply { id, result } => {
            format!("LeaderReadReply #{id} ok={}", result.is_ok())
        }
        PeerMsg::Progress { .. } => return None,
        PeerMsg::ReadIndexPing { seq, .. } => format!("ReadIndexPing #{seq}"),
        PeerMsg::ReadIndexAck { seq, promise, .. } => {
            format!("ReadIndexAck #{seq} promise {}", promise.n)
        }
        PeerMsg::ReadIndexAsk { id, .. } => format!("ReadIndexAsk #{id}"),
        PeerMsg::ReadIndexReply { id, index, .. } => format!("ReadIndexReply #{id} {index:?}"),
        PeerMsg::SnapshotNeeded { compacted } => format!("SnapshotNeeded(compacted {compacted})"),
        PeerMsg::SnapshotRequest { offset } => format!("SnapshotRequest(offset {offset})"),
        PeerMsg::SnapshotChunk {
            index,
            total,
            offset,
            data,
            ..
        } => format!(
            "SnapshotChunk(index {index}, bytes {offset}..{} of {total})",
            offset + data.len() as u64
        ),
    };
    const MAX: usize = 160;
    Some(if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &text[..cut])
    } else {
        text
    })
}
