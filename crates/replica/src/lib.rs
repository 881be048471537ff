//! One replication group's replica on one node: an OmniPaxos instance, the
//! SQL engine it feeds, and the bookkeeping of the clients waiting on it.
//!
//! The replica does no IO of its own. Its owner (a thread in production, the
//! simulator in tests) feeds it inputs — [`Replica::tick`],
//! [`Replica::receive`], [`Replica::connected`], [`Replica::submit`] — and
//! then calls [`Replica::poll`], which returns what to send and whom to
//! answer. Storage and the SQL engine are called synchronously inside; both
//! are traits, so the simulator plugs in a disk that can lose unsynced bytes.
//!
//! # The driving loop
//!
//! Every [`Replica::poll`] runs these steps in this order; the order is what
//! makes the replica safe:
//!
//! 1. **Propose.** Client writes and read barriers queued since the last poll
//!    become one log entry (application-level batching). If this node
//!    believes it leads, the entry is appended to OmniPaxos; otherwise it is
//!    sent to the believed leader as a [`PeerMsg::Forward`] (OmniPaxos' own
//!    forwarding is fire-and-forget and can be lost: pending proposals are
//!    re-sent on a timer and on every leader change, and the engine's
//!    request-id table makes the repeats harmless).
//! 2. **Persist.** Everything OmniPaxos wrote to the log storage since the
//!    last poll is made durable with one `sync` (group commit).
//! 3. **Send.** Only now are OmniPaxos' outgoing messages released: a promise
//!    or an accepted entry is never announced before it is on disk.
//! 4. **Apply.** Decided entries are applied in log order, each in one engine
//!    transaction together with the applied index and completed request ids.
//!    Writers waiting on this node get their results; linearizable reads
//!    waiting on a barrier that has now been applied are served.
//!
//! # Read levels
//!
//! - `local`: served from the engine at once.
//! - `leader`: served at once if this node believes it leads, otherwise
//!   forwarded to the believed leader, which serves it only if it still
//!   believes it leads; the answer comes back through this node.
//! - `linearizable`: by **read index** (see the `read_index` module): the
//!   leader takes the end of its log as the read's index and confirms with
//!   one round of messages that a majority still follows its ballot; the
//!   read runs once this replica has applied that far (a follower asks the
//!   leader for the index and reads itself). No log entry, no fsync. The
//!   fallback, and the only path with `ReplicaConfig::read_index` off: a
//!   *barrier* — a no-op entry proposed by this node after the read arrived
//!   — applied here. The barrier is decided after every write acknowledged
//!   before the read began, so applying up to it covers them. A node cut
//!   off from the majority neither confirms an index nor sees its barrier
//!   decided, so it answers "unavailable" rather than stale data. Reads that
//!   arrive together share one round (or one barrier).

mod read_index;
mod snapshot;
mod storage;

use read_index::ReadIndex;
pub use storage::LogStorage;
use storage::Shared;

use omnipaxos::messages::Message;
use omnipaxos::util::LogEntry;
use omnipaxos::{ClusterConfig, OmniPaxos, ServerConfig};
use paxsql_sql::{determinism, Applied, Dialect, EngineError, SqlEngine};
use paxsql_types::{
    ApplyEnv, BarrierId, Entry, GroupId, LogIndex, NodeId, Proposal, ReadLevel, RequestError,
    RequestId, Response, Statement, StmtResult, WriteRequest,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Names a client waiting on this replica; chosen by the owner.
pub type ClientToken = u64;

/// Settings of one replica. Times are in ticks of the owner's clock.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This node.
    pub node: NodeId,
    /// The group this replica belongs to.
    pub group: GroupId,
    /// Every node of the group's current configuration, this one included.
    pub nodes: Vec<NodeId>,
    /// The current configuration (1 for the first; each membership change
    /// starts the next).
    pub config_id: u32,
    /// The log index at which the current configuration's log starts: a new
    /// configuration is a new OmniPaxos instance whose log counts from 0,
    /// and its entry `i` is the group's entry `base + i`.
    pub base: u64,
    /// What the StopSign that started the current configuration carried
    /// (empty for the first).
    pub metadata: Vec<u8>,
    /// Distinguishes this run of the node from earlier ones (random at start).
    pub epoch: u64,
    /// Ticks between heartbeat rounds of leader election.
    pub election_ticks: u64,
    /// OmniPaxos' leader priority of this replica: of the replicas that
    /// can lead, the one with the highest becomes leader (the node layer
    /// spreads the leaders of its groups over the nodes this way).
    pub leader_priority: u32,
    /// Ticks before OmniPaxos resends a message it thinks was lost.
    pub resend_ticks: u64,
    /// Ticks before a proposal not yet applied is sent again.
    pub retry_ticks: u64,
    /// Ticks a client waits at most for its answer.
    pub request_timeout_ticks: u64,
    /// Proposals carried by one log entry at most.
    pub batch_proposals_max: usize,
    /// Requests waiting on this replica at most; more are refused.
    pub inflight_max: usize,
    /// Applied entries above the trimmed prefix of the log that make the
    /// replica persist its database and trim the log.
    pub snapshot_entries: u64,
    /// Bytes of log on disk that do the same whatever the entry count
    /// (0: no byte limit).
    pub snapshot_bytes: u64,
    /// Bytes of a database image carried by one peer message.
    pub snapshot_chunk_bytes: usize,
    /// Ticks between progress reports to the other replicas.
    pub progress_ticks: u64,
    /// Serve `linearizable` reads by read index (a round of messages
    /// confirming the leader, no log entry); `false`: every such read waits
    /// for a barrier entry through the log (the fallback either way).
    pub read_index: bool,
    /// Deliberately unsafe behaviour, for proving that the simulator's
    /// checks catch bugs. Never set outside those tests.
    #[doc(hidden)]
    pub broken: Option<Broken>,
}

/// A deliberately unsafe mode (see [`ReplicaConfig::broken`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// Serve `linearizable` reads from local state, without a barrier.
    ReadsWithoutBarrier,
    /// Release OmniPaxos' messages before the log is synced: they leave at
    /// once, and the log is synced only every `election_ticks` ticks.
    SendBeforeSync,
    /// Confirm a read index without asking a majority: a leader that was
    /// deposed without noticing serves stale reads.
    ReadIndexWithoutQuorum,
}

