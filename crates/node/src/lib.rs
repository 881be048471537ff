//! A paxsql node: the replicas of the groups it hosts, each on a thread of
//! its own, the TCP links to its peers, and the [`NodeHandle`] frontends use.
//!
//! A client request enters through the handle for one group
//! ([`NodeHandle::write_to`], [`NodeHandle::read_from`]; the router above
//! chooses it), which fixes the write's clock and random seed and queues it
//! for the group's thread. The answer comes back on a oneshot channel; every wait is bounded.

mod datadir;
mod group;
pub mod membership;
mod metrics;
mod readers;
mod transport;

pub use datadir::DataDirError;
pub use paxsql_sql::ReadLimits;

use group::{GroupInput, GroupLoop, Health};
use paxsql_log::{DurableStorage, LogOptions, OsLogFile};
use paxsql_replica::{all_reads, ClientRequest, Replica, ReplicaConfig, ReplicaStatus, Role};
use paxsql_sql::{Dialect, SqlEngine, SqliteEngine, SqliteOptions};
use paxsql_types::{
    ApplyEnv, GroupId, LogIndex, NodeId, ReadLevel, RequestError, RequestId, Response, Statement,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use transport::{Inbox, Links};

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node.
    pub id: NodeId,
    /// Every node's peer address, this one's included.
    pub peers: BTreeMap<NodeId, String>,
    /// Where the log and the database files live.
    pub data_dir: PathBuf,
    /// The cluster's name; nodes of different clusters refuse each other.
    pub cluster: String,
    /// The replicas' clock period.
    pub tick: Duration,
    /// How long a client waits at most before it gets "unavailable".
    pub request_timeout: Duration,
    /// Client requests queued per group at most.
    pub queue_max: usize,
    /// The SQL engine behind every replica of this node.
    pub engine: EngineChoice,
    /// Applied entries above the trimmed log prefix that make a replica
    /// persist its database and trim its log.
    pub snapshot_entries: u64,
    /// Log bytes on disk that do the same whatever the entry count
    /// (0: no byte limit). The log file is also rewritten once it holds
    /// half this much in trimmed records.
    pub snapshot_bytes: u64,
    /// Reader threads (each with its own connection) per group.
    pub readers: usize,
    /// Reads admitted on this node at once (running or queued); more are
    /// refused as overloaded, to be retried.
    pub reads_max: usize,
    /// How long a read may take when the client names no limit.
    pub read_timeout: std::time::Duration,
    /// What one read statement may return.
    pub read_limits: ReadLimits,
    /// Data groups (`--groups`): 1 keeps one group (group 0) for the
    /// whole database; N > 1 hosts the metadata group 0 and data groups
    /// 1..=N. The same on every node and every start.
    pub groups: u32,
}

/// Which SQL engine a node runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// One SQLite file per group in the data dir.
    Sqlite,
    /// One database per group on a PostgreSQL server, named
    /// `paxsql_<cluster>_<node>_g<group>` ([`paxsql_sql::database_name`]).
    Postgres {
        /// The server (`postgres://user[:password]@host:port/db`); the node
        /// creates its own databases there.
        url: String,
    },
}

impl EngineChoice {
    /// The dialect of SQL the engine speaks.
    pub fn dialect(&self) -> Dialect {
        match self {
            EngineChoice::Sqlite => Dialect::Sqlite,
            EngineChoice::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// The engine's name, as `/status` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            EngineChoice::Sqlite => "sqlite",
            EngineChoice::Postgres { .. } => "postgres",
        }
    }

    /// Opens the engine of one group (`cluster` names its PostgreSQL database).
    fn open(
        &self,
        group_dir: &std::path::Path,
        cluster: &str,
        rcfg: &ReplicaConfig,
    ) -> Result<Box<dyn SqlEngine + Send>, String> {
        match self {
            EngineChoice::Postgres { url } => {
                let (node, group) = (rcfg.node.0, rcfg.group.0);
                let mut options = paxsql_sql::PostgresOptions::new(
                    url.clone(),
                    paxsql_sql::database_name(cluster, node, group),
                );
                options.owner = format!("cluster {cluster:?}, node {node}, group {group}");
                let engine = paxsql_sql::PostgresEngine::open_for_data_dir(options, group_dir)
                    .map_err(|e| e.to_string())?;
                Ok(Box::new(engine))
            }
            EngineChoice::Sqlite => {
                let db_path = group_dir.join("db.sqlite");
                let engine = SqliteEngine::open(&db_path, SqliteOptions::default())
                    .map_err(|e| format!("{}: {e}", db_path.display()))?;
                Ok(Box::new(engine))
            }
        }
    }
}

