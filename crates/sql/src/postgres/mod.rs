//! The PostgreSQL engine: each replica is a database of its own on a
//! PostgreSQL server.
//!
//! # One connection on the group's thread, others beside it
//!
//! The engine holds one tokio-postgres connection, driven by a
//! current-thread tokio runtime that the engine owns: every call blocks the
//! group's thread (which owns the engine anyway, see `crates/node`) until
//! PostgreSQL answers, exactly like the SQLite engine blocks on its file.
//! Reads run on [`PostgresReader`]s, each a connection and runtime of its
//! own on a reader thread ([`reader`]); dry runs of writes on a pool of the
//! same connections ([`admission`]).
//! tokio-postgres rather than the sync `postgres` wrapper, because the async
//! client can pipeline: a savepoint and the statement after it, or the end
//! of a request and the row that records it, go out together and cost one
//! round trip.
//!
//! # The same guarantees as SQLite
//!
//! - One PostgreSQL transaction per log entry. The applied index (in
//!   `paxsql_internal.meta`) and the ids and answers of the requests it
//!   completed (`paxsql_internal.requests`) are written in that
//!   transaction, so a crash leaves the database before or after the entry.
//!   Replay applies nothing twice, and a retried request id gets its first
//!   answer.
//! - Each request runs in a savepoint; with several statements and no
//!   `transaction` flag each statement has its own, so a failed one is
//!   undone alone and the others stay. With the flag, the first error undoes
//!   the whole request.
//! - The commit does not wait for PostgreSQL's WAL flush
//!   (`synchronous_commit=off`): the OmniPaxos log is the durable truth,
//!   and a replica whose server lost its last commits replays them from the
//!   log, as the SQLite engine does with `synchronous=NORMAL`.
//! - Sequences (SERIAL, identity columns) are not transactional in
//!   PostgreSQL: a `nextval()` in an entry that never committed is not
//!   undone. Every entry therefore records every sequence's position in
//!   `paxsql_internal.sequences`, in its own transaction, and opening the
//!   engine puts each sequence back where the last committed entry left it.
//!   Applied in log order from the same state, sequences then hand out the
//!   same numbers on every replica.
//! - The session is pinned (`TimeZone=UTC`, `DateStyle=ISO`,
//!   `IntervalStyle=postgres`, `extra_float_digits=1`, `search_path=public`),
//!   and the database is created with
//!   the `C` collation, so that text order, casts to text and error messages
//!   do not depend on the server's configuration. `lc_messages=C` is set
//!   when the role may set it (superusers); otherwise the server's language
//!   is used for error texts, which must then be the same on every node.
//! - Before each write, `set_config('paxsql.now', ...)` pins what
//!   `paxsql.now()` returns to the entry's clock and `setseed()` seeds
//!   `random()` from the entry's seed; `DISCARD SEQUENCES` forgets
//!   `currval()`/`lastval()` of earlier requests, which a restarted replica
//!   would not have.
//!
//! # What user SQL cannot reach
//!
//! paxsql's tables live in the schema `paxsql_internal`, which is not on
//! the `search_path`. A user statement that names it — anywhere, strings
//! included, so `'paxsql_internal.meta'::regclass` and dynamic SQL in a
//! literal count — fails before it reaches PostgreSQL, on reads and writes
//! alike; statements that would change the session (`SET`, `RESET`,
//! `set_config()`), leave the transaction or create temporary objects are
//! refused ([`crate::pg_determinism::forbidden`]). Reads run in a `READ
//! ONLY` transaction that is rolled back. This protects paxsql's
//! bookkeeping from mistakes; it is not a security boundary against a user
//! who assembles the schema name at run time inside a function body. Run
//! nodes as a role that may create databases but is not a superuser, so
//! that user SQL cannot reach beyond the replica's database either.
//!
//! # Runaway statements, and the statement budget
//!
//! `SET PAXSQL STATEMENT_BUDGET` is stored in `paxsql_internal.meta` by the
//! entry that commits it, as the SQLite engine stores it. PostgreSQL cannot
//! count steps, so the budget is converted to time and checked by a dry run
//! before the log, with a wall-clock backstop at apply that stops the
//! replica rather than record a timeout ([`admission`]).
//!
//! # Failures
//!
//! An error that is not the statement's fault — the connection broke, the
//! server is shutting down, out of disk or memory (SQLSTATE classes 08, 53,
//! 57, 58, XX) — is an [`EngineError::Storage`]: the entry is rolled back
//! and the replica stops, as with SQLite, instead of recording an error
//! that other replicas would not see. A restarted node reconnects and
//! replays. A read that meets a broken connection answers with that error,
//! and its reader connects again for the next read. A deadlock with a
//! reader (a read holds a table that an entry's DDL needs, while waiting
//! for one the entry holds) is no one's fault: the entry is rolled back and
//! applied again from the same state, sequences included.
//!
//! # Limitation: snapshots
//!
//! There is no snapshot or backup of a PostgreSQL replica yet
//! ([`SqlEngine::backup`] says so): a node that lost its database catches
//! up by replaying the whole log, which is never trimmed today.

