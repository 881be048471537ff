//! The PostgreSQL engine: each replica is a database of its own on a
//! PostgreSQL server.
//!
//! # One connection, on the group's thread
//!
//! The engine holds one tokio-postgres connection, driven by a
//! current-thread tokio runtime that the engine owns: every call blocks the
//! group's thread (which owns the engine anyway, see `crates/node`) until
//! PostgreSQL answers, exactly like the SQLite engine blocks on its file.
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
//!   `IntervalStyle=postgres`, `extra_float_digits=1`, `search_path=public`,
//!   no statement timeout while applying), and the database is created with
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
//! # Failures
//!
//! An error that is not the statement's fault — the connection broke, the
//! server is shutting down, out of disk or memory (SQLSTATE classes 08, 53,
//! 57, 58, XX) — is an [`EngineError::Storage`]: the entry is rolled back
//! and the replica stops, as with SQLite, instead of recording an error
//! that other replicas would not see. A restarted node reconnects and
//! replays. A read that meets a broken connection answers with that error.
//!
//! # Limitation: snapshots
//!
//! There is no snapshot or backup of a PostgreSQL replica yet
//! ([`SqlEngine::backup`] says so): a node that lost its database catches
//! up by replaying the whole log, which is never trimmed today.

use crate::pg_determinism::{forbidden, reaches_internal, INTERNAL_SCHEMA};
use crate::pg_values::{decode, inline_params, type_name};
use crate::{Applied, EngineError, SqlEngine};
use paxsql_types::{Entry, LogIndex, Proposal, RequestId, Statement, StmtResult, WriteRequest};
use std::collections::HashMap;
use std::time::Duration;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Config, NoTls};

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
    /// How long one read statement may run (writes have no limit: a
    /// timeout would fire on some replicas and not others).
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

/// Records every sequence's position, in the entry's transaction.
const SAVE_SEQUENCES: &str = "
    INSERT INTO paxsql_internal.sequences (name, last_value)
        SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_catalog.pg_sequences
        WHERE schemaname <> 'paxsql_internal'
    ON CONFLICT (name) DO UPDATE SET last_value = EXCLUDED.last_value
        WHERE paxsql_internal.sequences.last_value IS DISTINCT FROM EXCLUDED.last_value;
    DELETE FROM paxsql_internal.sequences s WHERE NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_sequences p
        WHERE format('%I.%I', p.schemaname, p.sequencename) = s.name);
";

/// Puts sequences back where the last committed entry left them.
const RESTORE_SEQUENCES: &str = "
    SELECT CASE WHEN s.last_value IS NULL
                THEN pg_catalog.setval(s.name::regclass, p.start_value, false)
                ELSE pg_catalog.setval(s.name::regclass, s.last_value, true) END
    FROM paxsql_internal.sequences s
    JOIN pg_catalog.pg_sequences p ON format('%I.%I', p.schemaname, p.sequencename) = s.name
    WHERE s.last_value IS DISTINCT FROM p.last_value
";

/// The session every replica runs in, whatever the server's defaults.
const SESSION: &str = "
    SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres';
    SET extra_float_digits = 1; SET standard_conforming_strings = on;
    SET search_path = public; SET bytea_output = 'hex'; SET statement_timeout = 0;
    SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;
    SET default_transaction_isolation = 'read committed'; SET default_transaction_read_only = off;
    SET synchronous_commit = off; SET client_min_messages = error; SET xmloption = content;
    SET check_function_bodies = on; SET row_security = on
";

/// How often (in entries) old request ids are forgotten.
const DEDUP_PRUNE_EVERY: u64 = 1024;

fn storage(context: &str, e: &tokio_postgres::Error) -> EngineError {
    EngineError::Storage(format!("{context}: {}", error_text(e)))
}

/// A statement's error as every replica reports it: `ERROR 23505: duplicate
/// key value violates unique constraint "t_pkey" (Key (k)=(1) already exists.)`.
fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("ERROR {}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

/// True when an error is not the statement's fault: the replica must stop
/// rather than record an answer other replicas would not give.
fn is_fatal(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            matches!(&code[..2], "08" | "53" | "57" | "58" | "XX" | "F0")
                || matches!(code, "25P02" | "40001" | "40P01")
        }
    }
}