impl NodeConfig {
    /// A config with the defaults: 10 ms ticks, 5 s request timeout.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, String>, data_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            peers,
            data_dir,
            cluster: "paxsql".into(),
            tick: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
            queue_max: 16_384,
            engine: EngineChoice::Sqlite,
            snapshot_entries: 8192,
            snapshot_bytes: 64 << 20,
            readers: 4,
            reads_max: 256,
            read_timeout: Duration::from_secs(5),
            read_limits: ReadLimits::default(),
            groups: 1,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The peer list does not name this node.
    #[error("--peers does not list this node's id {0}")]
    NotAPeer(NodeId),
    /// A cluster needs at least two nodes (OmniPaxos refuses one).
    #[error("a cluster needs at least 2 nodes; --peers lists {0}")]
    TooFewNodes(usize),
    /// The data dir is unusable or belongs to someone else.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// `--groups` does not fit the data dir or the engine.
    #[error("{0}")]
    Groups(String),
    /// The peer port could not be bound.
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The log or the database could not be opened.
    #[error("cannot open group {group}: {reason}")]
    Open {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

/// A running node, as frontends see it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: NodeConfig,
    epoch: u64,
    next_request: AtomicU64,
    groups: BTreeMap<GroupId, GroupHandle>,
    links: Arc<Links>,
    /// Admits reads: one permit per read running or queued on this node.
    read_permits: Arc<tokio::sync::Semaphore>,
    /// Admits writes by a dry run, on a PostgreSQL cluster only.
    admission: Option<Admission>,
}

/// Dry runs of writes before the log on a PostgreSQL cluster
/// ([`paxsql_sql::PostgresAdmission`]; docs/architecture.md, "Runaway
/// statements on PostgreSQL"): a write whose statement runs past the time
/// the statement budget buys is refused before it could run away on every
/// replica. SQLite needs none: its budget counts work alike everywhere.
#[derive(Debug)]
struct Admission {
    /// Dry-run threads on this node's replica of group 0 (the only group).
    pool: paxsql_sql::PostgresAdmission,
}

/// Dry-run threads per node, each with a connection of its own.
const DRY_RUN_CONNECTIONS: usize = 2;

/// Writes waiting for a dry run on a node at most; more are refused as
/// overloaded.
const DRY_RUN_QUEUE_MAX: usize = 1024;

impl Admission {
    fn open(cfg: &NodeConfig) -> Result<Option<Admission>, StartError> {
        let EngineChoice::Postgres { url } = &cfg.engine else {
            return Ok(None);
        };
        let database = paxsql_sql::database_name(&cfg.cluster, cfg.id.0, 0);
        let pool = paxsql_sql::PostgresAdmission::start(
            url,
            &database,
            cfg.request_timeout,
            DRY_RUN_CONNECTIONS,
            DRY_RUN_QUEUE_MAX,
        )
        .map_err(|e| StartError::Open {
            group: GroupId(0),
            reason: e.to_string(),
        })?;
        Ok(Some(Admission { pool }))
    }