mod admission;
mod apply;
mod dry_run;
mod hash;
mod reader;
mod session;
mod statement;

pub use admission::{PostgresAdmission, Refused};
pub use reader::PostgresReader;

use crate::pg_determinism::INTERNAL_SCHEMA;
use crate::settings;
use crate::{Applied, EngineError, ReadLimits, SqlEngine, SqlReader};
use apply::{apply_entry, completed_in, EntryContext, RESTORE_SEQUENCES};
use paxsql_types::{Entry, LogIndex, RequestId, Statement, StmtResult};
use session::{admin_config, connect, create_database, runtime, storage};
use statement::Fatal;
use std::time::Duration;
use tokio_postgres::{Client, Config};

/// Where a PostgreSQL replica lives, and its tuning.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The server, as a `postgres://` URL or `key=value` string; the
    /// database in it is only used to create this replica's own.
    pub url: String,
    /// This replica's database, created if missing (see [`database_name`]).
    pub database: String,
    /// Who owns the database (e.g. `cluster/node/group`): opening a
    /// database another owner created is refused.
    pub owner: String,
    /// How many log entries a completed request id is remembered for.
    pub dedup_window_entries: u64,
    /// Rows returned by one statement at most.
    pub result_rows_max: usize,
    /// How long one read statement on the engine's own connection may run
    /// ([`SqlEngine::query`]; readers get their limit with each read).
    pub read_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresOptions")
            .field("database", &self.database)
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl PostgresOptions {
    /// Options with the defaults for a replica database on `url`.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        let database = database.into();
        PostgresOptions {
            url: url.into(),
            owner: database.clone(),
            database,
            dedup_window_entries: 100_000,
            result_rows_max: 1_000_000,
            read_timeout: Duration::from_secs(5),
        }
    }
}

/// The database of one replica: `paxsql_<cluster>_<node>_g<group>`, made a
/// plain PostgreSQL identifier (lower-case letters, digits, `_`; at most 63
/// bytes). When the cluster name had to be changed to fit, a short hash of
/// the original is appended, so that `a-b` and `a_b` get different databases.
pub fn database_name(cluster: &str, node: u64, group: u32) -> String {
    let raw = format!("paxsql_{cluster}_{node}_g{group}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if clean == raw && clean.len() <= 63 {
        return clean;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in raw.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let suffix = format!("_{:08x}", h as u32);
    let keep = clean.len().min(63 - suffix.len());
    format!("{}{suffix}", &clean[..keep])
}

/// A replica's PostgreSQL database.
pub struct PostgresEngine {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// Connects to this replica's database.
    config: Config,
    options: PostgresOptions,
    /// Whether this open created the database.
    created: bool,
    // Invariant: equals the budget stored in paxsql_internal.meta (or the
    // default) between entries.
    budget: u64,
    /// `paxsql.apply_backstop_ms` of the database, if an operator set it.
    backstop_override_ms: Option<u64>,
    // Invariant: equals the applied index stored in paxsql_internal.meta.
    applied: LogIndex,
}

impl std::fmt::Debug for PostgresEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresEngine")
            .field("database", &self.options.database)
            .field("applied", &self.applied)
            .finish()
    }
}