impl ReplicaConfig {
    /// Settings for a 10 ms tick: election every 100 ms, resend after
    /// 200 ms, retry after 500 ms, give up after 5 s.
    pub fn new(node: NodeId, group: GroupId, nodes: Vec<NodeId>, epoch: u64) -> Self {
        ReplicaConfig {
            node,
            group,
            nodes,
            config_id: 1,
            base: 0,
            metadata: Vec::new(),
            epoch,
            election_ticks: 10,
            leader_priority: 0,
            resend_ticks: 20,
            retry_ticks: 50,
            request_timeout_ticks: 500,
            batch_proposals_max: 4096,
            inflight_max: 16_384,
            snapshot_entries: 8192,
            snapshot_bytes: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
            progress_ticks: 50,
            read_index: true,
            broken: None,
        }
    }
}

/// What a client asks of a replica.
#[derive(Clone, Debug)]
pub enum ClientRequest {
    /// Statements to run through the log.
    Write {
        /// Applied at most once per id.
        id: RequestId,
        /// In order.
        stmts: Vec<Statement>,
        /// All or none.
        transaction: bool,
        /// Clock and randomness fixed for this write.
        env: ApplyEnv,
    },
    /// Read-only statements at a level.
    Read {
        /// In order.
        stmts: Vec<Statement>,
        /// How fresh.
        level: ReadLevel,
    },
    /// Change the group's members: a StopSign through the log, after which
    /// the replicas of the new member list start the next configuration
    /// (see [`Output::Reconfigured`]). Answered once the StopSign is applied
    /// here.
    Reconfigure {
        /// The members after the change.
        nodes: Vec<NodeId>,
        /// Carried with the StopSign to every replica (the node layer puts
        /// the members' addresses there).
        metadata: Vec<u8>,
    },
    /// A consistent copy of the database written to `dest`: at `local`
    /// level the state now, otherwise the state after a barrier (every
    /// write acknowledged before the request is in it).
    Backup {
        /// Where the copy goes (replaced if present).
        dest: std::path::PathBuf,
        /// How fresh.
        level: ReadLevel,
    },
    /// A transaction's statements so far, run at a linearizable point on
    /// the engine and rolled back: the answer is what they would return if
    /// applied now ([`SqlEngine::probe`]; see `paxsql_sql::txn`).
    Probe {
        /// In order.
        stmts: Vec<Statement>,
        /// The transaction's clock and randomness, the same for every
        /// probe and for its commit.
        env: ApplyEnv,
    },
}

/// What replicas of one group say to each other.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerMsg {
    /// OmniPaxos' own protocol, within one configuration.
    Paxos {
        /// The sender's configuration; messages of another are not handed
        /// to OmniPaxos.
        config: u32,
        /// The message.
        msg: Message<Entry>,
    },
    /// Proposals for the leader to append.
    Forward(Vec<Proposal>),
    /// A `leader`-level read for the node that believes it leads.
    LeaderRead {
        /// The asking node's id for this read.
        id: u64,
        /// The statements.
        stmts: Vec<Statement>,
    },
    /// The answer to a [`PeerMsg::LeaderRead`].
    LeaderReadReply {
        /// The asking node's id for this read.
        id: u64,
        /// The answer.
        result: Result<Response, RequestError>,
    },
    /// A leader confirming a read index asks for the receiver's promise.
    ReadIndexPing {
        /// The leader's run (answers to an earlier run's pings are ignored).
        epoch: u64,
        /// The round.
        seq: u64,
        /// The ballot the leader leads with.
        ballot: omnipaxos::ballot_leader_election::Ballot,
    },
    /// The answer to a [`PeerMsg::ReadIndexPing`].
    ReadIndexAck {
        /// The leader's run, as in the ping.
        epoch: u64,
        /// The round.
        seq: u64,
        /// The ballot the receiver has promised.
        promise: omnipaxos::ballot_leader_election::Ballot,
    },
    /// A follower asks the leader for a read index.
    ReadIndexAsk {
        /// The follower's run.
        epoch: u64,
        /// The follower's id for the ask.
        id: u64,
    },
    /// The leader's answer to a [`PeerMsg::ReadIndexAsk`]: the confirmed
    /// index, or `None` (no longer leading, not confirmed in time).
    ReadIndexReply {
        /// The follower's run, as in the ask.
        epoch: u64,
        /// The follower's id for the ask.
        id: u64,
        /// Entries the follower must have applied before it reads.
        index: Option<LogIndex>,
    },
    /// How far the sender is; sent every few ticks. Replicas trim their logs
    /// no further than live peers still need, and a replica that learns it
    /// is behind a peer's trimmed prefix fetches a snapshot.
    Progress {
        /// Entries the sender has applied.
        applied: LogIndex,
        /// Entries trimmed from the sender's log.
        compacted: LogIndex,
    },
    /// The receiver's log ends below the sender's trimmed prefix, so the
    /// sender cannot bring it up to date entry by entry: fetch a snapshot.
    SnapshotNeeded {
        /// Entries trimmed from the sender's log.
        compacted: LogIndex,
    },
    /// Asks for the bytes of a database image from `offset`; offset 0 asks
    /// for a fresh image.
    SnapshotRequest {
        /// First byte wanted.
        offset: u64,
    },
    /// The receiver spoke in a configuration that has ended: this is the
    /// one that followed it.
    ConfigChanged(Membership),
    /// A piece of a database image.
    SnapshotChunk {
        /// The applied index the image reflects.
        index: LogIndex,
        /// Bytes in the whole image.
        total: u64,
        /// crc32c of the whole image.
        checksum: u32,
        /// Where `data` starts.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// What the owner must do after a [`Replica::poll`].
#[derive(Clone, Debug)]
pub enum Output {
    /// Send a message to a peer's replica of this group.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// Run a read now, off the replica's thread (on a reader connection
    /// of the engine), and answer it: the replica has applied what the
    /// read's level needs, and any state from now on is fresh enough.
    Read {
        /// Whom the answer goes to.
        to: ReadFor,
        /// The statements.
        stmts: Vec<Statement>,
    },
    /// Answer a waiting client.
    Reply {
        /// Who.
        token: ClientToken,
        /// The answer.
        result: Result<Response, RequestError>,
    },
    /// The configuration ended with a StopSign, every entry before it is
    /// applied. The owner records the new membership durably, then calls
    /// [`Replica::start_config`] with an empty log for it (also when this
    /// node is not a member any more: the replica then refuses requests).
    Reconfigured(Membership),
}

/// Whom a read's answer goes to (see [`Output::Read`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFor {
    /// A client waiting on this node.
    Client(ClientToken),
    /// A peer that sent a [`PeerMsg::LeaderRead`]: the answer goes back as
    /// a [`PeerMsg::LeaderReadReply`] with this id.
    Peer {
        /// The asking node.
        node: NodeId,
        /// Its id for the read.
        id: u64,
    },
}