    /// Waits for the write's dry run (on the dry-run threads; this task
    /// only awaits the verdict, at most `wait`); the statements come back
    /// for the log when the write is admitted.
    async fn admit(
        &self,
        stmts: Vec<Statement>,
        wait: Duration,
    ) -> Result<Vec<Statement>, RequestError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.pool.submit(stmts, move |admitted| {
            let _ = tx.send(admitted);
        });
        let (stmts, verdict) = match queued {
            Err(refused) => refused,
            Ok(()) => match tokio::time::timeout(wait, rx).await {
                Ok(Ok(admitted)) => admitted,
                Ok(Err(_)) => {
                    return Err(RequestError::Unavailable(
                        "the write's dry run stopped; retry".into(),
                    ))
                }
                Err(_) => {
                    return Err(RequestError::Unavailable(format!(
                        "the write's dry run did not end within {} ms (the dry runs of \
                         other writes before it took long); it was not applied; retry",
                        wait.as_millis()
                    )))
                }
            },
        };
        match verdict {
            Ok(()) => Ok(stmts),
            Err(paxsql_sql::Refused::OverBudget(m)) => Err(RequestError::BadRequest(m)),
            Err(paxsql_sql::Refused::Unavailable(m)) => Err(RequestError::Unavailable(m)),
            Err(paxsql_sql::Refused::Busy(m)) => Err(RequestError::Overloaded(m)),
        }
    }
}

#[derive(Debug)]
struct GroupHandle {
    tx: SyncSender<GroupInput>,
    status: Arc<Mutex<ReplicaStatus>>,
    health: Arc<Health>,
}

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

/// Starts a node: opens every group's log and database, binds the peer
/// port, and starts the threads and tasks. Must run inside a tokio runtime.
pub async fn start(mut cfg: NodeConfig) -> Result<NodeHandle, StartError> {
    if !cfg.peers.contains_key(&cfg.id) {
        return Err(StartError::NotAPeer(cfg.id));
    }
    let members: Vec<NodeId> = cfg.peers.keys().copied().collect();
    datadir::claim(&cfg.data_dir, cfg.id, &cfg.cluster, &members)?;
    // After a membership change (or a join) the members are the stored
    // ones, not `--peers`.
    let group0 = cfg.data_dir.join("group-0");
    let stored = membership::load(&group0).map_err(|reason| StartError::Open {
        group: GroupId(0),
        reason,
    })?;
    if let Some(m) = stored {
        for (id, addr) in m.peers {
            cfg.peers.insert(id, addr);
        }
    }
    if cfg.peers.len() < 2 {
        return Err(StartError::TooFewNodes(cfg.peers.len()));
    }
    let group_ids = group_ids(cfg.groups);
    check_groups(&cfg, &group_ids)?;
    let addr = cfg.peers[&cfg.id].clone();
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let epoch: u64 = rand::random();

    let mut senders = BTreeMap::new();
    let mut receivers = Vec::new();
    for &g in &group_ids {
        let (tx, rx) = sync_channel(cfg.queue_max);
        senders.insert(g, tx);
        receivers.push((g, rx));
    }
    let inbox = Inbox {
        groups: Arc::new(senders.clone()),
    };
    let links = transport::start_links(cfg.id, &cfg.cluster, &cfg.peers, inbox.clone());

    let mut groups = BTreeMap::new();
    for (g, rx) in receivers {
        let status = Arc::new(Mutex::new(initial_status(cfg.id, g)));
        let health = Arc::new(Health::default());
        let shared = (Arc::clone(&status), Arc::clone(&health));
        spawn_group(&cfg, g, epoch, rx, Arc::clone(&links), shared)?;
        groups.insert(
            g,
            GroupHandle {
                tx: senders[&g].clone(),
                status,
                health,
            },
        );
    }
    // Group 0 first: it is the one reported in full.
    let watched = groups
        .values()
        .map(|g| (Arc::clone(&g.status), g.tx.clone()))
        .collect();
    tokio::spawn(report_loop(Arc::clone(&links), watched));
    tokio::spawn(transport::accept_loop(
        listener,
        cfg.cluster.clone(),
        inbox,
        Arc::clone(&links),
    ));
    let cfg_reads_max = cfg.reads_max.max(1);
    let admission = Admission::open(&cfg)?;
    Ok(NodeHandle {
        inner: Arc::new(Inner {
            cfg,
            epoch,
            next_request: AtomicU64::new(0),
            groups,
            links,
            read_permits: Arc::new(tokio::sync::Semaphore::new(cfg_reads_max)),
            admission,
        }),
    })
}