const SETUP: &str = "
    CREATE SCHEMA paxsql_internal;
    CREATE TABLE paxsql_internal.meta (key text PRIMARY KEY, value text NOT NULL);
    INSERT INTO paxsql_internal.meta VALUES ('applied_index', '0');
    CREATE TABLE paxsql_internal.requests (
        id text PRIMARY KEY,
        applied_index bigint NOT NULL,
        results text NOT NULL
    );
    CREATE INDEX requests_by_index ON paxsql_internal.requests (applied_index);
    CREATE TABLE paxsql_internal.sequences (name text PRIMARY KEY, last_value bigint);
    CREATE SCHEMA IF NOT EXISTS paxsql;
    CREATE OR REPLACE FUNCTION paxsql.now() RETURNS timestamptz LANGUAGE sql STABLE AS $f$
        SELECT coalesce(nullif(pg_catalog.current_setting('paxsql.now', true), '')::timestamptz,
                        pg_catalog.now())
    $f$;
    CREATE OR REPLACE FUNCTION paxsql.uuid() RETURNS uuid LANGUAGE sql VOLATILE AS $f$
        SELECT (substr(h, 1, 12) || '4' || substr(h, 14, 3) || '8' || substr(h, 18, 15))::uuid
        FROM (SELECT pg_catalog.md5(pg_catalog.random()::text || pg_catalog.random()::text) AS h) s
    $f$;
";

/// The admission gate (see [`admission`]): never holds a row, only locks.
/// Created apart from [`SETUP`] so that databases made before it get it.
const GATE: &str = "CREATE TABLE IF NOT EXISTS paxsql_internal.admission ()";

/// How many times an entry that lost a deadlock to a reader is applied again.
const CONFLICT_ATTEMPTS: u32 = 10;

/// The statement budget stored in the replica (the default if none).
async fn read_budget(client: &Client) -> Result<u64, EngineError> {
    let row = client
        .query_opt(
            "SELECT value FROM paxsql_internal.meta WHERE key = $1",
            &[&settings::STATEMENT_BUDGET_KEY],
        )
        .await
        .map_err(|e| storage("reading the statement budget", &e))?;
    let Some(row) = row else {
        return Ok(settings::STATEMENT_BUDGET_DEFAULT);
    };
    let value: String = row.get(0);
    value
        .parse()
        .map_err(|e| EngineError::Inconsistent(format!("stored statement budget {value:?}: {e}")))
}

/// What opening a database reads from it.
struct Prepared {
    applied: LogIndex,
    budget: u64,
    backstop_override_ms: Option<u64>,
}

impl PostgresEngine {
    /// Connects to the server, creates the replica's database if it is
    /// missing, and opens it. Every error names the server and the cause.
    pub fn open(options: PostgresOptions) -> Result<Self, EngineError> {
        let admin = admin_config(&options.url)?;
        let rt = runtime()?;
        let created = rt.block_on(create_database(&admin, &options.database))?;
        let mut config = admin.clone();
        config.dbname(&options.database);
        let client = rt.block_on(connect(&config))?;
        let mut engine = PostgresEngine {
            rt,
            client,
            config,
            options,
            created,
            budget: settings::STATEMENT_BUDGET_DEFAULT,
            backstop_override_ms: None,
            applied: LogIndex(0),
        };
        let prepared = engine.prepare_database()?;
        engine.applied = prepared.applied;
        engine.budget = prepared.budget;
        engine.backstop_override_ms = prepared.backstop_override_ms;
        Ok(engine)
    }

    /// Opens the replica whose log lives in `group_dir`, checking that the
    /// two belong together: the data dir records its database's name in
    /// `postgres-database`. A database that already holds applied entries
    /// but is unknown to the data dir (the dir was wiped, or another node
    /// uses it) is refused: the log here could not continue it. A database
    /// that vanished while the data dir remembers it is created again and
    /// filled by replaying the log, which is never trimmed.
    pub fn open_for_data_dir(
        options: PostgresOptions,
        group_dir: &std::path::Path,
    ) -> Result<Self, EngineError> {
        let marker = group_dir.join("postgres-database");
        let known = std::fs::read_to_string(&marker).ok();
        let database = options.database.clone();
        if let Some(known) = known.as_deref().map(str::trim) {
            if known != database {
                return Err(EngineError::Inconsistent(format!(
                    "{} belongs to database {known}, not {database}; use the same --cluster \
                     name as before, or a new data dir",
                    group_dir.display()
                )));
            }
        }
        let engine = PostgresEngine::open(options)?;
        if known.is_none() && engine.applied.0 > 0 {
            return Err(EngineError::Inconsistent(format!(
                "database {database} already holds {} applied entries, but {} has no record of \
                 it (a wiped data dir?); its log cannot continue that database: start the node \
                 with its old data dir, or drop the database (DROP DATABASE {database}) to \
                 start afresh",
                engine.applied.0,
                group_dir.display()
            )));
        }
        if known.is_some() && engine.created {
            tracing::warn!(%database, "the replica's database was missing; created it again, replaying the log");
        }
        std::fs::write(&marker, format!("{database}\n"))
            .map_err(|e| EngineError::Storage(format!("writing {}: {e}", marker.display())))?;
        Ok(engine)
    }