/// A group configuration: who the members are and where its log starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The configuration's id (1 for the first).
    pub config_id: u32,
    /// Its members.
    pub nodes: Vec<NodeId>,
    /// The group log index its log starts at.
    pub base: LogIndex,
    /// What the StopSign that started it carried.
    pub metadata: Vec<u8>,
}

/// A replica that cannot go on: its storage or engine failed. The owner
/// must stop it; continuing could diverge it from the others.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The log storage failed to sync.
    #[error("log storage failed: {0}")]
    Log(#[from] std::io::Error),
    /// The SQL engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// OmniPaxos rejected the configuration.
    #[error("invalid group configuration: {0}")]
    Config(String),
}

/// The replica's role as far as this node can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Believes it leads and is in the accept phase.
    Leader,
    /// Follows a known leader.
    Follower,
    /// Knows no leader.
    Candidate,
}

/// A snapshot of a replica's state for status pages and checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// This node.
    pub node: NodeId,
    /// This group.
    pub group: GroupId,
    /// As far as this node can tell.
    pub role: Role,
    /// The node this replica believes leads, if any.
    pub leader: Option<NodeId>,
    /// The ballot number this replica has promised.
    pub ballot: u32,
    /// Entries known decided.
    pub decided: LogIndex,
    /// Entries applied to the engine.
    pub applied: LogIndex,
    /// Entries in this replica's log.
    pub accepted: LogIndex,
    /// Clients waiting.
    pub inflight: usize,
    /// Leader changes seen since start.
    pub leader_changes: u64,
    /// Proposals (writes and barriers) put into log entries since start.
    pub proposals: u64,
    /// Log entries this node proposed (or forwarded) since start; with
    /// `proposals` it gives the mean batch size.
    pub entries_proposed: u64,
    /// Bytes the log occupies on disk.
    pub log_bytes: u64,
    /// Entries trimmed from the log (the log holds `compacted..accepted`).
    pub compacted: LogIndex,
    /// Times this replica trimmed its log since start.
    pub snapshots_taken: u64,
    /// Database images this replica installed since start.
    pub snapshots_installed: u64,
    /// Database images this replica sent to peers since start.
    pub snapshots_sent: u64,
    /// The current configuration.
    pub config_id: u32,
    /// Its members.
    pub members: Vec<NodeId>,
    /// The group log index its log starts at.
    pub base: LogIndex,
    /// This node is not a member any more.
    pub removed: bool,
    /// The work one replicated statement may do (see
    /// [`paxsql_sql::settings`]), if the engine counts work.
    pub statement_budget: Option<u64>,
}

struct PendingWrite {
    tokens: Vec<ClientToken>,
    proposal: Proposal,
    deadline: u64,
    retry_at: u64,
}

struct PendingRead {
    token: ClientToken,
    what: ReadWhat,
    deadline: u64,
}

/// What a linearizable read does once its point is applied.
enum ReadWhat {
    /// Read-only statements, run by the owner (on a reader).
    Query(Vec<Statement>),
    /// A copy of the database written there.
    Backup(std::path::PathBuf),
    /// A transaction's statements so far, run on the engine and rolled
    /// back ([`SqlEngine::probe`]), here on the replica's thread.
    Probe(Vec<Statement>, ApplyEnv),
}

struct PendingBarrier {
    proposal: Proposal,
    reads: Vec<PendingRead>,
    retry_at: u64,
}

/// One group's replica on one node. See the crate docs for the loop.
pub struct Replica<E: SqlEngine, S: LogStorage> {
    cfg: ReplicaConfig,
    /// How `op` was built, to build it again after a snapshot install.
    cluster: ClusterConfig,
    server: ServerConfig,
    op: OmniPaxos<Entry, Shared<S>>,
    /// The same storage OmniPaxos writes to, for `sync`.
    storage: Shared<S>,
    engine: E,
    /// The owner's clock, in ticks.
    now: u64,
    /// Proposals to make at the next poll.
    queue: Vec<Proposal>,
    /// Ordered maps, not hash maps: retries and timeouts walk them, and the
    /// simulator needs the same walk on every run of a seed.
    writes: BTreeMap<RequestId, PendingWrite>,
    /// Linearizable reads that arrived since the last barrier was proposed.
    reads_unbarriered: Vec<PendingRead>,
    /// Barriers proposed and not yet applied, by sequence number.
    barriers: BTreeMap<u64, PendingBarrier>,
    /// Linearizable reads on the read-index path.
    ri: ReadIndex,
    next_barrier_seq: u64,
    /// `leader` reads forwarded to the leader, by id.
    leader_reads: BTreeMap<u64, (ClientToken, u64)>,
    next_leader_read: u64,
    outputs: Vec<Output>,
    last_leader: Option<NodeId>,
    /// Counts leader changes seen, for metrics.
    leader_changes: u64,
    proposals: u64,
    entries_proposed: u64,
    /// Log compaction and snapshot transfer.
    snap: snapshot::SnapshotState,
    /// Membership changes asked for here and not yet applied.
    reconfigs: Vec<PendingReconfig>,
    /// Set once this configuration's StopSign is applied, until the owner
    /// starts the next one.
    stopped: Option<Membership>,
    /// This node is not a member of the group any more.
    removed: bool,
}

struct PendingReconfig {
    token: ClientToken,
    nodes: Vec<NodeId>,
    metadata: Vec<u8>,
    deadline: u64,
    retry_at: u64,
}

impl<E: SqlEngine, S: LogStorage> std::fmt::Debug for Replica<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("status", &self.status())
            .finish()
    }
}

impl<E: SqlEngine, S: LogStorage> Replica<E, S> {
    /// Builds a replica from its storage and engine, as found on disk.
    pub fn open(cfg: ReplicaConfig, storage: S, engine: E) -> Result<Self, ReplicaError> {
        let cluster = ClusterConfig {
            configuration_id: cfg.config_id,
            nodes: cfg.nodes.iter().map(|n| n.0).collect(),
            flexible_quorum: None,
        };
        let server = ServerConfig {
            pid: cfg.node.0,
            election_tick_timeout: cfg.election_ticks,
            resend_message_tick_timeout: cfg.resend_ticks,
            batch_size: 1,
            leader_priority: cfg.leader_priority,
            ..ServerConfig::default()
        };
        let storage = Shared(std::rc::Rc::new(std::cell::RefCell::new(storage)));
        let op = cluster
            .clone()
            .build_for_server(server.clone(), storage.clone())
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        Ok(Replica {
            cfg,
            cluster,
            server,
            op,
            storage,
            engine,
            now: 0,
            queue: Vec::new(),
            writes: BTreeMap::new(),
            reads_unbarriered: Vec::new(),
            barriers: BTreeMap::new(),
            ri: ReadIndex::default(),
            next_barrier_seq: 0,
            leader_reads: BTreeMap::new(),
            next_leader_read: 0,
            outputs: Vec::new(),
            last_leader: None,
            leader_changes: 0,
            proposals: 0,
            entries_proposed: 0,
            snap: snapshot::SnapshotState::default(),
            reconfigs: Vec::new(),
            stopped: None,
            removed: false,
        })
    }