/// The groups a node with `data_groups` data groups hosts: group 0 alone,
/// or the metadata group 0 and data groups 1..=N.
fn group_ids(data_groups: u32) -> Vec<GroupId> {
    match data_groups {
        0 | 1 => vec![GroupId(0)],
        n => (0..=n).map(GroupId).collect(),
    }
}

/// Refuses a `--groups` the engine or the data dir cannot take.
fn check_groups(cfg: &NodeConfig, ids: &[GroupId]) -> Result<(), StartError> {
    if cfg.groups == 0 || cfg.groups > GROUPS_MAX {
        return Err(StartError::Groups(format!(
            "--groups must be between 1 and {GROUPS_MAX}, not {}",
            cfg.groups
        )));
    }
    if cfg.groups > 1 && matches!(cfg.engine, EngineChoice::Postgres { .. }) {
        return Err(StartError::Groups(
            "sharding (--groups above 1) needs the SQLite engine for now".into(),
        ));
    }
    let on_disk = (0..=GROUPS_MAX + 1)
        .take_while(|g| cfg.data_dir.join(format!("group-{g}")).is_dir())
        .count();
    if on_disk > 0 && on_disk != ids.len() {
        let had = if on_disk == 1 { 1 } else { on_disk - 1 };
        return Err(StartError::Groups(format!(
            "data dir {} holds {had} data group(s); start it with --groups {had} (the number of groups is fixed when a cluster is created)",
            cfg.data_dir.display()
        )));
    }
    Ok(())
}

/// How much slower the clocks of a sharded node's groups tick: many idle
/// groups must not keep the node busy with timers and heartbeats.
pub const SHARDED_TICK_SCALE: u32 = 5;

/// Slows a group's clock by [`SHARDED_TICK_SCALE`]: the tick is longer,
/// and every timer but the election's keeps its length in time. Elections
/// (and the heartbeats between them) come every 500 ms instead of 100 ms,
/// five times fewer messages, at the price of a slower failover.
fn slow_clock(rcfg: &mut ReplicaConfig, tick: Duration) -> Duration {
    let scale = u64::from(SHARDED_TICK_SCALE);
    let keep = |ticks: u64| ticks.div_ceil(scale).max(1);
    rcfg.resend_ticks = keep(rcfg.resend_ticks);
    rcfg.retry_ticks = keep(rcfg.retry_ticks);
    rcfg.request_timeout_ticks = keep(rcfg.request_timeout_ticks);
    rcfg.progress_ticks = keep(rcfg.progress_ticks);
    tick * SHARDED_TICK_SCALE
}

/// Data groups a node hosts at most.
pub const GROUPS_MAX: u32 = 64;

/// The node that should lead `group`: data group g prefers the g-th
/// member (round robin), so leaders spread over the nodes; group 0 of a
/// sharded node prefers the last member, which leads the fewest data groups.
fn preferred_leader(group: GroupId, members: &[NodeId], data_groups: u32) -> Option<NodeId> {
    if data_groups <= 1 || members.is_empty() {
        return None;
    }
    let n = members.len();
    let at = match group.0 {
        0 => n - 1,
        g => (g as usize - 1) % n,
    };
    Some(members[at])
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
    }
}