/// Describes the server of a config for messages, without the password.
fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(default user)");
    format!("PostgreSQL at {host}:{port} as {user}")
}

/// A result cell's bytes, whatever its type.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(Some(raw)))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(None))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

impl PostgresEngine {
    /// Connects to the server, creates the replica's database if it is
    /// missing, and opens it. Every error names the server and the cause.
    pub fn open(options: PostgresOptions) -> Result<Self, EngineError> {
        let mut admin: Config = options
            .url
            .parse()
            .map_err(|e| EngineError::Storage(format!("the PostgreSQL URL is not valid: {e}")))?;
        if admin.get_connect_timeout().is_none() {
            admin.connect_timeout(Duration::from_secs(5));
        }
        admin.application_name("paxsql");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Storage(format!("starting the PostgreSQL client: {e}")))?;
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
            applied: LogIndex(0),
        };
        engine.prepare_database()?;
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EngineError::Storage(format!("starting the PostgreSQL client: {e}")))?;
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
    /// sequences back and reads the applied index.
    fn prepare_database(&mut self) -> Result<(), EngineError> {
        let client = &self.client;
        let owner = &self.options.owner;
        let database = &self.options.database;
        let applied = self.rt.block_on(async {
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
                .batch_execute(RESTORE_SEQUENCES)
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
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| fail("committing", e))?;
            applied.parse::<u64>().map_err(|e| {
                EngineError::Inconsistent(format!(
                    "database {database}: applied index {applied:?}: {e}"
                ))
            })
        })?;
        self.applied = LogIndex(applied);
        Ok(())
    }

    /// Reconnects after the connection broke between entries (nothing was
    /// in flight: every entry is committed or rolled back by the server).
    fn ensure_connected(&mut self) -> Result<(), EngineError> {
        if !self.client.is_closed() {
            return Ok(());
        }
        tracing::warn!(database = %self.options.database, "PostgreSQL connection lost; reconnecting");
        self.client = self.rt.block_on(connect(&self.config))?;
        let before = self.applied;
        self.prepare_database()?;
        if self.applied != before {
            return Err(EngineError::Inconsistent(format!(
                "database {} is at applied index {} after reconnecting, not {before}",
                self.options.database, self.applied
            )));
        }
        Ok(())
    }
}

/// Connects and pins the session.
async fn connect(config: &Config) -> Result<Client, EngineError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        EngineError::Storage(format!(
            "cannot connect to {}: {}",
            describe(config),
            error_text(&e)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    client
        .batch_execute(SESSION)
        .await
        .map_err(|e| storage("setting up the session", &e))?;
    // Superusers only; others keep the server's language for messages.
    if client.batch_execute("SET lc_messages = 'C'").await.is_err() {
        tracing::info!(
            "cannot set lc_messages (not a superuser); error texts use the server's language"
        );
    }
    Ok(client)
}

/// Creates the database unless it exists; true if it was created.
async fn create_database(admin: &Config, database: &str) -> Result<bool, EngineError> {
    let client = connect(admin).await?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&database],
        )
        .await
        .map_err(|e| storage(&format!("looking up database {database}"), &e))?
        .is_some();
    if exists {
        return Ok(false);
    }
    let quoted = database.replace('"', "\"\"");
    let sql = format!(
        "CREATE DATABASE \"{quoted}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    );
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
            Ok(false)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            let user = admin.get_user().unwrap_or("this role");
            Err(EngineError::Storage(format!(
                "{} may not create database {database} ({}): grant it with \
                 ALTER ROLE {user} CREATEDB, or create the database for it beforehand",
                describe(admin),
                error_text(&e)
            )))
        }
        Err(e) => Err(storage(
            &format!("creating database {database} on {}", describe(admin)),
            &e,
        )),
    }
}

