//! The router: one database over many OmniPaxos groups (docs/sharding.md).
//!
//! Every front (HTTP, pg-wire, the shell through HTTP, KV) hands its
//! statements to a [`Router`], which sits above the node. On a node with
//! one group it passes them through. On a sharded node (`--groups N`) it
//! keeps a cache of the **shard map** (the metadata group's
//! `_paxsql_ranges`), and:
//!
//! - sends a write only to the data groups owning the keys it names, each
//!   write led by a `CLAIM` of the ranges and generations the router
//!   believes that group owns; a group whose ranges changed refuses the
//!   whole request at apply time, and the router refreshes its map and
//!   retries (`writes.rs`);
//! - runs schema changes on every data group in group order, and places a
//!   new table as one range on the data group holding the fewest (`ddl.rs`);
//! - answers a read from the one group holding everything it needs, or
//!   gathers the rows of the ranges it needs from every group into an
//!   in-memory SQLite database and runs it there (`reads.rs`);
//! - runs `ALTER TABLE t SPLIT AT`, `ALTER RANGE r RELOCATE TO GROUP g` and
//!   `SHOW RANGES` (`admin.rs`).

mod admin;
mod ddl;
mod map;
mod reads;
mod txn;
mod writes;

pub use map::ShardMap;

use paxsql_node::NodeHandle;
use paxsql_sql::ranges::{Directive, WRONG_RANGE};
use paxsql_sql::Dialect;
use paxsql_types::{GroupId, ReadLevel, RequestError, RequestId, Response, Statement, StmtResult};
use std::sync::Arc;
use std::time::Duration;

/// Bounds of the router's own work.
#[derive(Clone, Copy, Debug)]
pub struct RouterOptions {
    /// Bytes of rows a cross-shard query may gather into memory at most.
    pub gather_bytes_max: usize,
    /// Rows one gathered query may return at most.
    pub result_rows_max: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            gather_bytes_max: GATHER_BYTES_MAX_DEFAULT,
            result_rows_max: 1_000_000,
        }
    }
}

/// The default of `--gather-bytes-max`: 256 MiB.
pub const GATHER_BYTES_MAX_DEFAULT: usize = 256 << 20;

/// Routes statements over the groups of a node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Router {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: NodeHandle,
    options: RouterOptions,
    map: tokio::sync::RwLock<Arc<ShardMap>>,
    /// Serialises this node's map changes (splits, relocations, placements).
    changing: tokio::sync::Mutex<()>,
}

/// The metadata group.
pub(crate) const META: GroupId = GroupId(0);

/// Attempts of a routed request whose ranges moved under it.
const ATTEMPTS: u32 = 40;

impl Router {
    /// A router over a started node.
    pub fn new(node: NodeHandle, options: RouterOptions) -> Router {
        Router {
            inner: Arc::new(Inner {
                node,
                options,
                map: tokio::sync::RwLock::new(Arc::new(ShardMap::default())),
                changing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The node below.
    pub fn node(&self) -> &NodeHandle {
        &self.inner.node
    }

    /// Whether the node hosts several data groups.
    pub fn is_sharded(&self) -> bool {
        self.inner.node.data_groups() != [GroupId(0)]
    }

    /// Runs statements through the log of the groups they concern (all or
    /// nothing with `transaction`, within one group).
    pub async fn execute(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
        id: Option<RequestId>,
    ) -> Result<Response, RequestError> {
        refuse_directives(&stmts)?;
        if let Some(command) = admin::command_of(&stmts)? {
            return self.admin(command).await;
        }
        if !self.is_sharded() {
            return self.inner.node.write(stmts, transaction, id).await;
        }
        let id = id.unwrap_or_else(|| self.inner.node.fresh_request_id());
        self.route_write(stmts, transaction, id).await
    }

    /// Runs read-only statements at a level.
    pub async fn query(
        &self,
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        refuse_directives(&stmts)?;
        if let Some(command) = admin::command_of(&stmts)? {
            return self.admin(command).await;
        }
        if !self.is_sharded() {
            return self.inner.node.read(stmts, level, timeout).await;
        }
        self.route_read(stmts, level, timeout).await
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
        let dialect = self.dialect();
        let reads = !stmts.is_empty()
            && stmts.iter().all(|s| {
                admin::is_show(&s.sql)
                    || dialect.classify(&s.sql) == paxsql_sql::determinism::Kind::Read
            });
        match reads {
            true => self.query(stmts, level, timeout).await,
            false => self.execute(stmts, transaction, id).await,
        }
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// The cached map.
    async fn map(&self) -> Arc<ShardMap> {
        Arc::clone(&*self.inner.map.read().await)
    }

    /// Reads the map from the metadata group (at `leader` level: no log
    /// entry; a map stale by a moment is corrected by the claims, and map
    /// changes are compare-and-sets).
    async fn refresh(&self) -> Result<Arc<ShardMap>, RequestError> {
        let read = self
            .inner
            .node
            .read_from(
                META,
                vec![Statement::new(map::READ_MAP)],
                ReadLevel::Leader,
                None,
            )
            .await?;
        let map = match read.results.first() {
            Some(StmtResult::Rows { values, .. }) => ShardMap::from_rows(values),
            Some(StmtResult::Error(e)) => Err(e.clone()),
            _ => Err("no answer".into()),
        }
        .map_err(|e| RequestError::Unavailable(format!("reading the shard map: {e}")))?;
        let map = Arc::new(map);
        *self.inner.map.write().await = Arc::clone(&map);
        Ok(map)
    }

    /// The data groups, in order.
    fn data_groups(&self) -> Vec<GroupId> {
        self.inner.node.data_groups()
    }
}

/// Users may not send the router's directives.
fn refuse_directives(stmts: &[Statement]) -> Result<(), RequestError> {
    match stmts.iter().position(|s| Directive::is_directive(&s.sql)) {
        None => Ok(()),
        Some(i) => Err(RequestError::BadRequest(format!(
            "statement {}: PAXSQL directives are internal to the router",
            i + 1
        ))),
    }
}

/// Whether a result says the group's ranges are not what the router thought.
fn is_wrong_range(r: &StmtResult) -> bool {
    matches!(r, StmtResult::Error(e) if e.starts_with(WRONG_RANGE))
}

/// Waits before attempt `n` of a request whose ranges moved: 10 ms,
/// doubling to 200 ms.
async fn back_off(attempt: u32) {
    let ms = (10u64 << attempt.min(5)).min(200);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The error once a request's ranges kept moving.
fn still_moving() -> RequestError {
    RequestError::Unavailable(format!(
        "{WRONG_RANGE}: the ranges this request needs kept changing (a split or relocation \
         is running); retry"
    ))
}
