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
mod start;
mod status;
mod transport;

pub use datadir::DataDirError;
pub use paxsql_sql::ReadLimits;
pub use start::{start, GROUPS_MAX, SHARDED_TICK_SCALE};
pub use status::{GroupStatus, NodeStatus, PeerStatus};

use group::{GroupInput, Health};
use paxsql_log::{DurableStorage, LogOptions, OsLogFile};
use paxsql_replica::{all_reads, ClientRequest, Replica, ReplicaConfig, ReplicaStatus};
use paxsql_sql::{Dialect, SqlEngine, SqliteEngine, SqliteOptions};
use paxsql_types::{
    ApplyEnv, GroupId, LogIndex, NodeId, ReadLevel, RequestError, RequestId, Response, Statement,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use transport::Links;

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
    /// `linearizable` reads by read index (true, the default) or by a
    /// barrier entry through the log only (false).
    pub read_index: bool,
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
            read_index: true,
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
        start::group_ids(self.inner.cfg.groups)
            .into_iter()
            .filter(|g| self.inner.cfg.groups <= 1 || g.0 > 0)
            .collect()
    }

    /// Whether the database is spread over data groups 1..=N, group 0
    /// holding only the shard map (`--groups` above 1).
    pub fn is_sharded(&self) -> bool {
        self.inner.cfg.groups > 1
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
        self.write_with(group, stmts, transaction, id, fresh_env())
            .await
    }

    /// Commits an interactive transaction on a group: its statements led by
    /// its `PAXSQL EXPECT` directive, with the clock and randomness its
    /// probes ran with (see [`Self::probe_on`]).
    pub async fn commit_on(
        &self,
        group: GroupId,
        stmts: Vec<Statement>,
        id: Option<RequestId>,
        env: ApplyEnv,
    ) -> Result<Response, RequestError> {
        self.write_with(group, stmts, true, id, env).await
    }

    /// Runs an interactive transaction's statements so far on a group at a
    /// linearizable point and rolls them back: their results as if applied
    /// now. Counted and bounded like a read (`--reads-max`, `timeout`).
    pub async fn probe_on(
        &self,
        group: GroupId,
        stmts: Vec<Statement>,
        env: ApplyEnv,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        let req = ClientRequest::Probe { stmts, env };
        self.read_like(group, req, ("probe", "linearizable"), timeout)
            .await
    }

    async fn write_with(
        &self,
        group: GroupId,
        stmts: Vec<Statement>,
        transaction: bool,
        id: Option<RequestId>,
        env: ApplyEnv,
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
        let req = ClientRequest::Read { stmts, level };
        self.read_like(group, req, ("read", level.as_str()), timeout)
            .await
    }

    /// A read or a probe: refused beyond `--reads-max` at once, answered
    /// within `timeout` (the node's read timeout when `None`), counted in
    /// the metrics as `(operation, level)`.
    async fn read_like(
        &self,
        group: GroupId,
        req: ClientRequest,
        metric: (&'static str, &'static str),
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        self.hosts(group)?;
        if let ClientRequest::Read { stmts, .. } | ClientRequest::Probe { stmts, .. } = &req {
            if stmts.is_empty() {
                return Err(RequestError::BadRequest("no statements given".into()));
            }
        }
        let Ok(_permit) = self.inner.read_permits.try_acquire() else {
            metrics::record_read_refused();
            return Err(RequestError::Overloaded(format!(
                "{} reads are already running or queued on this node (--reads-max); retry \
                 after a moment",
                self.inner.cfg.reads_max
            )));
        };
        let started = std::time::Instant::now();
        let timeout = timeout.unwrap_or(self.inner.cfg.read_timeout);
        let result = self.call_within(group, req, timeout).await;
        metrics::record_request(metric.0, metric.1, &result, started.elapsed());
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

    /// Cuts this node off from all peers (true) or reconnects it (false),
    /// while it keeps running. For fault-injection tests.
    pub fn set_isolated(&self, isolated: bool) {
        self.inner.links.isolated.store(isolated, Ordering::Relaxed);
        tracing::warn!(isolated, "fault switch flipped");
    }
}

/// A write's clock and randomness, fixed when it is submitted: the time now
/// and a random seed. An interactive transaction takes one at its start
/// and keeps it for every probe and its commit.
pub fn fresh_env() -> ApplyEnv {
    ApplyEnv {
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        seed: rand::random(),
    }
}
