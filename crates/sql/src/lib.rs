//! SQL engines behind one trait, and the rules that keep replicas identical.
//!
//! A replica applies decided log entries through [`SqlEngine::apply`]: every
//! proposal of one entry, the new applied index and the ids of the requests
//! it completed are committed in **one** engine transaction, so a crash
//! leaves the engine either before or after the entry, never in between.
//! That is what makes replay after a crash apply each entry exactly once.
//!
//! Determinism comes in two layers. [`determinism`] rewrites `random()`,
//! `CURRENT_TIMESTAMP` and friends to literals before a statement enters the
//! log. At apply time the engine additionally pins the clock and the random
//! sequence SQLite sees to values carried in the entry ([`paxsql_types::ApplyEnv`]), which
//! covers what a rewrite cannot reach: column DEFAULTs, triggers, and SQL the
//! parser does not understand.

pub mod determinism;
mod image;
pub mod pg_determinism;
mod pg_lex;
mod pg_values;
mod postgres;
pub mod ranges;
pub mod settings;
mod sqlite;
pub mod twopc;
pub mod txn;
mod vfs;

pub use image::image_to_statements;
pub use postgres::{
    database_name, PostgresAdmission, PostgresEngine, PostgresOptions, PostgresReader, Refused,
};
pub use ranges::Directive;
pub use settings::Setting;
pub use sqlite::{SqliteEngine, SqliteOptions, SqliteReader};

use paxsql_types::{ApplyEnv, BarrierId, Entry, LogIndex, RequestId, Statement, StmtResult};

/// What applying one proposal produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// A write request's results. `duplicate` is true when the request id was
    /// already completed earlier: nothing ran, and `results` is the first answer.
    Write {
        /// The request.
        id: RequestId,
        /// One result per statement (the first answer, for a duplicate).
        results: Vec<StmtResult>,
        /// Whether this was a retry of a request already applied.
        duplicate: bool,
    },
    /// A read barrier was reached.
    Barrier(BarrierId),
}

/// An engine failure that is not a statement's fault (IO, corruption). The
/// replica must stop rather than diverge.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's storage failed.
    #[error("sql engine storage failed: {0}")]
    Storage(String),
    /// The engine holds a state this replica cannot continue from.
    #[error("sql engine state is inconsistent: {0}")]
    Inconsistent(String),
    /// The engine cannot do this.
    #[error("this engine does not support {0}")]
    Unsupported(String),
}

/// One step of splitmix64: advances `state` and returns the next value.
/// The pseudo-random sequence behind `random()` at apply time and the
/// literals the determinism rewrite writes: small, fast, and the same on
/// every replica for the same seed.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The SQL dialect an engine speaks, and with it the rules that classify
/// statements and make them deterministic before they enter the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite's SQL.
    Sqlite,
    /// PostgreSQL's SQL (see [`pg_determinism`]).
    Postgres,
}

impl Dialect {
    /// Whether a statement only reads (see [`determinism::classify`]).
    pub fn classify(self, sql: &str) -> determinism::Kind {
        if Directive::is_directive(sql) {
            return determinism::Kind::Write;
        }
        if let Some(setting) = Setting::parse(sql) {
            return match setting.is_write() {
                true => determinism::Kind::Write,
                false => determinism::Kind::Read,
            };
        }
        match self {
            Dialect::Sqlite => determinism::classify(sql),
            Dialect::Postgres => pg_determinism::classify(sql),
        }
    }

    /// Why a statement may not be sent as one replicated statement, if so.
    pub fn forbidden(self, sql: &str) -> Option<String> {
        if let Some(Setting::SetStatementBudget(Err(e))) = Setting::parse(sql) {
            return Some(e.to_string());
        }
        if Setting::parse(sql).is_some() || Directive::is_directive(sql) {
            return None;
        }
        match self {
            Dialect::Sqlite => determinism::forbidden(sql),
            Dialect::Postgres => pg_determinism::forbidden(sql),
        }
    }

    /// How many statements the text holds.
    pub fn statement_count(self, sql: &str) -> usize {
        match self {
            Dialect::Sqlite => determinism::statement_count(sql),
            Dialect::Postgres => pg_determinism::statement_count(sql),
        }
    }

    /// The statement with non-deterministic SQL fixed to literals, or why
    /// it cannot be.
    pub fn make_deterministic<'s>(
        self,
        sql: &'s str,
        env: &mut determinism::Env<'_>,
    ) -> Result<std::borrow::Cow<'s, str>, String> {
        if Setting::parse(sql).is_some() || Directive::is_directive(sql) {
            return Ok(std::borrow::Cow::Borrowed(sql));
        }
        match self {
            Dialect::Sqlite => determinism::make_deterministic(sql, env).map_err(|e| e.to_string()),
            Dialect::Postgres => pg_determinism::make_deterministic(sql, env),
        }
    }
}

/// What one read may return at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Rows of one statement.
    pub rows_max: usize,
    /// Bytes of one statement's result (text and blob lengths, 8 per
    /// number); also the largest single value a read may build.
    pub bytes_max: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            rows_max: 1_000_000,
            bytes_max: 64 << 20,
        }
    }
}

