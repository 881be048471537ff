//! The vocabulary every paxsql crate speaks: identifiers, the replicated
//! [`Entry`] that OmniPaxos orders, SQL [`Value`]s and statement results.
//!
//! Nothing here does IO. Everything that crosses a process boundary (the log
//! on disk, peer frames) is a type from this crate serialized with serde, so
//! a change to a variant here is a change to the wire and disk format: add
//! variants at the end, never reorder them.

mod ids;
mod sql;

pub use ids::{GroupId, LogIndex, NodeId, RequestId, REQUEST_ID_LEN_MAX};
pub use sql::{Params, Statement, StmtResult, Value, SERIALIZATION_FAILURE};

use serde::{Deserialize, Serialize};

/// One entry of a group's replicated log: a batch of proposals made by one
/// node. Batching in the application (rather than OmniPaxos' own
/// `batch_size`) keeps decisions prompt: one entry, one round, many requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The proposals, applied in this order, all in one engine transaction.
    pub proposals: Vec<Proposal>,
}

impl omnipaxos::storage::Entry for Entry {
    type Snapshot = Compacted;
}

/// What OmniPaxos keeps in place of a trimmed log prefix: nothing. The state
/// those entries built is the replica's database itself, which is made
/// durable before the log is trimmed and travels between replicas as a
/// database image, outside OmniPaxos. So OmniPaxos never builds snapshots
/// from entries ([`omnipaxos::storage::Snapshot::use_snapshots`] is false):
/// it only records that a prefix is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compacted;

impl omnipaxos::storage::Snapshot<Entry> for Compacted {
    fn create(_entries: &[Entry]) -> Self {
        Compacted
    }

    fn merge(&mut self, _delta: Self) {}

    fn use_snapshots() -> bool {
        false
    }
}

/// What a log entry can ask of every replica.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Proposal {
    /// Run statements, once per request id.
    Write(WriteRequest),
    /// A read barrier: it changes nothing; the proposing node serves the
    /// linearizable reads waiting on it once it has applied it.
    Barrier(BarrierId),
}

/// Names one read barrier: the node that proposed it and its sequence there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BarrierId {
    /// The node whose reads wait on this barrier.
    pub node: NodeId,
    /// Increases with every barrier that node proposes while it runs.
    pub seq: u64,
    /// Distinguishes runs of the same node, so a restarted node never
    /// mistakes an old barrier for one of its own.
    pub epoch: u64,
}

/// A write as it travels through the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The client's (or the receiving node's) id for this request; a second
    /// request with the same id is not applied again and gets the first answer.
    pub id: RequestId,
    /// Statements in order, already made deterministic by the proposer.
    pub stmts: Vec<Statement>,
    /// All statements or none.
    pub transaction: bool,
    /// The clock and randomness fixed by the proposer, so that whatever the
    /// SQL engine would read from the environment at apply time (`now`,
    /// `random()` in a column DEFAULT or a trigger) is the same on every replica.
    pub env: ApplyEnv,
}

/// The environment a write sees when it is applied, fixed once by the proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyEnv {
    /// Milliseconds since the Unix epoch at the proposer.
    pub unix_ms: i64,
    /// Seed of the pseudo-random sequence `random()` and friends return.
    pub seed: u64,
}

/// A request that cannot be served at all (as opposed to one statement
/// failing, which is a [`StmtResult::Error`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RequestError {
    /// The request is malformed; retrying it unchanged will not help.
    #[error("{0}")]
    BadRequest(String),
    /// No leader, no quorum, or the deadline passed. The request may or may
    /// not have been applied: retry it with the same request id.
    #[error("{0}")]
    Unavailable(String),
    /// Too many requests in flight; back off and retry.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// A transaction lost a conflict with another (a serialization
    /// failure) and was not applied: run the whole transaction again.
    #[error("{0}")]
    Conflict(String),
}

impl RequestError {
    /// A request that timed out, and what the client should do about it.
    pub fn timeout(what: &str) -> Self {
        RequestError::Unavailable(format!(
            "{what} timed out: this node got no answer from its group in time (no quorum or \
             no leader reachable, or the group is busy); retry with the same request id \
             (it is applied at most once)"
        ))
    }
}

/// The answer to a write or a read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// One result per statement, in order.
    pub results: Vec<StmtResult>,
    /// The log index (count of applied entries) the answer reflects.
    pub index: LogIndex,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReadLevel {
    /// This node's replica as it is now; may be stale; needs no quorum.
    Local,
    /// Served by the node that believes it leads; stale only around a leader change.
    Leader,
    /// Sees every write acknowledged before the read began.
    Linearizable,
}

impl ReadLevel {
    /// Parses a level as the HTTP API names it, rqlite's names included.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "local" | "none" => Some(ReadLevel::Local),
            "leader" | "weak" => Some(ReadLevel::Leader),
            "linearizable" | "strong" => Some(ReadLevel::Linearizable),
            _ => None,
        }
    }

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadLevel::Local => "local",
            ReadLevel::Leader => "leader",
            ReadLevel::Linearizable => "linearizable",
        }
    }
}