/// Whether statements run for a write (errors that are not the statement's
/// fault stop the replica) or a read (every error is the read's answer).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Read,
}

/// What to send around one user statement, pipelined with it.
struct Around<'a> {
    /// Sent before the statement (the request's setup), whatever happens.
    before: &'a str,
    /// Whether the statement gets a savepoint of its own.
    savepoint: bool,
    /// Sent after the statement when it succeeded (the request's end).
    after: &'a str,
}

/// Runs one user statement and turns a statement error into its result;
/// `Err` only for fatal errors. The second value says whether `after` ran:
/// it does only when the statement succeeded.
///
/// Round trips: one for `before` + the savepoint + Parse/Describe, one for
/// Bind/Execute + the release + `after` (for a statement that returns rows,
/// the release follows the rows). A failed statement costs one more, to undo it.
async fn run_statement(
    client: &Client,
    stmt: &Statement,
    rows_max: usize,
    around: &Around<'_>,
    mode: Mode,
) -> Result<(StmtResult, bool), EngineError> {
    let refused = match forbidden(&stmt.sql) {
        Some(why) => Some(format!("ERROR 0A000: {why}")),
        None => reaches_internal(&stmt.sql).map(|why| format!("ERROR 42501: {why}")),
    };
    let sql = match (refused, inline_params(&stmt.sql, &stmt.params)) {
        (Some(error), _) | (None, Err(error)) => {
            let error = if error.starts_with("ERROR ") {
                error
            } else {
                format!("ERROR 08P01: {error}")
            };
            if !around.before.is_empty() {
                client
                    .batch_execute(around.before)
                    .await
                    .map_err(|e| storage("starting a request", &e))?;
            }
            return Ok((StmtResult::Error(error), false));
        }
        (None, Ok(sql)) => sql,
    };
    let fatal = |e: &tokio_postgres::Error| {
        (mode == Mode::Apply && is_fatal(e)) || e.as_db_error().is_none()
    };
    let undo = || async {
        if around.savepoint {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT paxsql_stmt; RELEASE SAVEPOINT paxsql_stmt")
                .await
                .map_err(|e| storage("undoing a failed statement", &e))
        } else {
            Ok(())
        }
    };
    let mut before = around.before.to_owned();
    if around.savepoint {
        before.push_str("; SAVEPOINT paxsql_stmt");
    }
    let mut after = String::new();
    if around.savepoint {
        after.push_str("RELEASE SAVEPOINT paxsql_stmt; ");
    }
    after.push_str(around.after);
    let after = after.trim().trim_end_matches(';').to_owned();

    let (opened, prepared) = tokio::join!(
        async {
            if before.trim_start_matches(';').trim().is_empty() {
                Ok(())
            } else {
                client.batch_execute(before.trim_start_matches(';')).await
            }
        },
        client.prepare(&sql)
    );
    opened.map_err(|e| storage("starting a statement", &e))?;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) if fatal(&e) => return Err(storage("preparing a statement", &e)),
        Err(e) => {
            undo().await?;
            return Ok((StmtResult::Error(error_text(&e)), false));
        }
    };
    let columns = prepared.columns();
    let no_params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
    let finish = || async {
        if after.is_empty() {
            Ok(())
        } else {
            client.batch_execute(&after).await
        }
    };
    if columns.is_empty() {
        // The release goes out with the statement; it fails harmlessly
        // (the transaction is aborted) if the statement does.
        let (done, finished) = tokio::join!(client.execute(&prepared, &no_params), finish());
        return match done {
            Ok(n) => {
                finished.map_err(|e| storage("ending a statement", &e))?;
                Ok((
                    StmtResult::Exec {
                        last_insert_id: 0,
                        rows_affected: n,
                    },
                    true,
                ))
            }
            Err(e) if fatal(&e) => Err(storage("running a statement", &e)),
            Err(e) => {
                undo().await?;
                Ok((StmtResult::Error(error_text(&e)), false))
            }
        };
    }
    let rows = match client.query(&prepared, &no_params).await {
        Ok(rows) => rows,
        Err(e) if fatal(&e) => return Err(storage("running a statement", &e)),
        Err(e) => {
            undo().await?;
            return Ok((StmtResult::Error(error_text(&e)), false));
        }
    };
    let result = collect_rows(columns, &rows, rows_max);
    if matches!(result, StmtResult::Error(_)) {
        undo().await?;
        return Ok((result, false));
    }
    finish()
        .await
        .map_err(|e| storage("ending a statement", &e))?;
    Ok((result, true))
}