/// A connection to a replica's database that serves reads on a thread of
/// its own, beside the thread that applies the log.
pub trait SqlReader: Send {
    /// Runs read-only statements against one consistent state (the last
    /// commit when the read began) and returns the applied index of that
    /// state. A statement still running after `timeout` is interrupted and
    /// fails with a read-timeout error; an `Err` means the connection
    /// failed.
    fn query(
        &mut self,
        stmts: &[Statement],
        timeout: std::time::Duration,
    ) -> Result<(LogIndex, Vec<StmtResult>), EngineError>;
}

/// A replica's SQL database.
pub trait SqlEngine {
    /// The dialect of SQL this engine runs.
    fn dialect(&self) -> Dialect;

    /// How many log entries have been applied (the next to apply has this index).
    fn applied_index(&self) -> LogIndex;

    /// Applies the decided entry at `index` (which must equal
    /// [`Self::applied_index`]) in one transaction with the new applied index
    /// and the completed request ids.
    fn apply(&mut self, index: LogIndex, entry: &Entry) -> Result<Vec<Applied>, EngineError>;

    /// Runs read-only statements against the current state. A statement
    /// that would write fails in its own result. Runs on the applying
    /// thread: production serves reads through [`Self::reader`] instead.
    fn query(&mut self, stmts: &[Statement]) -> Vec<StmtResult>;

    /// Runs an interactive transaction's statements so far as the log would
    /// apply them now (with `env`, all or nothing: they stop at the first
    /// failure), on the applying connection, and rolls everything back
    /// (see [`txn`]). Runs on the applying thread, between entries.
    fn probe(
        &mut self,
        stmts: &[Statement],
        env: ApplyEnv,
    ) -> Result<Vec<StmtResult>, EngineError> {
        let _ = (stmts, env);
        Err(EngineError::Unsupported(
            "interactive transactions on this engine".into(),
        ))
    }

    /// Opens another connection for reads, to be used on another thread.
    fn reader(&self, limits: ReadLimits) -> Result<Box<dyn SqlReader>, EngineError> {
        let _ = limits;
        Err(EngineError::Unsupported("readers".into()))
    }

    /// The statement budget in force (see [`settings`]), if the engine
    /// counts work.
    fn statement_budget(&self) -> Option<u64> {
        None
    }

    /// The first answer of a completed request, if it is still remembered.
    fn completed(&mut self, id: &RequestId) -> Result<Option<Vec<StmtResult>>, EngineError>;

    /// A hash of the user-visible content (schema and rows), equal on two
    /// replicas exactly when their content is equal. For tests and checks.
    fn state_hash(&mut self) -> Result<u64, EngineError>;

    /// Writes a consistent copy of the user-visible database (no internal
    /// tables) to `dest` and returns the applied index it reflects.
    fn backup(&mut self, dest: &std::path::Path) -> Result<LogIndex, EngineError> {
        let _ = dest;
        Err(EngineError::Unsupported("backup".into()))
    }

    /// An image of the whole database — internal tables (applied index,
    /// completed request ids) included — and the applied index it reflects,
    /// for another replica to [`Self::install`].
    fn snapshot(&mut self) -> Result<(LogIndex, Vec<u8>), EngineError> {
        Err(EngineError::Unsupported("snapshots".into()))
    }

    /// Replaces the whole database by an image that [`Self::snapshot`] took
    /// on another replica, atomically and durably. Afterwards
    /// [`Self::applied_index`] is `index`.
    fn install(&mut self, index: LogIndex, image: &[u8]) -> Result<(), EngineError> {
        let _ = (index, image);
        Err(EngineError::Unsupported("snapshots".into()))
    }

    /// Makes every entry applied so far survive a power loss and returns the
    /// applied index that is now durable: the log below it may be trimmed.
    fn persist(&mut self) -> Result<LogIndex, EngineError> {
        Err(EngineError::Unsupported("snapshots".into()))
    }
}

/// Engines chosen at run time (by flag) are boxed.
impl SqlEngine for Box<dyn SqlEngine + Send> {
    fn dialect(&self) -> Dialect {
        (**self).dialect()
    }
    fn applied_index(&self) -> LogIndex {
        (**self).applied_index()
    }
    fn apply(&mut self, index: LogIndex, entry: &Entry) -> Result<Vec<Applied>, EngineError> {
        (**self).apply(index, entry)
    }
    fn query(&mut self, stmts: &[Statement]) -> Vec<StmtResult> {
        (**self).query(stmts)
    }
    fn probe(
        &mut self,
        stmts: &[Statement],
        env: ApplyEnv,
    ) -> Result<Vec<StmtResult>, EngineError> {
        (**self).probe(stmts, env)
    }
    fn reader(&self, limits: ReadLimits) -> Result<Box<dyn SqlReader>, EngineError> {
        (**self).reader(limits)
    }
    fn statement_budget(&self) -> Option<u64> {
        (**self).statement_budget()
    }
    fn completed(&mut self, id: &RequestId) -> Result<Option<Vec<StmtResult>>, EngineError> {
        (**self).completed(id)
    }
    fn state_hash(&mut self) -> Result<u64, EngineError> {
        (**self).state_hash()
    }
    fn backup(&mut self, dest: &std::path::Path) -> Result<LogIndex, EngineError> {
        (**self).backup(dest)
    }
    fn snapshot(&mut self) -> Result<(LogIndex, Vec<u8>), EngineError> {
        (**self).snapshot()
    }
    fn install(&mut self, index: LogIndex, image: &[u8]) -> Result<(), EngineError> {
        (**self).install(index, image)
    }
    fn persist(&mut self) -> Result<LogIndex, EngineError> {
        (**self).persist()
    }
}