    /// Starts the configuration that [`Output::Reconfigured`] announced,
    /// on `storage`, an empty log kept for it. Requests still waiting are
    /// proposed again in it (their ids keep them from applying twice).
    pub fn start_config(&mut self, m: &Membership, storage: S) -> Result<(), ReplicaError> {
        self.stopped = None;
        if !m.nodes.contains(&self.cfg.node) {
            tracing::info!(group = %self.cfg.group, config = m.config_id, "this node is not a member any more");
            self.removed = true;
            self.fail_all_waiting();
            return Ok(());
        }
        self.cfg.nodes = m.nodes.clone();
        self.cfg.config_id = m.config_id;
        self.cfg.base = m.base.0;
        self.cfg.metadata = m.metadata.clone();
        self.cluster = ClusterConfig {
            configuration_id: m.config_id,
            nodes: m.nodes.iter().map(|n| n.0).collect(),
            flexible_quorum: None,
        };
        self.storage = Shared(std::rc::Rc::new(std::cell::RefCell::new(storage)));
        self.op = self
            .cluster
            .clone()
            .build_for_server(self.server.clone(), self.storage.clone())
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        tracing::info!(group = %self.cfg.group, config = m.config_id, base = %m.base, nodes = ?m.nodes, "configuration started");
        self.last_leader = None;
        self.requeue_all();
        Ok(())
    }

    /// The configuration this one started, as carried to laggards.
    fn current_membership(&self) -> Option<Membership> {
        (self.cfg.config_id > 1).then(|| Membership {
            config_id: self.cfg.config_id,
            nodes: self.cfg.nodes.clone(),
            base: LogIndex(self.cfg.base),
            metadata: self.cfg.metadata.clone(),
        })
    }

    /// Whether this node was removed from the group.
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// The current configuration.
    pub fn membership(&self) -> (u32, &[NodeId], LogIndex) {
        (self.cfg.config_id, &self.cfg.nodes, LogIndex(self.cfg.base))
    }

    /// Group index of entry `i` of this configuration's log.
    fn global(&self, local: usize) -> LogIndex {
        LogIndex(self.cfg.base + local as u64)
    }

    fn fail_all_waiting(&mut self) {
        let why =
            || RequestError::Unavailable("this node is not a member of the group any more".into());
        let mut tokens: Vec<ClientToken> = Vec::new();
        for (_, p) in std::mem::take(&mut self.writes) {
            tokens.extend(p.tokens);
        }
        for r in std::mem::take(&mut self.reads_unbarriered) {
            tokens.push(r.token);
        }
        for (_, b) in std::mem::take(&mut self.barriers) {
            tokens.extend(b.reads.into_iter().map(|r| r.token));
        }
        for (_, (t, _)) in std::mem::take(&mut self.leader_reads) {
            tokens.push(t);
        }
        tokens.extend(self.ri.take_tokens());
        tokens.extend(
            std::mem::take(&mut self.reconfigs)
                .into_iter()
                .map(|r| r.token),
        );
        self.queue.clear();
        for t in tokens {
            self.reply(t, Err(why()));
        }
    }

    /// Advances the clock by one tick: drives elections, resends, retries
    /// and timeouts.
    pub fn tick(&mut self) {
        self.now += 1;
        if self.removed {
            return;
        }
        self.op.tick();
        self.expire();
        self.retry_due();
        self.retry_read_index();
        self.snapshot_tick();
    }

    /// A peer's replica of this group says something. An error means the
    /// replica cannot go on (see [`ReplicaError`]).
    pub fn receive(&mut self, from: NodeId, msg: PeerMsg) -> Result<(), ReplicaError> {
        if self.removed {
            return Ok(());
        }
        match msg {
            PeerMsg::Paxos { config, .. } if config < self.cfg.config_id => {
                // The sender missed a membership change: tell it where the
                // group went; it continues from a snapshot.
                if let Some(m) = self.current_membership() {
                    self.send(from, PeerMsg::ConfigChanged(m));
                }
            }
            PeerMsg::Paxos { config, .. } if config > self.cfg.config_id => {
                // From a configuration this node has not started yet.
            }
            PeerMsg::ConfigChanged(m) => {
                if m.config_id > self.cfg.config_id && self.stopped.is_none() {
                    tracing::info!(group = %self.cfg.group, config = m.config_id, "this node missed a membership change; joining the new configuration");
                    self.stopped = Some(m.clone());
                    self.outputs.push(Output::Reconfigured(m));
                }
            }
            PeerMsg::Paxos { msg: m, .. } => {
                if self.refuse_below_trimmed(from, &m) {
                    return Ok(());
                }
                let higher = outranks_my_leadership(&m, &self.op);
                self.op.handle_incoming(m);
                if higher {
                    // OmniPaxos 0.2.4 does not recover from this on its own:
                    // a node that promised a ballot whose candidate crashed
                    // mid-election keeps that promise, and only asks the
                    // leader (`PrepareReq`) for a `Prepare` it then rejects
                    // as lower. With the leader's majority happy, BLE never
                    // moves past it and the node stays out forever. A leader
                    // that hears of a higher promise takes a higher ballot.
                    tracing::info!(group = %self.cfg.group, from = from.0, "a peer promised a higher ballot; re-running the election");
                    self.op.try_become_leader();
                }
            }
            PeerMsg::Forward(proposals) => self.on_forward(from, proposals),
            PeerMsg::LeaderRead { id, stmts } => {
                if self.believed_leader() == Some(self.cfg.node) {
                    self.read(ReadFor::Peer { node: from, id }, stmts);
                } else {
                    let result = Err(RequestError::Unavailable(format!(
                        "node {} is no longer the leader; retry",
                        self.cfg.node
                    )));
                    self.send(from, PeerMsg::LeaderReadReply { id, result });
                }
            }
            PeerMsg::LeaderReadReply { id, result } => {
                if let Some((token, _)) = self.leader_reads.remove(&id) {
                    self.reply(token, result);
                }
            }
            PeerMsg::ReadIndexPing { epoch, seq, .. } => self.on_read_index_ping(from, epoch, seq),
            PeerMsg::ReadIndexAck {
                epoch,
                seq,
                promise,
            } => self.on_read_index_ack(from, epoch, seq, promise),
            PeerMsg::ReadIndexAsk { epoch, id } => self.on_read_index_ask(from, epoch, id),
            PeerMsg::ReadIndexReply { epoch, id, index } => {
                self.on_read_index_reply(epoch, id, index)
            }
            PeerMsg::Progress { applied, compacted } => self.on_progress(from, applied, compacted),
            PeerMsg::SnapshotNeeded { compacted } => self.on_snapshot_needed(from, compacted),
            PeerMsg::SnapshotRequest { offset } => self.on_snapshot_request(from, offset),
            PeerMsg::SnapshotChunk {
                index,
                total,
                checksum,
                offset,
                data,
            } => self.on_snapshot_chunk(from, index, total, checksum, offset, data)?,
        }
        Ok(())
    }