fn collect_rows(
    columns: &[tokio_postgres::Column],
    rows: &[tokio_postgres::Row],
    rows_max: usize,
) -> StmtResult {
    if rows.len() > rows_max {
        return StmtResult::Error(format!(
            "ERROR 54000: result has more than {rows_max} rows; add a LIMIT"
        ));
    }
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        let mut out = Vec::with_capacity(columns.len());
        for (i, c) in columns.iter().enumerate() {
            let cell = match row.try_get::<_, Raw<'_>>(i) {
                Ok(raw) => decode(c.type_(), raw.0, c.name()),
                Err(e) => Err(e.to_string()),
            };
            match cell {
                Ok(v) => out.push(v),
                Err(e) => return StmtResult::Error(format!("ERROR 0A000: {e}")),
            }
        }
        values.push(out);
    }
    StmtResult::Rows {
        columns: columns.iter().map(|c| c.name().to_owned()).collect(),
        types: columns.iter().map(|c| type_name(c.type_())).collect(),
        values,
    }
}

/// `setseed()`'s argument (in [-1, 1]) for an entry's seed.
fn seed_arg(seed: u64) -> f64 {
    (seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// The entry's clock as a `timestamptz` literal's text.
fn clock_text(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms = unix_ms.rem_euclid(86_400_000);
    let (y, m, d) = crate::pg_values::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}+00",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

async fn completed_in(
    client: &Client,
    id: &RequestId,
) -> Result<Option<Vec<StmtResult>>, EngineError> {
    let row = client
        .query_opt(
            "SELECT results FROM paxsql_internal.requests WHERE id = $1",
            &[&id.0],
        )
        .await
        .map_err(|e| storage("looking up a request id", &e))?;
    row.map(|r| decode_results(id, &r.get::<_, String>(0)))
        .transpose()
}

fn decode_results(id: &RequestId, encoded: &str) -> Result<Vec<StmtResult>, EngineError> {
    serde_json::from_str(encoded)
        .map_err(|e| EngineError::Inconsistent(format!("stored results of {id}: {e}")))
}

/// One entry's transaction: which requests it completed, to record at commit.
struct EntryWork {
    index: LogIndex,
    /// Requests completed before this entry, or earlier in it: their first answer.
    completed: HashMap<String, Vec<StmtResult>>,
    /// (id, encoded results) of the requests this entry applied.
    records: Vec<(String, String)>,
}

/// Applies one write request inside the entry's transaction.
async fn apply_write(
    client: &Client,
    options: &PostgresOptions,
    work: &mut EntryWork,
    w: &WriteRequest,
) -> Result<Applied, EngineError> {
    if let Some(results) = work.completed.get(&w.id.0) {
        return Ok(Applied::Write {
            id: w.id.clone(),
            results: results.clone(),
            duplicate: true,
        });
    }
    let setup = format!(
        "SAVEPOINT paxsql_request; SELECT pg_catalog.set_config('paxsql.now', '{}', true), \
         pg_catalog.setseed({:?}); DISCARD SEQUENCES",
        clock_text(w.env.unix_ms),
        seed_arg(w.env.seed)
    );
    // Several independent statements each get a savepoint; otherwise the
    // request's savepoint is the statement's.
    let per_statement = !w.transaction && w.stmts.len() > 1;
    let mut results = Vec::with_capacity(w.stmts.len());
    let mut failed = false;
    let mut ended = false;
    for (i, stmt) in w.stmts.iter().enumerate() {
        let last = i + 1 == w.stmts.len();
        let around = Around {
            before: if i == 0 { &setup } else { "" },
            savepoint: per_statement,
            after: if last {
                "RELEASE SAVEPOINT paxsql_request"
            } else {
                ""
            },
        };
        let (r, after_ran) =
            run_statement(client, stmt, options.result_rows_max, &around, Mode::Apply).await?;
        ended = last && after_ran;
        let is_error = matches!(r, StmtResult::Error(_));
        results.push(r);
        if is_error && !per_statement {
            failed = true;
            break;
        }
    }
    let end = if failed {
        "ROLLBACK TO SAVEPOINT paxsql_request; RELEASE SAVEPOINT paxsql_request"
    } else if w.stmts.is_empty() {
        &*format!("{setup}; RELEASE SAVEPOINT paxsql_request")
    } else if !ended {
        "RELEASE SAVEPOINT paxsql_request"
    } else {
        ""
    };
    if !end.is_empty() {
        client
            .batch_execute(end)
            .await
            .map_err(|e| storage("ending a request", &e))?;
    }
    let encoded = serde_json::to_string(&results)
        .map_err(|e| EngineError::Inconsistent(format!("encoding results: {e}")))?;
    work.records.push((w.id.0.clone(), encoded));
    work.completed.insert(w.id.0.clone(), results.clone());
    Ok(Applied::Write {
        id: w.id.clone(),
        results,
        duplicate: false,
    })
}

/// Applies a whole entry: BEGIN with the duplicate lookup, the proposals,
/// then the records, the applied index and the sequences with the COMMIT.
async fn apply_entry(
    client: &Client,
    options: &PostgresOptions,
    index: LogIndex,
    entry: &Entry,
) -> Result<Vec<Applied>, EngineError> {
    let ids: Vec<&str> = entry
        .proposals
        .iter()
        .filter_map(|p| match p {
            Proposal::Write(w) => Some(w.id.0.as_str()),
            Proposal::Barrier(_) => None,
        })
        .collect();
    let lookup: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    let (begun, known) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.query(
            "SELECT id, results FROM paxsql_internal.requests WHERE id = ANY($1)",
            &lookup,
        )
    );
    begun.map_err(|e| storage("starting an entry", &e))?;
    let mut work = EntryWork {
        index,
        completed: HashMap::new(),
        records: Vec::new(),
    };
    for row in known.map_err(|e| storage("looking up request ids", &e))? {
        let id: String = row.get(0);
        let results = decode_results(&RequestId(id.clone()), row.get(1))?;
        work.completed.insert(id, results);
    }
    let mut out = Vec::with_capacity(entry.proposals.len());
    for p in &entry.proposals {
        match p {
            Proposal::Write(w) => out.push(apply_write(client, options, &mut work, w).await?),
            Proposal::Barrier(b) => out.push(Applied::Barrier(*b)),
        }
    }
    let next = LogIndex(work.index.0 + 1);
    let mut finish = format!(
        "UPDATE paxsql_internal.meta SET value = '{}' WHERE key = 'applied_index'; {SAVE_SEQUENCES}",
        next.0
    );
    if next.0.is_multiple_of(DEDUP_PRUNE_EVERY) && next.0 >= options.dedup_window_entries {
        let horizon = next.0 - options.dedup_window_entries;
        finish.push_str(&format!(
            "DELETE FROM paxsql_internal.requests WHERE applied_index < {horizon};"
        ));
    }
    finish.push_str("COMMIT");
    let (ids, results): (Vec<String>, Vec<String>) = work.records.into_iter().unzip();
    let at = index.0 as i64;
    // The records go first; if they fail, the batch after them fails too
    // (the transaction is aborted) and never reaches its COMMIT.
    let (recorded, committed) = tokio::join!(
        async {
            if ids.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    "INSERT INTO paxsql_internal.requests (id, applied_index, results) \
                     SELECT unnest($1::text[]), $2, unnest($3::text[])",
                    &[&ids, &at, &results],
                )
                .await
        },
        client.batch_execute(&finish)
    );
    recorded.map_err(|e| storage("recording requests", &e))?;
    committed.map_err(|e| storage("committing an entry", &e))?;
    Ok(out)
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
        let next = LogIndex(index.0 + 1);
        let outcome = self
            .rt
            .block_on(apply_entry(&self.client, &self.options, index, entry));
        match outcome {
            Ok(out) => {
                self.applied = next;
                Ok(out)
            }
            Err(e) => {
                let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
                Err(e)
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
        let client = &self.client;
        let options = &self.options;
        let outcome: Result<Vec<StmtResult>, EngineError> = self.rt.block_on(async {
            let begin = format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {}",
                options.read_timeout.as_millis()
            );
            client
                .batch_execute(&begin)
                .await
                .map_err(|e| storage("starting a read", &e))?;
            let mut out = Vec::with_capacity(stmts.len());
            for s in stmts {
                let around = Around {
                    before: "",
                    savepoint: true,
                    after: "",
                };
                let (r, _) =
                    run_statement(client, s, options.result_rows_max, &around, Mode::Read).await?;
                out.push(r);
            }
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| storage("ending a read", &e))?;
            Ok(out)
        });
        outcome.unwrap_or_else(|e| {
            let _ = self.rt.block_on(self.client.batch_execute("ROLLBACK"));
            failed(&e)
        })
    }

    fn completed(&mut self, id: &RequestId) -> Result<Option<Vec<StmtResult>>, EngineError> {
        self.ensure_connected()?;
        self.rt.block_on(completed_in(&self.client, id))
    }

    fn state_hash(&mut self) -> Result<u64, EngineError> {
        self.ensure_connected()?;
        let client = &self.client;
        self.rt.block_on(state_hash(client))
    }
}