    /// Drops a replica's database on the server at `url`, closing any
    /// connection to it (for tests, and for retiring a node for good).
    pub fn drop_database(url: &str, database: &str) -> Result<(), EngineError> {
        let admin: Config = url
            .parse()
            .map_err(|e| EngineError::Storage(format!("the PostgreSQL URL is not valid: {e}")))?;
        let rt = runtime()?;
        rt.block_on(async {
            let client = connect(&admin).await?;
            let quoted = database.replace('"', "\"\"");
            client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
                ))
                .await
                .map_err(|e| storage(&format!("dropping database {database}"), &e))
        })
    }

    /// The replica's database.
    pub fn database(&self) -> &str {
        &self.options.database
    }

    /// Whether opening the engine created its database (a new replica).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Creates paxsql's schema on first use, checks the owner, puts the
    /// sequences back and reads the applied index, the budget and the
    /// operator's backstop.
    fn prepare_database(&mut self) -> Result<Prepared, EngineError> {
        let client = &self.client;
        let owner = &self.options.owner;
        let database = &self.options.database;
        self.rt.block_on(async {
            let fail = |what: &str, e: tokio_postgres::Error| {
                storage(&format!("{what} in database {database}"), &e)
            };
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| fail("starting", e))?;
            let exists = client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1",
                    &[&INTERNAL_SCHEMA],
                )
                .await
                .map_err(|e| fail("reading the schema", e))?
                .is_some();
            if !exists {
                client
                    .batch_execute(SETUP)
                    .await
                    .map_err(|e| fail("creating paxsql's tables", e))?;
                client
                    .execute(
                        "INSERT INTO paxsql_internal.meta VALUES ('owner', $1)",
                        &[owner],
                    )
                    .await
                    .map_err(|e| fail("recording the owner", e))?;
            }
            let stored: Option<String> = client
                .query_opt(
                    "SELECT value FROM paxsql_internal.meta WHERE key = 'owner'",
                    &[],
                )
                .await
                .map_err(|e| fail("reading the owner", e))?
                .map(|r| r.get(0));
            if stored.as_deref() != Some(owner.as_str()) {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(EngineError::Inconsistent(format!(
                    "database {database} belongs to {}, not to {owner}; give this cluster \
                     another --cluster name, or drop the database if it is no longer needed",
                    stored.as_deref().unwrap_or("someone else")
                )));
            }
            client
                .batch_execute(&format!("{GATE}; {RESTORE_SEQUENCES}"))
                .await
                .map_err(|e| fail("restoring sequences", e))?;
            let applied: String = client
                .query_one(
                    "SELECT value FROM paxsql_internal.meta WHERE key = 'applied_index'",
                    &[],
                )
                .await
                .map_err(|e| fail("reading the applied index", e))?
                .get(0);
            let budget = read_budget(client).await?;
            let backstop: Option<String> = client
                .query_one(
                    "SELECT pg_catalog.current_setting('paxsql.apply_backstop_ms', true)",
                    &[],
                )
                .await
                .map_err(|e| fail("reading paxsql.apply_backstop_ms", e))?
                .get(0);
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| fail("committing", e))?;
            let applied = applied.parse::<u64>().map_err(|e| {
                EngineError::Inconsistent(format!(
                    "database {database}: applied index {applied:?}: {e}"
                ))
            })?;
            let backstop_override_ms = match backstop.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(ms) => Some(ms.parse::<u64>().map_err(|e| {
                    EngineError::Inconsistent(format!(
                        "database {database}: paxsql.apply_backstop_ms = {ms:?} is not a \
                         number of milliseconds ({e}); fix it with ALTER DATABASE"
                    ))
                })?),
            };
            Ok(Prepared {
                applied: LogIndex(applied),
                budget,
                backstop_override_ms,
            })
        })
    }

    /// Reconnects after the connection broke between entries (nothing was
    /// in flight: every entry is committed or rolled back by the server).
    fn ensure_connected(&mut self) -> Result<(), EngineError> {
        if !self.client.is_closed() {
            return Ok(());
        }
        tracing::warn!(database = %self.options.database, "PostgreSQL connection lost; reconnecting");
        self.client = self.rt.block_on(connect(&self.config))?;
        let prepared = self.prepare_database()?;
        if prepared.applied != self.applied {
            return Err(EngineError::Inconsistent(format!(
                "database {} is at applied index {} after reconnecting, not {}",
                self.options.database, prepared.applied, self.applied
            )));
        }
        self.budget = prepared.budget;
        self.backstop_override_ms = prepared.backstop_override_ms;
        Ok(())
    }
}