    /// The link to `peer` was (re-)established: messages sent meanwhile may
    /// be lost, so OmniPaxos resynchronises with it.
    pub fn connected(&mut self, peer: NodeId) {
        if peer != self.cfg.node {
            self.op.reconnected(peer.0);
        }
    }

    /// A client asks something; the answer comes out of a later
    /// [`Replica::poll`] as an [`Output::Reply`] with this token.
    pub fn submit(&mut self, token: ClientToken, req: ClientRequest) {
        if self.inflight() >= self.cfg.inflight_max {
            let msg = format!("{} requests in flight on this node", self.inflight());
            self.reply(token, Err(RequestError::Overloaded(msg)));
            return;
        }
        if self.removed {
            let why = "this node is not a member of the group any more; use another node";
            self.reply(token, Err(RequestError::Unavailable(why.into())));
            return;
        }
        match req {
            ClientRequest::Write {
                id,
                stmts,
                transaction,
                env,
            } => self.submit_write(token, id, stmts, transaction, env),
            ClientRequest::Reconfigure { nodes, metadata } => {
                self.submit_reconfigure(token, nodes, metadata)
            }
            ClientRequest::Read { stmts, level } => self.submit_read(token, stmts, level),
            ClientRequest::Backup { dest, level } => self.submit_backup(token, dest, level),
            ClientRequest::Probe { stmts, env } => self.submit_probe(token, stmts, env),
        }
    }

    /// Runs the driving loop's steps (see the crate docs) and returns what to
    /// send and whom to answer.
    pub fn poll(&mut self) -> Result<Vec<Output>, ReplicaError> {
        if self.removed {
            return Ok(std::mem::take(&mut self.outputs));
        }
        self.note_leader_change();
        // 1. Propose (and start confirming read indexes).
        self.start_read_index();
        self.open_barrier();
        self.propose_queued();
        if self.cfg.broken == Some(Broken::SendBeforeSync) {
            // Deliberately wrong: messages leave at once and the log is
            // synced only every `election_ticks` ticks, like a disk flushed
            // on a timer. (Syncing later in this same call would change
            // nothing an owner can see: outputs leave only when it returns.)
            self.release_messages();
            if self.now.is_multiple_of(self.cfg.election_ticks.max(1)) {
                self.storage.0.borrow_mut().sync()?;
            }
        } else {
            // 2. Persist.
            self.storage.0.borrow_mut().sync()?;
            // 3. Send.
            self.release_messages();
        }
        // 4. Apply.
        self.apply_decided()?;
        self.serve_read_index();
        // 5. Compact: persist the database and trim the log below it.
        self.maybe_compact()?;
        Ok(std::mem::take(&mut self.outputs))
    }

    fn release_messages(&mut self) {
        let mut msgs = Vec::new();
        self.op.take_outgoing_messages(&mut msgs);
        for m in msgs {
            let to = NodeId(m.get_receiver());
            let config = self.cfg.config_id;
            self.send(to, PeerMsg::Paxos { config, msg: m });
        }
    }

    /// The decided entries in `[from, to)` (group indices) that this
    /// replica's log still holds, each with its index, for checks (log
    /// matching) by the simulator. Entries below the log's trimmed prefix
    /// (compaction, an installed image) or from before this configuration
    /// are not there: the result starts at `max(from, compacted)`, not
    /// necessarily at `from`.
    pub fn decided_entries(&self, from: u64, to: u64) -> Vec<(LogIndex, Entry)> {
        let base = self.cfg.base;
        let from = from
            .saturating_sub(base)
            .max(self.op.get_compacted_idx() as u64);
        let to = to
            .saturating_sub(base)
            .min(self.op.get_decided_idx() as u64);
        if from >= to {
            return Vec::new();
        }
        self.op
            .read_entries(from as usize..to as usize)
            .unwrap_or_default()
            .into_iter()
            .zip(from..)
            .filter_map(|(e, i)| match e {
                LogEntry::Decided(e) => Some((LogIndex(base + i), e)),
                _ => None,
            })
            .collect()
    }

    /// The replica's state now.
    pub fn status(&self) -> ReplicaStatus {
        let leader = self.believed_leader();
        let accept_phase = self.op.get_current_leader().is_some_and(|(_, a)| a);
        let role = match leader {
            Some(l) if l == self.cfg.node && accept_phase => Role::Leader,
            Some(l) if l != self.cfg.node => Role::Follower,
            _ => Role::Candidate,
        };
        ReplicaStatus {
            node: self.cfg.node,
            group: self.cfg.group,
            role,
            leader,
            ballot: self.op.get_promise().n,
            decided: self.global(self.op.get_decided_idx()),
            applied: self.engine.applied_index(),
            accepted: self.global(self.op.get_accepted_idx()),
            inflight: self.inflight(),
            leader_changes: self.leader_changes,
            proposals: self.proposals,
            entries_proposed: self.entries_proposed,
            log_bytes: self.log_bytes(),
            compacted: self.compacted(),
            snapshots_taken: self.snap.taken,
            snapshots_installed: self.snap.installed,
            snapshots_sent: self.snap.sent,
            config_id: self.cfg.config_id,
            members: self.cfg.nodes.clone(),
            base: LogIndex(self.cfg.base),
            removed: self.removed,
            statement_budget: self.engine.statement_budget(),
        }
    }