/// Hashes every user table (name, columns, rows in a fixed order) and
/// every sequence's position.
async fn state_hash(client: &Client) -> Result<u64, EngineError> {
    let fail = |e: tokio_postgres::Error| storage("hashing the state", &e);
    let mut h = Fnv64::new();
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(fail)?;
    let tables = client
        .query(
            "SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'paxsql_internal'
               AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
             ORDER BY format('%I.%I', n.nspname, c.relname) COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(fail)?;
    for t in &tables {
        let oid: u32 = t.get(0);
        let name: String = t.get(1);
        h.write(name.as_bytes());
        let columns = client
            .query(
                "SELECT attname::text, pg_catalog.format_type(atttypid, atttypmod), attnotnull
                 FROM pg_catalog.pg_attribute
                 WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                &[&oid],
            )
            .await
            .map_err(fail)?;
        for c in &columns {
            let (n, ty, not_null): (String, String, bool) = (c.get(0), c.get(1), c.get(2));
            h.write(format!("{n} {ty} {not_null}").as_bytes());
        }
        let rows = client
            .query(
                &format!(
                    "SELECT r FROM (SELECT x::text AS r FROM {name} AS x) q ORDER BY r COLLATE \"C\""
                ),
                &[],
            )
            .await
            .map_err(fail)?;
        for r in &rows {
            let text: String = r.get(0);
            h.write(text.as_bytes());
        }
    }
    let sequences = client
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), coalesce(last_value::text, '-')
             FROM pg_catalog.pg_sequences WHERE schemaname <> 'paxsql_internal'
             ORDER BY format('%I.%I', schemaname, sequencename) COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(fail)?;
    for s in &sequences {
        let (name, value): (String, String) = (s.get(0), s.get(1));
        h.write(format!("sequence {name} {value}").as_bytes());
    }
    client.batch_execute("ROLLBACK").await.map_err(fail)?;
    Ok(h.0)
}

/// FNV-1a, 64 bit, with a separator after each write (as the SQLite engine).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().chain(std::iter::once(&0xff)) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
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

    #[test]
    fn the_clock_text_is_utc() {
        assert_eq!(clock_text(1_700_000_000_123), "2023-11-14 22:13:20.123+00");
        assert!((-1.0..=1.0).contains(&seed_arg(u64::MAX)));
        assert!((-1.0..=1.0).contains(&seed_arg(0)));
    }
}