fn report_of(s: &ReplicaStatus) -> transport::PeerReport {
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
async fn report_loop(
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

fn initial_status(node: NodeId, group: GroupId) -> ReplicaStatus {
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

/// Opens a group's files and starts the thread that owns them. Opening
/// happens on that thread too, and the first error comes back here.
fn spawn_group(
    cfg: &NodeConfig,
    group: GroupId,
    epoch: u64,
    inputs: std::sync::mpsc::Receiver<GroupInput>,
    links: Arc<Links>,
    (status, health): (Arc<Mutex<ReplicaStatus>>, Arc<Health>),
) -> Result<(), StartError> {
    let dir = cfg.data_dir.join(format!("group-{}", group.0));
    let mut rcfg = ReplicaConfig::new(cfg.id, group, cfg.peers.keys().copied().collect(), epoch);
    let stored = membership::load(&dir).map_err(|reason| StartError::Open { group, reason })?;
    if let Some(m) = &stored {
        if !m.peers.contains_key(&cfg.id) {
            let reason = format!(
                "node {} was removed from the cluster (configuration {}); to add it again, \
                 start it with an empty --data-dir and --join",
                cfg.id, m.config_id
            );
            return Err(StartError::Open { group, reason });
        }
        let m = m.to_membership();
        rcfg.nodes = m.nodes;
        rcfg.config_id = m.config_id;
        rcfg.base = m.base.0;
        rcfg.metadata = m.metadata;
    }
    if preferred_leader(group, &rcfg.nodes, cfg.groups) == Some(cfg.id) {
        rcfg.leader_priority = 1;
    }
    rcfg.snapshot_entries = cfg.snapshot_entries.max(1);
    rcfg.snapshot_bytes = cfg.snapshot_bytes;
    let log_options = LogOptions {
        // Trimmed records are dropped when the file is rewritten.
        compact_min_bytes: match cfg.snapshot_bytes {
            0 => LogOptions::default().compact_min_bytes,
            b => (b / 2).max(1 << 16),
        },
        ..LogOptions::default()
    };
    let tick = match cfg.groups {
        0 | 1 => cfg.tick,
        _ => slow_clock(&mut rcfg, cfg.tick),
    };
    let engine = cfg.engine.clone();
    let cluster = cfg.cluster.clone();
    let (readers, reads_max, read_limits) = (cfg.readers, cfg.reads_max, cfg.read_limits);
    let peer_read_timeout = cfg.read_timeout;
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("group-{}", group.0))
        .spawn(move || {
            let config_id = rcfg.config_id;
            let opened =
                open_replica(&dir, rcfg, log_options, &engine, &cluster).and_then(|mut r| {
                    let pool = readers::Readers::start(
                        r.engine_mut(),
                        readers,
                        reads_max,
                        read_limits,
                        group,
                        Arc::clone(&links),
                    )?;
                    Ok((r, pool))
                });
            let (replica, readers) = match opened {
                Ok(r) => {
                    let _ = opened_tx.send(Ok(()));
                    r
                }
                Err(reason) => {
                    let _ = opened_tx.send(Err(reason));
                    return;
                }
            };
            let mut current = config_id;
            let next_config = Box::new(move |m: &paxsql_replica::Membership| {
                let stored = membership::StoredMembership::from_membership(m)?;
                membership::save(&dir, &stored).map_err(|e| format!("{}: {e}", dir.display()))?;
                let path = membership::log_path(&dir, m.config_id);
                let _ = std::fs::remove_file(&path);
                let storage = open_log(&path, log_options)?;
                let _ = std::fs::remove_file(membership::log_path(&dir, current));
                current = m.config_id;
                Ok(storage)
            });
            let watch = Arc::clone(&health);
            let group_loop = GroupLoop {
                group,
                replica,
                inputs,
                links,
                status,
                health,
                readers,
                peer_read_timeout,
                tick,
                next_config,
            };
            // A panic is a bug, but it must not leave the group silently
            // dead: it is recorded as the group's failure, which /status,
            // /readyz and every later request report.
            let run = std::panic::AssertUnwindSafe(|| group_loop.run());
            if let Err(panic) = std::panic::catch_unwind(run) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(group = group.0, %what, "the group thread panicked; this group stops on this node");
                metrics::record_group_failed(group);
                watch.fail(format!("the group thread panicked: {what}"));
            }
        })
        .map_err(|e| StartError::Open {
            group,
            reason: e.to_string(),
        })?;
    opened_rx
        .recv()
        .unwrap_or_else(|_| Err("group thread died while opening".into()))
        .map_err(|reason| StartError::Open { group, reason })
}

type NodeLog = DurableStorage<paxsql_types::Entry, OsLogFile>;
type NodeReplica = Replica<Box<dyn SqlEngine + Send>, NodeLog>;

fn open_replica(
    dir: &std::path::Path,
    rcfg: ReplicaConfig,
    log_options: LogOptions,
    engine: &EngineChoice,
    cluster: &str,
) -> Result<NodeReplica, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let storage = open_log(&membership::log_path(dir, rcfg.config_id), log_options)?;
    let engine = engine.open(dir, cluster, &rcfg)?;
    Replica::open(rcfg, storage, engine).map_err(|e| e.to_string())
}