    /// Leader changes this replica has seen since it started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes
    }

    /// Bytes the log occupies on disk.
    pub fn log_bytes(&self) -> u64 {
        self.storage.0.borrow().bytes_on_disk()
    }

    /// The engine, for checks (state hashes) by the owner.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    fn inflight(&self) -> usize {
        self.writes.len()
            + self.reads_unbarriered.len()
            + self.barriers.values().map(|b| b.reads.len()).sum::<usize>()
            + self.leader_reads.len()
            + self.ri.len()
    }

    fn believed_leader(&self) -> Option<NodeId> {
        self.op.get_current_leader().map(|(pid, _)| NodeId(pid))
    }

    fn note_leader_change(&mut self) {
        let leader = self.believed_leader();
        if leader != self.last_leader {
            tracing::info!(group = %self.cfg.group, leader = ?leader.map(|l| l.0), "leader changed");
            self.last_leader = leader;
            self.leader_changes += 1;
            // The old leader may have dropped what it was given: send it all
            // again to the new one. Duplicates are filtered at apply time.
            self.requeue_all();
        }
    }

    fn submit_write(
        &mut self,
        token: ClientToken,
        id: RequestId,
        stmts: Vec<Statement>,
        transaction: bool,
        env: ApplyEnv,
    ) {
        if let Some(p) = self.writes.get_mut(&id) {
            p.tokens.push(token);
            return;
        }
        match self.engine.completed(&id) {
            Ok(Some(results)) => {
                let index = self.engine.applied_index();
                self.reply(token, Ok(Response { results, index }));
                return;
            }
            Ok(None) => {}
            Err(e) => {
                self.reply(token, Err(RequestError::Unavailable(e.to_string())));
                return;
            }
        }
        let stmts = match make_deterministic(self.engine.dialect(), stmts, env) {
            Ok(s) => s,
            Err(e) => {
                self.reply(token, Err(e));
                return;
            }
        };
        let proposal = Proposal::Write(WriteRequest {
            id: id.clone(),
            stmts,
            transaction,
            env,
        });
        self.queue.push(proposal.clone());
        let pending = PendingWrite {
            tokens: vec![token],
            proposal,
            deadline: self.now + self.cfg.request_timeout_ticks,
            retry_at: self.now + self.cfg.retry_ticks,
        };
        self.writes.insert(id, pending);
    }

    fn submit_reconfigure(&mut self, token: ClientToken, nodes: Vec<NodeId>, metadata: Vec<u8>) {
        let mut nodes = nodes;
        nodes.sort();
        nodes.dedup();
        if nodes.len() < 2 {
            let why = "a group needs at least two members".to_string();
            self.reply(token, Err(RequestError::BadRequest(why)));
            return;
        }
        if nodes == self.cfg.nodes {
            let index = self.engine.applied_index();
            self.reply(
                token,
                Ok(Response {
                    results: Vec::new(),
                    index,
                }),
            );
            return;
        }
        self.propose_reconfigure(&nodes, metadata.clone());
        self.reconfigs.push(PendingReconfig {
            token,
            nodes,
            metadata,
            deadline: self.now + self.cfg.request_timeout_ticks,
            retry_at: self.now + self.cfg.retry_ticks,
        });
    }

    fn propose_reconfigure(&mut self, nodes: &[NodeId], metadata: Vec<u8>) {
        let next = ClusterConfig {
            configuration_id: self.cfg.config_id + 1,
            nodes: nodes.iter().map(|n| n.0).collect(),
            flexible_quorum: None,
        };
        // On a follower OmniPaxos forwards the StopSign to the leader (and
        // may lose it: the retry timer proposes it again). An error means a
        // StopSign is already on its way.
        if let Err(e) = self.op.reconfigure(next, Some(metadata)) {
            tracing::debug!(group = %self.cfg.group, "reconfiguration not proposed: {e:?}");
        }
    }

    /// The StopSign at `index` is decided and everything before it applied.
    fn on_stopsign(&mut self, index: LogIndex, ss: omnipaxos::storage::StopSign) {
        let m = Membership {
            config_id: ss.next_config.configuration_id,
            nodes: ss.next_config.nodes.iter().map(|&n| NodeId(n)).collect(),
            base: index,
            metadata: ss.metadata.unwrap_or_default(),
        };
        tracing::info!(group = %self.cfg.group, config = m.config_id, base = %index, nodes = ?m.nodes, "configuration stopped for a membership change");
        for r in std::mem::take(&mut self.reconfigs) {
            let result = if r.nodes == m.nodes {
                Ok(Response {
                    results: Vec::new(),
                    index,
                })
            } else {
                Err(RequestError::Unavailable(
                    "another membership change was made first; retry".into(),
                ))
            };
            self.reply(r.token, result);
        }
        self.stopped = Some(m.clone());
        self.outputs.push(Output::Reconfigured(m));
    }

    fn submit_read(&mut self, token: ClientToken, stmts: Vec<Statement>, level: ReadLevel) {
        let deadline = self.now + self.cfg.request_timeout_ticks;
        match level {
            ReadLevel::Local => self.read(ReadFor::Client(token), stmts),
            ReadLevel::Leader => match self.believed_leader() {
                Some(l) if l == self.cfg.node => self.read(ReadFor::Client(token), stmts),
                Some(l) => {
                    let id = self.next_leader_read;
                    self.next_leader_read += 1;
                    self.leader_reads.insert(id, (token, deadline));
                    self.send(l, PeerMsg::LeaderRead { id, stmts });
                }
                None => self.reply(
                    token,
                    Err(RequestError::Unavailable(
                        "no leader is known to this node; retry".into(),
                    )),
                ),
            },
            ReadLevel::Linearizable if self.cfg.broken == Some(Broken::ReadsWithoutBarrier) => {
                self.read(ReadFor::Client(token), stmts)
            }
            ReadLevel::Linearizable => {
                self.linearizable(token, ReadWhat::Query(stmts));
            }
        }
    }

    /// Queues a linearizable read on the configured path.
    fn linearizable(&mut self, token: ClientToken, what: ReadWhat) {
        let read = PendingRead {
            token,
            what,
            deadline: self.now + self.cfg.request_timeout_ticks,
        };
        match self.cfg.read_index {
            true => self.ri.waiting.push(read),
            false => self.reads_unbarriered.push(read),
        }
    }

    fn submit_probe(&mut self, token: ClientToken, stmts: Vec<Statement>, env: ApplyEnv) {
        match make_deterministic(self.engine.dialect(), stmts, env) {
            Ok(stmts) => self.linearizable(token, ReadWhat::Probe(stmts, env)),
            Err(e) => self.reply(token, Err(e)),
        }
    }

    /// Runs a linearizable read whose point is applied here.
    fn serve(&mut self, read: PendingRead) {
        match read.what {
            ReadWhat::Query(stmts) => self.read(ReadFor::Client(read.token), stmts),
            ReadWhat::Backup(dest) => {
                let r = self.backup_now(&dest);
                self.reply(read.token, r);
            }
            ReadWhat::Probe(stmts, env) => {
                let r = match self.engine.probe(&stmts, env) {
                    Ok(results) => Ok(Response {
                        results,
                        index: self.engine.applied_index(),
                    }),
                    Err(EngineError::Unsupported(what)) => Err(RequestError::BadRequest(format!(
                        "{what} are not supported by this node's engine"
                    ))),
                    Err(e) => Err(RequestError::Unavailable(e.to_string())),
                };
                self.reply(read.token, r);
            }
        }
    }

    fn submit_backup(&mut self, token: ClientToken, dest: std::path::PathBuf, level: ReadLevel) {
        if level == ReadLevel::Local {
            let r = self.backup_now(&dest);
            self.reply(token, r);
            return;
        }
        self.reads_unbarriered.push(PendingRead {
            token,
            what: ReadWhat::Backup(dest),
            deadline: self.now + self.cfg.request_timeout_ticks,
        });
    }

    fn backup_now(&mut self, dest: &std::path::Path) -> Result<Response, RequestError> {
        match self.engine.backup(dest) {
            Ok(index) => Ok(Response {
                results: Vec::new(),
                index,
            }),
            Err(e) => Err(RequestError::Unavailable(format!("backup failed: {e}"))),
        }
    }

    /// Hands a read whose level is satisfied to the owner, who runs it.
    fn read(&mut self, to: ReadFor, stmts: Vec<Statement>) {
        self.outputs.push(Output::Read { to, stmts });
    }

    fn read_now(&mut self, stmts: &[Statement]) -> Response {
        Response {
            results: self.engine.query(stmts),
            index: self.engine.applied_index(),
        }
    }

    /// Runs an [`Output::Read`] on the engine, on the replica's own thread,
    /// and returns the answer to deliver: for owners without reader
    /// connections (the simulator, tests). Production runs reads on
    /// readers instead.
    pub fn answer_read(&mut self, to: ReadFor, stmts: &[Statement]) -> Output {
        read_answer(to, Ok(self.read_now(stmts)))
    }

    /// Step 1a: reads that arrived since the last barrier get a new one,
    /// proposed now — after they arrived, which is what makes it valid.
    fn open_barrier(&mut self) {
        if self.reads_unbarriered.is_empty() {
            return;
        }
        let seq = self.next_barrier_seq;
        self.next_barrier_seq += 1;
        let proposal = Proposal::Barrier(BarrierId {
            node: self.cfg.node,
            seq,
            epoch: self.cfg.epoch,
        });
        self.queue.push(proposal.clone());
        let reads = std::mem::take(&mut self.reads_unbarriered);
        self.barriers.insert(
            seq,
            PendingBarrier {
                proposal,
                reads,
                retry_at: self.now + self.cfg.retry_ticks,
            },
        );
    }

    /// Step 1b: the queued proposals become log entries at the leader.
    fn propose_queued(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        let Some(leader) = self.believed_leader() else {
            // Nobody to send to; the retry timer brings them back.
            self.queue.clear();
            return;
        };
        let queue = std::mem::take(&mut self.queue);
        for chunk in queue.chunks(self.cfg.batch_proposals_max) {
            self.proposals += chunk.len() as u64;
            self.entries_proposed += 1;
            if leader == self.cfg.node {
                self.append(chunk.to_vec());
            } else {
                self.send(leader, PeerMsg::Forward(chunk.to_vec()));
            }
        }
    }

    fn append(&mut self, proposals: Vec<Proposal>) {
        // An error here means a reconfiguration is pending; the proposals
        // are retried by the timer like lost ones.
        let _ = self.op.append(Entry { proposals });
    }

    fn on_forward(&mut self, from: NodeId, proposals: Vec<Proposal>) {
        match self.believed_leader() {
            Some(l) if l == self.cfg.node => self.append(proposals),
            // One more hop at most: a forward never goes back to its sender.
            Some(l) if l != from => self.send(l, PeerMsg::Forward(proposals)),
            // Dropped: the sender's retry timer sends them again.
            _ => {}
        }
    }

    /// Step 4: applies every decided entry not yet applied.
    fn apply_decided(&mut self) -> Result<(), ReplicaError> {
        loop {
            if self.stopped.is_some() {
                return Ok(());
            }
            let applied = self.engine.applied_index();
            let base = self.cfg.base;
            let decided = self.op.get_decided_idx() as u64;
            // After a snapshot install the engine may be ahead of the
            // decided log for a while.
            if applied.0 >= base + decided {
                return Ok(());
            }
            let local = applied.0.checked_sub(base).map(|l| l as usize);
            let Some(local) = local.filter(|&l| l >= self.op.get_compacted_idx()) else {
                // What the engine needs next is not in this log: trimmed
                // here (the database file was lost or replaced), or from
                // before this configuration (a new member). Only a peer's
                // image can bring it.
                self.fetch_from_most_advanced_peer();
                return Ok(());
            };
            let Some(entries) = self.op.read_decided_suffix(local) else {
                return Ok(());
            };
            for (offset, entry) in entries.into_iter().enumerate() {
                let index = LogIndex(applied.0 + offset as u64);
                match entry {
                    LogEntry::Decided(e) => {
                        let outcomes = self.engine.apply(index, &e)?;
                        self.on_applied(index, outcomes);
                    }
                    LogEntry::StopSign(ss, true) => {
                        self.on_stopsign(index, ss);
                        return Ok(());
                    }
                    other => {
                        return Err(ReplicaError::Engine(EngineError::Inconsistent(format!(
                            "entry {index} cannot be applied: {other:?}"
                        ))))
                    }
                }
            }
        }
    }

    fn on_applied(&mut self, index: LogIndex, outcomes: Vec<Applied>) {
        let after = LogIndex(index.0 + 1);
        for outcome in outcomes {
            match outcome {
                Applied::Write { id, results, .. } => {
                    if let Some(p) = self.writes.remove(&id) {
                        for token in p.tokens {
                            let r = Response {
                                results: results.clone(),
                                index: after,
                            };
                            self.reply(token, Ok(r));
                        }
                    }
                }
                Applied::Barrier(b) if b.node == self.cfg.node && b.epoch == self.cfg.epoch => {
                    // Every barrier up to this one was proposed before it, so
                    // its reads are covered too.
                    let later = self.barriers.split_off(&(b.seq + 1));
                    let done = std::mem::replace(&mut self.barriers, later);
                    for (_, barrier) in done {
                        for read in barrier.reads {
                            self.serve(read);
                        }
                    }
                }
                Applied::Barrier(_) => {}
            }
        }
    }

    /// Fails every client whose deadline has passed.
    fn expire(&mut self) {
        let now = self.now;
        let expired: Vec<RequestId> = self
            .writes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let p = self.writes.remove(&id).expect("listed above");
            let e = self.why_not_decided("write");
            for token in p.tokens {
                self.reply(token, Err(e.clone()));
            }
        }
        let mut timed_out = Vec::new();
        self.barriers.retain(|_, b| {
            b.reads.retain(|r| {
                let keep = r.deadline > now;
                if !keep {
                    timed_out.push(r.token);
                }
                keep
            });
            !b.reads.is_empty()
        });
        self.leader_reads.retain(|_, (token, deadline)| {
            let keep = *deadline > now;
            if !keep {
                timed_out.push(*token);
            }
            keep
        });
        timed_out.extend(self.expired_read_index());
        let e = self.why_not_decided("read");
        for token in timed_out {
            self.reply(token, Err(e.clone()));
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reconfigs)
            .into_iter()
            .partition(|r| r.deadline <= now);
        self.reconfigs = kept;
        for r in expired {
            self.reply(r.token, Err(RequestError::timeout("membership change")));
        }
    }

    /// The error for a request whose entry was not decided in time, naming
    /// what this replica can see of the cause.
    fn why_not_decided(&self, what: &str) -> RequestError {
        let retry = "retry with the same request id (it is applied at most once)";
        let cause = match self.believed_leader() {
            None => "no leader is known to this node (no quorum reachable, or an election \
                     is under way)"
                .to_owned(),
            Some(l) if l == self.cfg.node => "this node leads but no quorum of the group \
                                               accepted the entry in time"
                .to_owned(),
            Some(l) => format!(
                "the leader (node {l}) did not decide the entry in time: it is unreachable \
                 from this node, has no quorum, or is busy"
            ),
        };
        RequestError::Unavailable(format!("{what} timed out: {cause}; {retry}"))
    }

    /// Queues again every proposal whose retry time has come.
    fn retry_due(&mut self) {
        let now = self.now;
        let retry = self.cfg.retry_ticks;
        let due: Vec<(Vec<NodeId>, Vec<u8>)> = self
            .reconfigs
            .iter_mut()
            .filter(|r| r.retry_at <= now)
            .map(|r| {
                r.retry_at = now + retry;
                (r.nodes.clone(), r.metadata.clone())
            })
            .collect();
        for (nodes, metadata) in due {
            self.propose_reconfigure(&nodes, metadata);
        }
        for p in self.writes.values_mut().filter(|p| p.retry_at <= now) {
            p.retry_at = now + retry;
            self.queue.push(p.proposal.clone());
        }
        for b in self.barriers.values_mut().filter(|b| b.retry_at <= now) {
            b.retry_at = now + retry;
            self.queue.push(b.proposal.clone());
        }
    }

    fn requeue_all(&mut self) {
        let retry_at = self.now + self.cfg.retry_ticks;
        self.queue.clear();
        for p in self.writes.values_mut() {
            p.retry_at = retry_at;
            self.queue.push(p.proposal.clone());
        }
        for b in self.barriers.values_mut() {
            b.retry_at = retry_at;
            self.queue.push(b.proposal.clone());
        }
    }

    fn send(&mut self, to: NodeId, msg: PeerMsg) {
        self.outputs.push(Output::Send { to, msg });
    }

    fn reply(&mut self, token: ClientToken, result: Result<Response, RequestError>) {
        self.outputs.push(Output::Reply { token, result });
    }
}

