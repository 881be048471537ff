//! The world: nodes, network, clients and the clock, and the loop that
//! drives them one tick at a time.

use crate::checks::{
    divergence::Divergence, durability, election::Election, exactly_once, linearizability,
    liveness, log_matching::LogMatching, lost_writes, stale_reads, FinalState, Violation,
};
use crate::client::{read_outcome, Client, READ_ALL};
use crate::config::{FaultKind, Params, SimConfig};
use crate::history::{History, OpKind, Outcome};
use crate::net::{Net, Partition, Sent};
use crate::node::SimNode;
use crate::rng::SimRng;
use crate::trace::Trace;
use omnipaxos::messages::Message;
use paxsql_replica::{ClientRequest, Output, PeerMsg, ReplicaStatus, Role};
use paxsql_sql::SqlEngine;
use paxsql_types::{NodeId, ReadLevel, RequestError, Response, Statement, StmtResult, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Ticks the tables may take to be created before the run counts as stuck.
const SETUP_TICKS_MAX: u64 = 2000;
/// State hashes are sampled every this many ticks during the run.
const HASH_EVERY_TICKS: u64 = 16;
/// The heal phase ends once the cluster has been quiet this long.
const QUIET_TICKS: u64 = 20;

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
    net: Net,
    pub(crate) clients: Vec<Client>,
    /// Who waits on each token handed to a replica, and for which op.
    pub(crate) tokens: BTreeMap<u64, (Waiter, usize)>,
    pub(crate) next_token: u64,
    pub(crate) next_value: i64,
    pub(crate) history: History,
    pub(crate) trace: Trace,
    pub(crate) violations: Vec<Violation>,
    /// The watchers, one per group.
    election: Vec<Election>,
    log_matching: Vec<LogMatching>,
    divergence: Vec<Divergence>,
    pub(crate) phase: Phase,
    pub(crate) stats: Stats,
    /// (role, leader, ballot) of each replica (node, group) at the last look.
    roles: BTreeMap<(u64, u32), (Role, Option<u64>, u32)>,
    /// A crash waiting for its node to have unsynced log bytes, until a
    /// tick: the node, the tick, whether it loses its database.
    crash_pending: Option<(u64, u64, bool)>,
    /// Final reads per node: the op, and whether it was answered.
    probes: BTreeMap<u64, (usize, bool)>,
    /// Sharded runs: the map, its changes, and the final reads' parts.
    pub(crate) shard: Option<crate::shard::ShardState>,
    dir: tempfile::TempDir,
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
                let node = SimNode::new(id, &ids, groups, dir.path(), cfg.broken, snapshot);
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

    fn node_ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub(crate) fn alive_nodes(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.alive())
            .map(|n| n.id)
            .collect()
    }

    fn step(&mut self) {
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
    fn replica_failed(&mut self, id: u64, g: u32, e: paxsql_replica::ReplicaError) {
        self.violations.push(Violation {
            check: "replica_error",
            tick: self.now,
            detail: format!("node {id} group {g}: {e}"),
        });
        let unsynced = self.nodes[&id].unsynced_bytes();
        self.crash(id, unsynced, false, self.now + 10);
    }

    fn poll(&mut self, id: u64, g: u32) {
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

    fn on_reply(&mut self, node: u64, token: u64, result: Result<Response, RequestError>) {
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

    // ----- faults -------------------------------------------------------

    fn maybe_fault(&mut self) {
        if !self.cfg.faults || !matches!(self.phase, Phase::Workload { .. }) {
            return;
        }
        if let Some((x, by, lose_database)) = self.crash_pending {
            let node = &self.nodes[&x];
            if !node.alive() {
                self.crash_pending = None;
            } else if node.unsynced_bytes().iter().sum::<usize>() > 0 || self.now >= by {
                self.crash_pending = None;
                let keep = self.torn_tail(x);
                let at = self.now + self.rng.between(1, 200);
                self.crash(x, keep, lose_database, at);
            }
        }
        if !self.rng.chance(1.0 / self.params.fault_every_ticks as f64) {
            return;
        }
        let kind = self.params.pick_fault(&mut self.rng);
        let ids = self.node_ids();
        let n = ids.len();
        let now = self.now;
        match kind {
            FaultKind::SessionLoss => {
                let up = self.net.up_links();
                if up.is_empty() {
                    return;
                }
                let (a, b) = *self.rng.pick(&up);
                let back = now + self.rng.between(1, 20);
                if let Some(lost) = self.net.break_session(a, b, back) {
                    self.stats.session_losses += 1;
                    self.trace.event(now, || {
                        format!(
                            "session {a}->{b} lost ({lost} in flight dropped), back at t>={back}"
                        )
                    });
                }
            }
            FaultKind::Isolate => {
                let x = *self.rng.pick(&ids);
                let cut = self.cut_between(&[x], &others(&ids, &[x]));
                self.start_partition(format!("node {x} isolated"), cut);
            }
            FaultKind::Split => {
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let minority = self.rng.between(1, ((n - 1) / 2) as u64) as usize;
                let (a, b) = shuffled.split_at(minority);
                let cut = self.cut_between(a, b);
                self.start_partition(format!("split {a:?} | {b:?}"), cut);
            }
            FaultKind::OneWay => {
                let x = *self.rng.pick(&ids);
                let rest = others(&ids, &[x]);
                let (name, cut): (String, BTreeSet<(u64, u64)>) = match self.rng.below(3) {
                    0 => {
                        let y = *self.rng.pick(&rest);
                        (format!("one-way: {x}->{y} cut"), [(x, y)].into())
                    }
                    1 => (
                        format!("one-way: node {x} deaf (hears nobody)"),
                        rest.iter().map(|&y| (y, x)).collect(),
                    ),
                    _ => (
                        format!("one-way: node {x} mute (nobody hears it)"),
                        rest.iter().map(|&y| (x, y)).collect(),
                    ),
                };
                self.start_partition(name, cut);
            }
            FaultKind::Bridge => {
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let bridge = shuffled[0];
                let rest = &shuffled[1..];
                let left = self.rng.between(1, (rest.len() - 1) as u64) as usize;
                let (a, b) = rest.split_at(left);
                let cut = self.cut_between(a, b);
                self.start_partition(format!("bridge: {a:?} | {bridge} | {b:?}"), cut);
            }
            FaultKind::Crash => {
                let alive = self.alive_nodes();
                if alive.is_empty() {
                    return;
                }
                // The crash waits (a little) for the node to have unsynced
                // log bytes: then it has something to lose or tear.
                let x = *self.rng.pick(&alive);
                let by = now + self.rng.between(0, 30);
                self.crash_pending = Some((x, by, false));
            }
            FaultKind::LoseDatabase => {
                // Only while every other node holds its data: below a
                // node's trimmed prefix its database is the only copy it
                // has, so two nodes without theirs could lose decided
                // entries for good (more disks lost than the cluster
                // can stand).
                let alive = self.alive_nodes();
                if alive.is_empty() {
                    return;
                }
                let x = *self.rng.pick(&alive);
                let others_whole = self
                    .nodes
                    .values()
                    .filter(|n| n.id != x)
                    .all(|n| n.holds_its_data());
                if !others_whole {
                    self.trace.event(now, || {
                        format!("database loss at node {x} skipped: another node lacks its data")
                    });
                    return;
                }
                let by = now + self.rng.between(0, 30);
                self.crash_pending = Some((x, by, true));
            }
            FaultKind::CrashAll => {
                self.trace
                    .event(now, || "power loss: every node crashes".into());
                for x in self.alive_nodes() {
                    let keep = self.torn_tail(x);
                    let at = now + self.rng.between(1, 100);
                    self.crash(x, keep, false, at);
                }
            }
            FaultKind::SlowLink => {
                let links = self.net.all_links();
                let (a, b) = *self.rng.pick(&links);
                let until = now + self.rng.between(20, 200);
                let extra = self.rng.between(5, 40);
                self.net.slow_down(a, b, until, extra);
                self.trace.event(now, || {
                    format!("link {a}->{b} slow (+{extra} ticks) until t={until}")
                });
            }
        }
    }

    fn cut_between(&self, a: &[u64], b: &[u64]) -> BTreeSet<(u64, u64)> {
        let mut cut = BTreeSet::new();
        for &x in a {
            for &y in b {
                cut.insert((x, y));
                cut.insert((y, x));
            }
        }
        cut
    }

    fn start_partition(&mut self, name: String, cut: BTreeSet<(u64, u64)>) {
        let until = self.now + self.rng.between(10, 300);
        self.stats.partitions += 1;
        let now = self.now;
        self.trace
            .event(now, || format!("partition: {name} until t={until}"));
        let back = now + 1;
        let broken = self.net.partition(Partition { name, cut, until }, back);
        for (a, b, lost) in broken {
            self.trace.event(now, || {
                format!("session {a}->{b} broken ({lost} in flight dropped)")
            });
        }
    }

    /// How many unsynced bytes of each log a crash of `x` keeps: usually
    /// none, sometimes a torn prefix, sometimes all (the page cache made it).
    fn torn_tail(&mut self, x: u64) -> Vec<usize> {
        let unsynced = self.nodes[&x].unsynced_bytes();
        unsynced
            .into_iter()
            .map(|u| match self.rng.below(4) {
                0 | 1 => 0,
                2 => self.rng.between(0, u as u64) as usize,
                _ => u,
            })
            .collect()
    }

    fn crash(&mut self, id: u64, keep_unsynced: Vec<usize>, lose_database: bool, restart_at: u64) {
        let unsynced: usize = self.nodes[&id].unsynced_bytes().iter().sum();
        let before = self.trace.events().then(|| {
            let s = self.nodes[&id]
                .slot(0)
                .replica
                .as_ref()
                .expect("alive")
                .status();
            format!(
                " (log {}..{}, decided {}, applied {})",
                s.compacted.0, s.accepted.0, s.decided.0, s.applied.0
            )
        });
        let node = self.nodes.get_mut(&id).expect("known node");
        node.crash(&keep_unsynced, lose_database);
        let keep_unsynced: usize = keep_unsynced.iter().sum();
        node.restart_at = restart_at;
        self.stats.crashes += 1;
        if lose_database {
            self.stats.database_losses += 1;
        }
        let now = self.now;
        self.trace.event(now, || {
            format!(
                "crash node {id}{}: kept {keep_unsynced} of {unsynced} unsynced log bytes{}; restart at t={restart_at}",
                before.unwrap_or_default(),
                if lose_database {
                    "; its database file is lost (log kept)"
                } else {
                    ""
                }
            )
        });
        for (a, b) in self.net.links_of(id) {
            if let Some(lost) = self.net.break_session(a, b, now + 1) {
                self.trace.event(now, || {
                    format!("session {a}->{b} broken ({lost} in flight dropped)")
                });
            }
        }
        self.clients_lose(id);
        self.admin_lose(id);
        // A final read waiting there is asked again after the restart.
        self.tokens
            .retain(|_, (w, _)| !matches!(w, Waiter::Probe(n, _) if *n == id));
        self.roles.retain(|&(n, _), _| n != id);
    }

    fn restart(&mut self, id: u64) {
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

    // ----- the end of the run -------------------------------------------

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Setup { .. } if self.now > SETUP_TICKS_MAX => {
                let statuses = self.all_statuses();
                self.violations.push(liveness::stuck(
                    self.now,
                    self.now,
                    "the tables were never created",
                    &statuses,
                ));
                self.phase = Phase::Done;
            }
            Phase::Workload { until } if self.now >= until => self.begin_heal(),
            Phase::Heal { since, .. } if self.now - since > self.cfg.heal_ticks_max => {
                let statuses = self.all_statuses();
                let why = self.not_converged().unwrap_or("final reads unanswered");
                self.violations
                    .push(liveness::stuck(self.now, self.now - since, why, &statuses));
                self.phase = Phase::Done;
            }
            Phase::Heal {
                since,
                probing,
                quiet_since,
            } => {
                let converged = self.not_converged().is_none();
                let quiet_since = match (converged, quiet_since) {
                    (false, _) => None,
                    (true, None) => Some(self.now),
                    (true, q) => q,
                };
                let quiet = quiet_since.is_some_and(|q| self.now - q >= QUIET_TICKS);
                if quiet && !probing {
                    self.start_probes();
                    self.phase = Phase::Heal {
                        since,
                        probing: true,
                        quiet_since: None,
                    };
                } else if quiet && self.probes.values().all(|p| p.1) {
                    self.phase = Phase::Done;
                } else {
                    self.phase = Phase::Heal {
                        since,
                        probing,
                        quiet_since,
                    };
                }
            }
            _ => {}
        }
    }

    fn begin_heal(&mut self) {
        let now = self.now;
        self.trace.event(now, || {
            "workload over: healing everything, restarting every node".into()
        });
        for name in self.net.heal(now, true) {
            self.trace.event(now, || format!("heal: {name}"));
        }
        self.net.clear_slow();
        for node in self.nodes.values_mut() {
            if !node.alive() {
                node.restart_at = node.restart_at.min(now + 1);
            }
        }
        self.phase = Phase::Heal {
            since: now,
            probing: false,
            quiet_since: None,
        };
    }

    /// Why the cluster is not yet settled, if it is not.
    fn not_converged(&mut self) -> Option<&'static str> {
        if self.nodes.values().any(|n| !n.alive()) {
            return Some("a node is down");
        }
        if self.net.partitioned() || !self.net.all_up() {
            return Some("a session is down");
        }
        if !self.clients.iter().all(Client::idle) {
            return Some("client operations in flight");
        }
        if self.shard.as_ref().is_some_and(|s| !s.idle()) {
            return Some("a shard map change in flight");
        }
        for g in self.group_ids() {
            let statuses = self.statuses(g);
            let decided = statuses.iter().map(|s| s.decided.0).max().unwrap_or(0);
            if statuses
                .iter()
                .any(|s| s.applied.0 != decided || s.decided.0 != decided)
            {
                return Some("replicas have not applied the same entries");
            }
            if !statuses.iter().any(|s| s.role == Role::Leader) {
                return Some("no leader");
            }
        }
        None
    }

    fn start_probes(&mut self) {
        self.trace.event(self.now, || {
            "settled: a final linearizable read at every node".into()
        });
        for id in self.node_ids() {
            let op = self
                .history
                .invoke(usize::MAX, OpKind::ReadAll, id, self.now);
            self.probes.insert(id, (op, false));
            self.submit_probe(id, op);
        }
    }

    /// The final read at a node: of its one group, or of every data group
    /// (the parts are put together in `probe_part`).
    fn submit_probe(&mut self, node: u64, op: usize) {
        let groups: Vec<u32> = match &mut self.shard {
            None => vec![0],
            Some(shard) => {
                shard.probe_parts.remove(&node);
                (1..self.groups).collect()
            }
        };
        for g in groups {
            self.submit_probe_part(node, g, op);
        }
    }

    /// The final read at a node, of one group.
    pub(crate) fn submit_probe_part(&mut self, node: u64, g: u32, op: usize) {
        let token = self.next_token;
        self.next_token += 1;
        self.tokens.insert(token, (Waiter::Probe(node, g), op));
        let req = ClientRequest::Read {
            stmts: vec![Statement::new(READ_ALL)],
            level: ReadLevel::Linearizable,
        };
        self.replica(node, g).submit(token, req);
    }

    /// A final read at `node` is answered (all its parts).
    pub(crate) fn probe_done(&mut self, node: u64, op: usize, outcome: Outcome) {
        self.history.complete(op, outcome, self.now);
        self.probes.insert(node, (op, true));
        let d = self.history.ops[op].describe();
        self.trace.event(self.now, || format!("final read: {d}"));
    }

    /// The live replicas of group `g`.
    fn statuses(&self, g: u32) -> Vec<ReplicaStatus> {
        self.nodes
            .values()
            .filter_map(|n| n.slot(g).replica.as_ref().map(|r| r.status()))
            .collect()
    }

    /// The live replicas of every group.
    fn all_statuses(&self) -> Vec<ReplicaStatus> {
        self.group_ids().flat_map(|g| self.statuses(g)).collect()
    }

    /// `" group g"` in a sharded run, nothing otherwise (traces).
    pub(crate) fn group_label(&self, g: u32) -> String {
        match self.groups {
            1 => String::new(),
            _ => format!(" group {g}"),
        }
    }

    /// Records what a per-group watcher found, naming the group in a
    /// sharded run.
    fn found(&mut self, g: u32, found: impl IntoIterator<Item = Violation>) {
        let label = self.group_label(g);
        for mut v in found {
            if !label.is_empty() {
                v.detail = format!("{}: {}", label.trim_start(), v.detail);
            }
            self.violations.push(v);
        }
    }

    // ----- watching -----------------------------------------------------

    fn observe(&mut self) {
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

    fn final_checks(&mut self) {
        let now = self.now;
        self.history.close(now);
        // What each group's replicas hold, and (for the history checks) what
        // each node holds over all of its groups.
        let data_groups: Vec<u32> = match self.groups {
            1 => vec![0],
            n => (1..n).collect(),
        };
        let mut per_group: BTreeMap<u32, Vec<FinalState>> = BTreeMap::new();
        for id in self.alive_nodes() {
            for g in self.group_ids() {
                let with_rows = data_groups.contains(&g);
                match self.final_state(id, g, with_rows) {
                    Ok(f) => per_group.entry(g).or_default().push(f),
                    Err(e) => self.violations.push(Violation {
                        check: "replica_error",
                        tick: now,
                        detail: format!(
                            "node {id}{}: reading the final state: {e}",
                            self.group_label(g)
                        ),
                    }),
                }
            }
        }
        let finals = merge_groups(&per_group, &data_groups);
        // A stuck run's final state is not the settled state the checks
        // below assume; the liveness violation already says what is wrong.
        let settled = !self.violations.iter().any(|v| v.check == "liveness");
        let mut found = Vec::new();
        found.extend(linearizability::check(&self.history, now));
        found.extend(stale_reads::check(&self.history, now));
        if settled {
            found.extend(lost_writes::check(&self.history, &finals, now));
            for (&g, fs) in &per_group {
                let v = self.divergence[g as usize].finish(fs, now);
                self.found(g, v);
            }
            if self.shard.is_some() {
                found.extend(self.ownership_check(&per_group));
            }
        }
        found.extend(exactly_once::check(&self.history, &finals, now));
        self.violations.extend(found);
    }

    /// Group `g`'s replica at node `id` after the heal: its applied index
    /// and hash, and with `rows` its `kv` and `ops` tables.
    fn final_state(&mut self, id: u64, g: u32, rows: bool) -> Result<FinalState, String> {
        let replica = self.replica(id, g);
        let applied = replica.status().applied.0;
        let engine = replica.engine_mut();
        let hash = engine.state_hash().map_err(|e| e.to_string())?;
        let mut state = FinalState {
            node: id,
            applied,
            hash,
            kv: BTreeMap::new(),
            ops: BTreeMap::new(),
        };
        if !rows {
            return Ok(state);
        }
        let results = engine.query(&[
            Statement::new("SELECT k, v FROM kv"),
            Statement::new("SELECT req, count(*) FROM ops GROUP BY req"),
        ]);
        let rows = |r: &StmtResult| -> Result<Vec<Vec<Value>>, String> {
            match r {
                StmtResult::Rows { values, .. } => Ok(values.clone()),
                other => Err(format!("{other:?}")),
            }
        };
        for row in rows(&results[0])? {
            if let (Value::Integer(k), Value::Integer(v)) = (&row[0], &row[1]) {
                state.kv.insert(*k, *v);
            }
        }
        for row in rows(&results[1])? {
            if let (Value::Text(req), Value::Integer(n)) = (&row[0], &row[1]) {
                state.ops.insert(req.clone(), *n as u64);
            }
        }
        Ok(state)
    }

    fn report(mut self) -> Report {
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

/// What each node holds over its data groups: every group's `kv` rows and
/// `ops` counts added up (a key held by two groups is the ownership
/// check's to report; here the higher group's value stands).
fn merge_groups(per_group: &BTreeMap<u32, Vec<FinalState>>, data: &[u32]) -> Vec<FinalState> {
    let mut by_node: BTreeMap<u64, FinalState> = BTreeMap::new();
    for g in data {
        for f in per_group.get(g).into_iter().flatten() {
            let merged = by_node.entry(f.node).or_insert_with(|| FinalState {
                node: f.node,
                applied: 0,
                hash: 0,
                kv: BTreeMap::new(),
                ops: BTreeMap::new(),
            });
            merged.applied += f.applied;
            merged.hash ^= f.hash;
            merged.kv.extend(f.kv.iter().map(|(k, v)| (*k, *v)));
            for (req, n) in &f.ops {
                *merged.ops.entry(req.clone()).or_default() += n;
            }
        }
    }
    by_node.into_values().collect()
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

fn others(ids: &[u64], except: &[u64]) -> Vec<u64> {
    ids.iter()
        .copied()
        .filter(|x| !except.contains(x))
        .collect()
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