fn open_log(path: &std::path::Path, options: LogOptions) -> Result<NodeLog, String> {
    let file = OsLogFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    DurableStorage::open_with_options(file, options).map_err(|e| format!("{}: {e}", path.display()))
}

impl NodeHandle {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.cfg.id
    }

    /// The groups this node hosts (group 0 first).
    pub fn groups(&self) -> Vec<GroupId> {
        self.inner.groups.keys().copied().collect()
    }

    /// The data groups: group 0 alone on an unsharded node, else 1..=N.
    pub fn data_groups(&self) -> Vec<GroupId> {
        group_ids(self.inner.cfg.groups)
            .into_iter()
            .filter(|g| self.inner.cfg.groups <= 1 || g.0 > 0)
            .collect()
    }

    /// Whether the database is spread over data groups 1..=N, group 0
    /// holding only the shard map (`--groups` above 1).
    pub fn is_sharded(&self) -> bool {
        self.inner.cfg.groups > 1
    }

    /// `metadata` for the shard map's group, `data` for the others.
    fn group_kind(&self, group: GroupId) -> &'static str {
        match self.is_sharded() && group.0 == 0 {
            true => "metadata",
            false => "data",
        }
    }

    /// The node a group's replica here believes leads it.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.inner
            .groups
            .get(&group)
            .and_then(|_| self.group_status(group).leader)
    }

    /// Runs statements through group 0's log (see [`Self::write_to`]).
    pub async fn write(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
        id: Option<RequestId>,
    ) -> Result<Response, RequestError> {
        self.write_to(GroupId(0), stmts, transaction, id).await
    }

    /// Runs statements through a group's log (on PostgreSQL, after a dry
    /// run admitted them: see `Admission`).
    pub async fn write_to(
        &self,
        group: GroupId,
        stmts: Vec<Statement>,
        transaction: bool,
        id: Option<RequestId>,
    ) -> Result<Response, RequestError> {
        if stmts.is_empty() {
            return Err(RequestError::BadRequest("no statements given".into()));
        }
        self.hosts(group)?;
        let started = std::time::Instant::now();
        let admitted = match &self.inner.admission {
            None => Ok(stmts),
            // A stopped group's replica says so, rather than its dry run.
            Some(admission) => match self.running(group) {
                Ok(()) => admission.admit(stmts, self.inner.cfg.request_timeout).await,
                Err(e) => Err(e),
            },
        };
        let stmts = match admitted {
            Ok(stmts) => stmts,
            Err(e) => {
                let refused = Err(e);
                metrics::record_request("write", "-", &refused, started.elapsed());
                return refused;
            }
        };
        let id = id.unwrap_or_else(|| self.fresh_request_id());
        let env = ApplyEnv {
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            seed: rand::random(),
        };
        let req = ClientRequest::Write {
            id,
            stmts,
            transaction,
            env,
        };
        let result = self.call(group, req).await;
        metrics::record_request("write", "-", &result, started.elapsed());
        result
    }

    /// Runs read-only statements at a level, within `timeout` (the node's
    /// `read_timeout` when `None`): waiting for the level and running the
    /// statements together. Reads beyond the node's `reads_max` at once
    /// are refused as overloaded.
    pub async fn read(
        &self,
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        self.read_from(GroupId(0), stmts, level, timeout).await
    }

    /// Runs read-only statements on one group (see [`Self::read`]).
    pub async fn read_from(
        &self,
        group: GroupId,
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        self.hosts(group)?;
        if stmts.is_empty() {
            return Err(RequestError::BadRequest("no statements given".into()));
        }
        let Ok(_permit) = self.inner.read_permits.try_acquire() else {
            metrics::record_read_refused();
            return Err(RequestError::Overloaded(format!(
                "{} reads are already running or queued on this node (--reads-max);                  retry after a moment",
                self.inner.cfg.reads_max
            )));
        };
        let started = std::time::Instant::now();
        let timeout = timeout.unwrap_or(self.inner.cfg.read_timeout);
        let req = ClientRequest::Read { stmts, level };
        let result = self.call_within(group, req, timeout).await;
        metrics::record_request("read", level.as_str(), &result, started.elapsed());
        result
    }

    /// Reads when every statement only reads, writes otherwise.
    pub async fn request(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
        id: Option<RequestId>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        if all_reads(self.inner.cfg.engine.dialect(), &stmts) {
            self.read(stmts, level, timeout).await
        } else {
            self.write(stmts, transaction, id).await
        }
    }

    /// Adds node `id`, reachable at peer address `addr`, to every group:
    /// a StopSign through the log, then a new configuration with it. The
    /// new node gets the data by snapshot. Answers the configuration it
    /// joins, for it to record before it starts. Asking again for a node
    /// already a member at that address answers the current configuration.
    pub async fn join(
        &self,
        id: NodeId,
        addr: String,
    ) -> Result<membership::StoredMembership, RequestError> {
        self.unsharded_membership()?;
        if matches!(self.inner.cfg.engine, EngineChoice::Postgres { .. }) {
            return Err(RequestError::BadRequest(
                "a new node gets the data by snapshot, which the PostgreSQL engine does not \
                 have yet: nodes can be removed from a PostgreSQL cluster but not added"
                    .into(),
            ));
        }
        let s = self.group_status(GroupId(0));
        let mut peers = self.member_addresses(&s.members);
        if let Some(known) = peers.get(&id) {
            if *known != addr {
                return Err(RequestError::BadRequest(format!(
                    "node {id} is already a member, at {known}; remove it first"
                )));
            }
            return Ok(membership::StoredMembership {
                config_id: s.config_id,
                base: s.base.0,
                peers,
            });
        }
        peers.insert(id, addr);
        self.change_members(peers).await
    }

    /// Removes node `id` from every group (see [`Self::join`]).
    pub async fn remove(&self, id: NodeId) -> Result<membership::StoredMembership, RequestError> {
        self.unsharded_membership()?;
        let s = self.group_status(GroupId(0));
        let mut peers = self.member_addresses(&s.members);
        if peers.remove(&id).is_none() {
            return Err(RequestError::BadRequest(format!(
                "node {id} is not a member (members: {:?})",
                s.members.iter().map(|m| m.0).collect::<Vec<_>>()
            )));
        }
        if peers.len() < 2 {
            return Err(RequestError::BadRequest(
                "a cluster needs at least two members".into(),
            ));
        }
        self.change_members(peers).await
    }

    fn unsharded_membership(&self) -> Result<(), RequestError> {
        match self.inner.cfg.groups {
            0 | 1 => Ok(()),
            _ => Err(RequestError::BadRequest(
                "membership changes of a sharded cluster (--groups above 1) are not supported \
                 yet: every group would have to change"
                    .into(),
            )),
        }
    }

    async fn change_members(
        &self,
        peers: BTreeMap<NodeId, String>,
    ) -> Result<membership::StoredMembership, RequestError> {
        let req = ClientRequest::Reconfigure {
            nodes: peers.keys().copied().collect(),
            metadata: membership::encode_peers(&peers),
        };
        let before = self.group_status(GroupId(0)).config_id;
        let r = self.call(GroupId(0), req).await?;
        Ok(membership::StoredMembership {
            config_id: before + 1,
            base: r.index.0,
            peers,
        })
    }

    fn member_addresses(&self, members: &[NodeId]) -> BTreeMap<NodeId, String> {
        let known = self.inner.links.peers();
        members
            .iter()
            .filter_map(|m| known.get(m).map(|a| (*m, a.clone())))
            .collect()
    }

    /// A consistent copy of the database (SQLite file bytes) and the
    /// applied index it reflects. At `local` level the state now; otherwise
    /// every write acknowledged before the call is in it.
    pub async fn backup(&self, level: ReadLevel) -> Result<(Vec<u8>, LogIndex), RequestError> {
        let seq = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let dir = self.inner.cfg.data_dir.join("backups");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| RequestError::Unavailable(format!("backup dir: {e}")))?;
        let dest = dir.join(format!("backup-{seq}.sqlite"));
        let req = ClientRequest::Backup {
            dest: dest.clone(),
            level,
        };
        let result = self.call(GroupId(0), req).await;
        let bytes = match &result {
            Ok(_) => tokio::fs::read(&dest)
                .await
                .map_err(|e| RequestError::Unavailable(format!("reading the backup: {e}"))),
            Err(e) => Err(e.clone()),
        };
        let _ = tokio::fs::remove_file(&dest).await;
        Ok((bytes?, result?.index))
    }

    /// Loads a SQLite database file into the cluster through the log, as
    /// one all-or-nothing write: its tables replace tables of the same name.
    pub async fn load(
        &self,
        image: Vec<u8>,
        id: Option<RequestId>,
    ) -> Result<Response, RequestError> {
        let stmts = tokio::task::spawn_blocking(move || paxsql_sql::image_to_statements(&image))
            .await
            .map_err(|e| RequestError::Unavailable(format!("reading the file: {e}")))?
            .map_err(RequestError::BadRequest)?;
        self.write(stmts, true, id).await
    }

    async fn call(&self, group: GroupId, req: ClientRequest) -> Result<Response, RequestError> {
        self.call_within(group, req, self.inner.cfg.request_timeout)
            .await
    }

    /// Queues a request for a group's thread and waits for the answer, at
    /// most `timeout` (plus a second's grace for the replica's own answer).
    async fn call_within(
        &self,
        group: GroupId,
        req: ClientRequest,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        self.running(group)?;
        let handle = &self.inner.groups[&group];
        let (reply, rx) = tokio::sync::oneshot::channel();
        let deadline = std::time::Instant::now() + timeout;
        match handle.tx.try_send(GroupInput::Client {
            req,
            reply,
            deadline,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(RequestError::Overloaded(format!(
                    "group {group} has {} requests queued",
                    self.inner.cfg.queue_max
                )))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(RequestError::Unavailable(format!(
                    "group {group} has stopped"
                )))
            }
        }
        // The replica answers by its own deadline; this one only guards
        // against a group thread that stopped answering.
        let guard = timeout + Duration::from_secs(1);
        match tokio::time::timeout(guard, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Unavailable(format!(
                "group {group} has stopped"
            ))),
            Err(_) => Err(self.why_no_answer(group)),
        }
    }

    /// Whether this node hosts a group.
    fn hosts(&self, group: GroupId) -> Result<(), RequestError> {
        match self.inner.groups.contains_key(&group) {
            true => Ok(()),
            false => Err(RequestError::BadRequest(format!(
                "group {group} does not exist (this cluster has groups {:?})",
                self.groups().iter().map(|g| g.0).collect::<Vec<_>>()
            ))),
        }
    }

    /// Whether a group still runs on this node; if it stopped, the error
    /// every request to it gets.
    fn running(&self, group: GroupId) -> Result<(), RequestError> {
        match self.inner.groups[&group].health.stopped(group) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// The error for a request that got no answer in time, naming the
    /// cause this node can see.
    fn why_no_answer(&self, group: GroupId) -> RequestError {
        let handle = &self.inner.groups[&group];
        let busy = handle.health.busy_for();
        if busy >= Duration::from_millis(500) {
            return RequestError::Unavailable(format!(
                "group {group} is busy: its thread has been applying one batch of the log for \
                 {} ms; retry with the same request id (it is applied at most once)",
                busy.as_millis()
            ));
        }
        RequestError::timeout("request")
    }

    /// A request id unique in the cluster, for a client that gave none.
    pub fn fresh_request_id(&self) -> RequestId {
        let seq = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        RequestId(format!(
            "{}-{:016x}-{seq}",
            self.inner.cfg.id, self.inner.epoch
        ))
    }

    fn group_status(&self, g: GroupId) -> ReplicaStatus {
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

    /// Cuts this node off from all peers (true) or reconnects it (false),
    /// while it keeps running. For fault-injection tests.
    pub fn set_isolated(&self, isolated: bool) {
        self.inner.links.isolated.store(isolated, Ordering::Relaxed);
        tracing::warn!(isolated, "fault switch flipped");
    }
}
