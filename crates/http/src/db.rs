//! The narrow handle the HTTP layer serves: everything it needs from a node,
//! nothing more. The binary implements it over the node; tests implement it
//! over a fake.

use paxsql_types::{ReadLevel, RequestError, RequestId, Response, Statement};
use std::future::Future;
use std::time::Duration;

/// How a read is to be carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOptions {
    /// How fresh (`level=`).
    pub level: ReadLevel,
    /// How long the read may take, waiting for its level and running
    /// (`timeout=`); `None`: the node's default.
    pub timeout: Option<Duration>,
}

impl From<ReadLevel> for ReadOptions {
    fn from(level: ReadLevel) -> Self {
        ReadOptions {
            level,
            timeout: None,
        }
    }
}

/// How a write is to be carried out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// All statements or none.
    pub transaction: bool,
    /// The client's id for this request (`request_id` query parameter or
    /// `X-Request-Id` header); a retry with the same id is applied once and
    /// gets the first answer. `None`: the node picks a fresh one.
    pub request_id: Option<RequestId>,
}

/// What the HTTP API needs from a node.
pub trait Db: Clone + Send + Sync + 'static {
    /// Runs statements through the replicated log (`/db/execute`).
    fn execute(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send;

    /// Runs read-only statements at a consistency level (`/db/query`).
    /// A statement that would write fails in its own result.
    fn query(
        &self,
        stmts: Vec<Statement>,
        read: ReadOptions,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send;

    /// Mixed reads and writes (`/db/request`): served as a read (`read`)
    /// when every statement is read-only, otherwise as a write through the log.
    fn request(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
        read: ReadOptions,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send;

    /// This node's status as a JSON object (`/status`).
    fn status(&self) -> impl Future<Output = serde_json::Value> + Send;

    /// Every node of the cluster as a JSON array (`/nodes`).
    fn nodes(&self) -> impl Future<Output = serde_json::Value> + Send;

    /// A consistent copy of the database as a SQLite file and the log index
    /// it reflects (`/db/backup`).
    fn backup(
        &self,
        level: ReadLevel,
    ) -> impl Future<Output = Result<(Vec<u8>, u64), RequestError>> + Send;

    /// Loads a SQLite file through the log (`/db/load`).
    fn load(
        &self,
        image: Vec<u8>,
        opts: WriteOptions,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send;

    /// `Ok` once this node has a leader and has caught up (`/readyz`);
    /// otherwise why not.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;

    /// The groups, their leaders and every range of every table
    /// (`GET /shards`).
    fn shards(&self) -> impl Future<Output = Result<serde_json::Value, RequestError>> + Send {
        async {
            Err(RequestError::BadRequest(
                "this database is not sharded".into(),
            ))
        }
    }
}