impl SqlEngine for PostgresEngine {
    fn dialect(&self) -> crate::Dialect {
        crate::Dialect::Postgres
    }

    fn applied_index(&self) -> LogIndex {
        self.applied
    }

    fn apply(&mut self, index: LogIndex, entry: &Entry) -> Result<Vec<Applied>, EngineError> {
        assert_eq!(
            index, self.applied,
            "entries are applied in log order, each once"
        );
        self.ensure_connected()?;
        let cx = EntryContext {
            options: &self.options,
            budget: self.budget,
            backstop_override_ms: self.backstop_override_ms,
        };
        let mut attempt = 1;
        loop {
            let outcome = self
                .rt
                .block_on(apply_entry(&self.client, &cx, index, entry));
            let failure = match outcome {
                Ok(done) => {
                    self.applied = LogIndex(index.0 + 1);
                    if done.budget_set {
                        self.budget = self.rt.block_on(read_budget(&self.client))?;
                    }
                    return Ok(done.applied);
                }
                Err(failure) => failure,
            };
            let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
            match failure {
                // The entry starts again from the same committed state
                // (its first step puts the sequences back too), so it
                // comes to the same answers as on every other replica.
                Fatal::Conflict(e) if attempt < CONFLICT_ATTEMPTS => {
                    tracing::warn!(%index, attempt, error = %e, "an entry lost a deadlock to a read; applying it again");
                    attempt += 1;
                }
                failure => return Err(failure.into_engine()),
            }
        }
    }

    fn query(&mut self, stmts: &[Statement]) -> Vec<StmtResult> {
        let failed = |e: &EngineError| {
            stmts
                .iter()
                .map(|_| StmtResult::Error(e.to_string()))
                .collect::<Vec<_>>()
        };
        if let Err(e) = self.ensure_connected() {
            return failed(&e);
        }
        let limits = ReadLimits {
            rows_max: self.options.result_rows_max,
            ..ReadLimits::default()
        };
        let timeout = self.options.read_timeout;
        let outcome = self
            .rt
            .block_on(reader::read(&mut self.client, stmts, timeout, limits));
        outcome.map_or_else(|e| failed(&e), |(_, results)| results)
    }

    fn reader(&self, limits: ReadLimits) -> Result<Box<dyn SqlReader>, EngineError> {
        Ok(Box::new(PostgresReader::open(self.config.clone(), limits)?))
    }

    fn statement_budget(&self) -> Option<u64> {
        Some(self.budget)
    }

    fn completed(&mut self, id: &RequestId) -> Result<Option<Vec<StmtResult>>, EngineError> {
        self.ensure_connected()?;
        self.rt.block_on(completed_in(&self.client, id))
    }

    fn state_hash(&mut self) -> Result<u64, EngineError> {
        self.ensure_connected()?;
        let client = &self.client;
        self.rt.block_on(hash::state_hash(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain_identifiers() {
        assert_eq!(database_name("prod", 3, 0), "paxsql_prod_3_g0");
        let odd = database_name("My-Cluster", 1, 0);
        assert!(odd.starts_with("paxsql_my_cluster_1_g0_"), "{odd}");
        assert_ne!(odd, database_name("my_cluster", 1, 0));
        let long = database_name(&"x".repeat(100), 1, 0);
        assert!(long.len() <= 63, "{long}");
    }
}