/// Whether `m` asks this node, which leads (in its accept phase) or runs
/// for leader (in its prepare phase), for a `Prepare` while promised to a
/// ballot higher than the one it runs with.
fn outranks_my_leadership<S: omnipaxos::storage::Storage<Entry>>(
    m: &Message<Entry>,
    op: &OmniPaxos<Entry, S>,
) -> bool {
    use omnipaxos::messages::sequence_paxos::PaxosMsg;
    let Message::SequencePaxos(pm) = m else {
        return false;
    };
    let PaxosMsg::PrepareReq(req) = &pm.msg else {
        return false;
    };
    let leading = op
        .get_current_leader()
        .is_some_and(|(pid, _)| pid == op.get_pid());
    leading && req.n > op.get_promise()
}

/// Rewrites each statement so that it runs identically on every replica,
/// or rejects the request saying why.
fn make_deterministic(
    dialect: Dialect,
    stmts: Vec<Statement>,
    env: ApplyEnv,
) -> Result<Vec<Statement>, RequestError> {
    let mut state = env.seed ^ 0x5851_F42D_4C95_7F2D;
    let mut random = move || paxsql_sql::splitmix64(&mut state);
    let mut denv = determinism::Env {
        unix_ms: env.unix_ms,
        random: &mut random,
    };
    stmts
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            let bad = |why: String| RequestError::BadRequest(format!("statement {}: {why}", i + 1));
            if let Some(why) = dialect.forbidden(&s.sql) {
                return Err(bad(why));
            }
            match dialect.make_deterministic(&s.sql, &mut denv) {
                Ok(std::borrow::Cow::Borrowed(_)) => Ok(s),
                Ok(std::borrow::Cow::Owned(sql)) => {
                    s.sql = sql;
                    Ok(s)
                }
                Err(e) => Err(bad(e)),
            }
        })
        .collect()
}

/// The answer to deliver for a read that ran: a reply to a client of this
/// node, or a message back to the peer that asked for a leader read.
pub fn read_answer(to: ReadFor, result: Result<Response, RequestError>) -> Output {
    match to {
        ReadFor::Client(token) => Output::Reply { token, result },
        ReadFor::Peer { node, id } => Output::Send {
            to: node,
            msg: PeerMsg::LeaderReadReply { id, result },
        },
    }
}

/// Whether every statement only reads (then `/db/request` may serve it as a read).
pub fn all_reads(dialect: Dialect, stmts: &[Statement]) -> bool {
    stmts
        .iter()
        .all(|s| dialect.classify(&s.sql) == determinism::Kind::Read)
}

/// Convenience for owners: the results of a response, or the error.
pub fn results_of(r: &Result<Response, RequestError>) -> Option<&[StmtResult]> {
    r.as_ref().ok().map(|r| r.results.as_slice())
}
