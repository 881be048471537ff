//! The SQLite engine: one database file per replica.
//!
//! Two connections to the same file: `write` applies log entries, `read`
//! (with `query_only`) serves reads, so no read can change the replica
//! whatever SQL it carries. The file runs in WAL mode with
//! `synchronous=NORMAL`: commits survive a process crash, and after a power
//! loss the database is consistent but may miss its last entries — which the
//! log, the durable truth, replays.
//!
//! Internal tables are named `_paxsql_*`; an authorizer denies user
//! statements any access to them, and denies transaction control, ATTACH and
//! DETACH, which would break the one-transaction-per-entry rule.

mod hooks;
mod reader;
mod statement;
mod twopc;

pub use reader::SqliteReader;

use crate::ranges::{self, Directive, RangeChange};
use crate::settings::{self, Setting};
use crate::twopc::{self as tpc, Kind};
use crate::{txn, vfs, Applied, EngineError, ReadLimits, SqlEngine, SqlReader};
use hooks::{install_authorizer, install_random, seed, Meter, Tripped, Work};
use paxsql_types::{
    ApplyEnv, Entry, LogIndex, Proposal, RequestId, Statement, StmtResult, WriteRequest,
};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use statement::{Guarded, ResultBound};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

/// Tuning of the SQLite engine.
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How many log entries a completed request id is remembered for; a retry
    /// arriving later than that is applied again.
    pub dedup_window_entries: u64,
    /// Rows returned by one read statement at most; more is an error rather
    /// than an unbounded allocation.
    pub result_rows_max: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            dedup_window_entries: 100_000,
            result_rows_max: 1_000_000,
        }
    }
}

/// Bytes one statement applied from the log may return (`RETURNING`, or a
/// `SELECT` sent as a write) at most. A constant, not a flag: every replica
/// must stop the same statement at the same point.
pub const APPLY_RESULT_BYTES_MAX: usize = 64 << 20;

/// A replica's SQLite database.
pub struct SqliteEngine {
    path: PathBuf,
    write: Connection,
    read: Connection,
    options: SqliteOptions,
    /// Seed state of the deterministic `random()` used while applying.
    rng: Arc<AtomicU64>,
    /// True while a user statement is being prepared: the authorizer applies.
    guard_user_sql: Arc<AtomicBool>,
    /// Counts the VM steps of the statement being applied.
    meter: Meter,
    /// The meter of the `read` connection.
    read_meter: Meter,
    // Invariant: equals the budget stored in `_paxsql_meta` (or the
    // default), except inside an entry that changes it.
    budget: u64,
    // Invariant: equals the applied index stored in `_paxsql_meta`.
    applied: LogIndex,
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine")
            .field("path", &self.path)
            .field("applied", &self.applied)
            .finish()
    }
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS _paxsql_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT OR IGNORE INTO _paxsql_meta (key, value) VALUES ('applied_index', 0);
    CREATE TABLE IF NOT EXISTS _paxsql_requests (
        id TEXT PRIMARY KEY,
        applied_index INTEGER NOT NULL,
        results TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS _paxsql_requests_by_index ON _paxsql_requests (applied_index);
";

/// How often (in entries) old request ids are forgotten.
const DEDUP_PRUNE_EVERY: u64 = 1024;

fn storage(e: rusqlite::Error) -> EngineError {
    EngineError::Storage(e.to_string())
}

/// Opens a connection to the replica's file through paxsql's VFS.
fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, EngineError> {
    vfs::register();
    Connection::open_with_flags_and_vfs(path, flags, vfs::NAME).map_err(storage)
}

/// The statement budget recorded in the database (the default if none).
fn read_budget(conn: &Connection) -> Result<u64, EngineError> {
    let stored: Option<i64> = conn
        .prepare_cached("SELECT value FROM _paxsql_meta WHERE key = ?1")
        .and_then(|mut s| {
            s.query_row([settings::STATEMENT_BUDGET_KEY], |r| r.get(0))
                .optional()
        })
        .map_err(storage)?;
    Ok(stored.map_or(settings::STATEMENT_BUDGET_DEFAULT, |v| v as u64))
}

/// What applying an entry once came to.
enum Attempt {
    /// Applied; the transaction is still open.
    Done(Vec<Applied>),
    /// A statement ran out of budget and SQLite rolled the whole entry's
    /// transaction back with it (it does so for an interrupted write): the
    /// entry runs again, with that statement failing at once.
    Again,
}

/// A statement of an entry: (proposal, statement) positions.
type StmtAt = (usize, usize);

impl SqliteEngine {
    /// Opens (creating if missing) the database file at `path`.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, EngineError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut write = open_connection(path, flags)?;
        write
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            )
            .map_err(storage)?;
        write.execute_batch(SCHEMA).map_err(storage)?;
        write.execute_batch(ranges::SCHEMA).map_err(storage)?;
        write.execute_batch(tpc::SCHEMA).map_err(storage)?;
        let mut read = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        read.execute_batch("PRAGMA query_only=1; PRAGMA foreign_keys=ON;")
            .map_err(storage)?;

        let rng = Arc::new(AtomicU64::new(0));
        let guard_user_sql = Arc::new(AtomicBool::new(false));
        let (meter, read_meter) = (Meter::default(), Meter::default());
        for (conn, m) in [(&mut write, &meter), (&mut read, &read_meter)] {
            install_random(conn, &rng).map_err(storage)?;
            install_authorizer(conn, &guard_user_sql).map_err(storage)?;
            m.install(conn).map_err(storage)?;
        }
        let applied: i64 = write
            .query_row(
                "SELECT value FROM _paxsql_meta WHERE key = 'applied_index'",
                [],
                |r| r.get(0),
            )
            .map_err(storage)?;
        let budget = read_budget(&write)?;
        Ok(SqliteEngine {
            path: path.to_owned(),
            write,
            read,
            options,
            rng,
            guard_user_sql,
            meter,
            read_meter,
            budget,
            applied: LogIndex(applied as u64),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file beside the database for moving images in and out.
    fn scratch_path(&self, what: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{what}"));
        self.path.with_file_name(name)
    }

    /// Applies an entry's proposals inside the open transaction. Statements
    /// in `exhausted` ran out of budget in an earlier attempt: they fail at
    /// once with the same error, without running.
    fn apply_once(
        &mut self,
        index: LogIndex,
        entry: &Entry,
        exhausted: &mut BTreeSet<StmtAt>,
    ) -> Result<Attempt, EngineError> {
        let mut out = Vec::with_capacity(entry.proposals.len());
        for (at, p) in entry.proposals.iter().enumerate() {
            match p {
                Proposal::Write(w) => match self.apply_write(index, at, w, exhausted)? {
                    Some(applied) => out.push(applied),
                    None => return Ok(Attempt::Again),
                },
                Proposal::Barrier(b) => out.push(Applied::Barrier(*b)),
            }
        }
        Ok(Attempt::Done(out))
    }

    /// `None` when SQLite rolled the entry's transaction back.
    fn apply_write(
        &mut self,
        index: LogIndex,
        at: usize,
        w: &WriteRequest,
        exhausted: &mut BTreeSet<StmtAt>,
    ) -> Result<Option<Applied>, EngineError> {
        if let Some(results) = self.completed(&w.id)? {
            return Ok(Some(Applied::Write {
                id: w.id.clone(),
                results,
                duplicate: true,
            }));
        }
        let Some(results) = self.run_write(at, w, exhausted, true)? else {
            return Ok(None);
        };
        let encoded = serde_json::to_string(&results)
            .map_err(|e| EngineError::Inconsistent(format!("encoding results: {e}")))?;
        self.write
            .prepare_cached(
                "INSERT INTO _paxsql_requests (id, applied_index, results) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![w.id.0, index.0 as i64, encoded]))
            .map_err(storage)?;
        Ok(Some(Applied::Write {
            id: w.id.clone(),
            results,
            duplicate: false,
        }))
    }

    /// Runs a write's statements inside a savepoint of the entry's
    /// transaction; `None` when SQLite rolled that transaction back. With
    /// `apply` (not a probe) a prepared transaction keeps other writes out,
    /// and a prepare is recorded.
    fn run_write(
        &mut self,
        at: usize,
        w: &WriteRequest,
        exhausted: &mut BTreeSet<StmtAt>,
        apply: bool,
    ) -> Result<Option<Vec<StmtResult>>, EngineError> {
        seed(&self.rng, w.env);
        let _clock = vfs::pin_clock(w.env.unix_ms);
        // last_insert_rowid() lives in the connection, not the database: a
        // replica that restarted would report another value. Start every
        // request from 0 so that results are equal on every replica.
        // SAFETY: the handle is this open connection's, used on its thread.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(self.write.handle(), 0) };
        self.write
            .execute_batch("SAVEPOINT paxsql_request")
            .map_err(storage)?;
        let bound = ResultBound {
            rows_max: self.options.result_rows_max,
            bytes_max: APPLY_RESULT_BYTES_MAX,
        };
        let kind = tpc::kind(&w.stmts);
        let (mut results, mut failed) = match &kind {
            Kind::Decide(d) => (vec![self.decide(d)?], false),
            Kind::Outcome(d) => match self.outcome(at, d, bound, exhausted)? {
                Some(results) => (results, false),
                None => return Ok(None),
            },
            Kind::Plain | Kind::Prepare(_) => match apply.then(|| self.holder()).transpose()? {
                Some(Some(holder)) => (vec![StmtResult::Error(tpc::locked(&holder))], true),
                _ => match self.run_stmts(at, &w.stmts, w.transaction, bound, exhausted)? {
                    Some(ran) => ran,
                    None => return Ok(None),
                },
            },
        };
        if let Some(at) = txn::expect_at(&w.stmts) {
            if let Some(why) = txn::check_expected(&w.stmts[at], &results, at) {
                results[at] = StmtResult::Error(why);
                failed = true;
            }
        }
        let end = match (&kind, failed) {
            (_, true) => "ROLLBACK TO paxsql_request; RELEASE paxsql_request",
            (Kind::Prepare(p), false) if apply => {
                // The YES vote: the statements are undone and recorded.
                self.write
                    .execute_batch("ROLLBACK TO paxsql_request")
                    .map_err(storage)?;
                self.record_prepared(p, w)?;
                "RELEASE paxsql_request"
            }
            _ => "RELEASE paxsql_request",
        };
        self.write.execute_batch(end).map_err(storage)?;
        if failed || matches!(kind, Kind::Prepare(_)) {
            // A budget set by the rolled-back statements is undone too.
            self.budget = read_budget(&self.write)?;
        }
        Ok(Some(results))
    }

    /// Runs statements in order inside the request's savepoint: their
    /// results, and whether the request failed (a failed claim, or any
    /// failure in a transaction, which stops it). `None` when SQLite rolled
    /// the entry's transaction back.
    fn run_stmts(
        &mut self,
        at: usize,
        stmts: &[Statement],
        transaction: bool,
        bound: ResultBound,
        exhausted: &mut BTreeSet<StmtAt>,
    ) -> Result<Option<(Vec<StmtResult>, bool)>, EngineError> {
        let mut results = Vec::with_capacity(stmts.len());
        for (i, stmt) in stmts.iter().enumerate() {
            let directive = Directive::parse(&stmt.sql);
            let result = if exhausted.contains(&(at, i)) {
                StmtResult::Error(settings::budget_exceeded(self.budget))
            } else if let Some(Ok(Directive::WithPrepared)) = directive {
                match self.with_prepared(at, bound, exhausted)? {
                    Some(result) => result,
                    None => return Ok(None),
                }
            } else if let Some(directive) = directive.clone() {
                self.apply_directive(directive)?
            } else if let Some(setting) = Setting::parse(&stmt.sql) {
                self.apply_setting(setting)?
            } else {
                let guarded = Guarded {
                    conn: &self.write,
                    guard: &self.guard_user_sql,
                    meter: &self.meter,
                };
                // A failure of the database itself would not happen on the
                // other replicas: this one stops rather than record it.
                let (result, tripped) = guarded
                    .run(stmt, Work::Steps(self.budget), bound)
                    .map_err(EngineError::Storage)?;
                let failed_here = matches!(result, StmtResult::Error(_));
                if failed_here && tripped == Some(Tripped::Budget) && self.write.is_autocommit() {
                    exhausted.insert((at, i));
                    return Ok(None);
                }
                result
            };
            let is_error = matches!(result, StmtResult::Error(_));
            results.push(result);
            // A claim that does not hold fails the whole request.
            let claim = matches!(directive, Some(Ok(Directive::Claim(_))));
            if is_error && (transaction || claim) {
                return Ok(Some((results, true)));
            }
        }
        Ok(Some((results, false)))
    }

    /// Applies a settings statement inside the entry's transaction.
    fn apply_setting(&mut self, setting: Setting) -> Result<StmtResult, EngineError> {
        match setting {
            Setting::SetStatementBudget(Ok(budget)) => {
                self.write
                    .prepare_cached(
                        "INSERT OR REPLACE INTO _paxsql_meta (key, value) VALUES (?1, ?2)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![settings::STATEMENT_BUDGET_KEY, budget as i64])
                    })
                    .map_err(storage)?;
                self.budget = budget;
                Ok(StmtResult::Exec {
                    last_insert_id: 0,
                    rows_affected: 0,
                })
            }
            Setting::SetStatementBudget(Err(e)) => Ok(StmtResult::Error(e.to_string())),
            Setting::ShowStatementBudget => Ok(self.show_budget()),
        }
    }

    /// Applies a directive of the router inside the entry's transaction.
    fn apply_directive(
        &mut self,
        directive: Result<Directive, String>,
    ) -> Result<StmtResult, EngineError> {
        match directive {
            Err(e) => Ok(StmtResult::Error(e)),
            Ok(Directive::Claim(claims)) => {
                for (range, expected) in claims {
                    let found = self.range_generation(range)?;
                    if found != Some(expected) {
                        let why = ranges::wrong_range(range, expected, found);
                        return Ok(StmtResult::Error(why));
                    }
                }
                Ok(StmtResult::Exec {
                    last_insert_id: 0,
                    rows_affected: 0,
                })
            }
            Ok(Directive::Ranges(change)) => self.change_ranges(&change),
            // Checked once the statements after it have run (`run_write`).
            Ok(Directive::Expect(_)) => Ok(StmtResult::Exec {
                last_insert_id: 0,
                rows_affected: 0,
            }),
            // A prepare is recorded once its statements have run; the rest
            // are whole requests of their own (`run_write`).
            Ok(Directive::Prepare(_)) => Ok(StmtResult::Exec {
                last_insert_id: 0,
                rows_affected: 0,
            }),
            Ok(Directive::Decide(_) | Directive::Outcome(_) | Directive::WithPrepared) => Ok(
                StmtResult::Error("a two-phase commit directive out of place".into()),
            ),
        }
    }

    fn range_generation(&self, range: u64) -> Result<Option<u64>, EngineError> {
        self.write
            .prepare_cached("SELECT generation FROM _paxsql_ranges WHERE range_id = ?1")
            .and_then(|mut s| {
                s.query_row([range as i64], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|g| g.map(|g| g as u64))
            .map_err(storage)
    }

    /// A compare-and-set of the table of ranges; the tables whose keys this
    /// group now guards get their triggers.
    fn change_ranges(&mut self, change: &RangeChange) -> Result<StmtResult, EngineError> {
        for &(range, expected) in &change.expect {
            let found = self.range_generation(range)?;
            if found != expected {
                let why = match expected {
                    Some(g) => ranges::wrong_range(range, g, found),
                    None => format!("{}: range {range} exists already", ranges::WRONG_RANGE),
                };
                return Ok(StmtResult::Error(why));
            }
        }
        if let Some(table) = &change.new_table {
            let placed: bool = self
                .write
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM _paxsql_ranges WHERE tbl = ?1)")
                .and_then(|mut s| s.query_row([table], |r| r.get(0)))
                .map_err(storage)?;
            if placed {
                let why = format!("{}: table {table} has ranges already", ranges::WRONG_RANGE);
                return Ok(StmtResult::Error(why));
            }
        }
        if let Some(table) = &change.replace_table {
            self.write
                .prepare_cached("DELETE FROM _paxsql_ranges WHERE tbl = ?1")
                .and_then(|mut s| s.execute([table]))
                .map_err(storage)?;
        }
        for &range in &change.drop {
            self.write
                .prepare_cached("DELETE FROM _paxsql_ranges WHERE range_id = ?1")
                .and_then(|mut s| s.execute([range as i64]))
                .map_err(storage)?;
        }
        for row in &change.put {
            self.write
                .prepare_cached(
                    "INSERT OR REPLACE INTO _paxsql_ranges
                       (range_id, tbl, start, \"end\", grp, generation, pk)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        row.range as i64,
                        row.table,
                        row.start,
                        row.end,
                        row.group,
                        row.generation as i64,
                        row.pk
                    ])
                })
                .map_err(storage)?;
            let exists: bool = self
                .write
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE)",
                )
                .and_then(|mut s| s.query_row([&row.table], |r| r.get(0)))
                .map_err(storage)?;
            if row.pk.is_some() && exists {
                self.write
                    .execute_batch(&ranges::guard_sql(&row.table))
                    .map_err(storage)?;
            }
        }
        Ok(StmtResult::Exec {
            last_insert_id: 0,
            rows_affected: change.put.len() as u64,
        })
    }

    fn show_budget(&self) -> StmtResult {
        settings::budget_rows(self.budget, "integer")
    }

    fn prune_requests(&mut self, index: LogIndex) -> Result<(), EngineError> {
        if !index.0.is_multiple_of(DEDUP_PRUNE_EVERY) || index.0 < self.options.dedup_window_entries
        {
            return Ok(());
        }
        let horizon = index.0 - self.options.dedup_window_entries;
        self.write
            .execute(
                "DELETE FROM _paxsql_requests WHERE applied_index < ?1",
                params![horizon as i64],
            )
            .map_err(storage)?;
        Ok(())
    }

    fn user_tables(&self) -> Result<Vec<(String, String)>, EngineError> {
        let mut stmt = self
            .read
            .prepare(
                "SELECT name, sql FROM sqlite_schema
                 WHERE type = 'table' AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\'
                   AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
                 ORDER BY name",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                ))
            })
            .map_err(storage)?;
        rows.collect::<Result<_, _>>().map_err(storage)
    }
}

impl SqlEngine for SqliteEngine {
    fn dialect(&self) -> crate::Dialect {
        crate::Dialect::Sqlite
    }

    fn applied_index(&self) -> LogIndex {
        self.applied
    }

    fn apply(&mut self, index: LogIndex, entry: &Entry) -> Result<Vec<Applied>, EngineError> {
        assert_eq!(
            index, self.applied,
            "entries are applied in log order, each once"
        );
        // Each attempt costs at most the entry's work plus one budget, and
        // marks one more statement as exhausted: the loop ends.
        let mut exhausted = BTreeSet::new();
        loop {
            self.write
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(storage)?;
            let outcome = (|| {
                let Attempt::Done(out) = self.apply_once(index, entry, &mut exhausted)? else {
                    return Ok(None);
                };
                let next = LogIndex(index.0 + 1);
                self.write
                    .prepare_cached(
                        "UPDATE _paxsql_meta SET value = ?1 WHERE key = 'applied_index'",
                    )
                    .and_then(|mut s| s.execute(params![next.0 as i64]))
                    .map_err(storage)?;
                self.prune_requests(next)?;
                self.write.execute_batch("COMMIT").map_err(storage)?;
                Ok(Some((next, out)))
            })();
            match outcome {
                Ok(Some((next, out))) => {
                    self.applied = next;
                    return Ok(out);
                }
                Ok(None) => {
                    tracing::debug!(%index, exhausted = exhausted.len(), "statement out of budget; applying the entry again");
                    self.budget = read_budget(&self.write)?;
                }
                Err(e) => {
                    let _ = self.write.execute_batch("ROLLBACK");
                    self.budget = read_budget(&self.write)?;
                    return Err(e);
                }
            }
        }
    }

    fn query(&mut self, stmts: &[Statement]) -> Vec<StmtResult> {
        let bound = ResultBound {
            rows_max: self.options.result_rows_max,
            bytes_max: APPLY_RESULT_BYTES_MAX,
        };
        let guarded = Guarded {
            conn: &self.read,
            guard: &self.guard_user_sql,
            meter: &self.read_meter,
        };
        stmts
            .iter()
            .map(|s| match Setting::parse(&s.sql) {
                Some(Setting::ShowStatementBudget) => self.show_budget(),
                Some(_) => StmtResult::Error(crate::settings::SET_IS_A_WRITE.into()),
                None => match guarded.run(s, Work::Steps(self.budget), bound) {
                    Ok((result, _)) => result,
                    Err(e) => StmtResult::Error(e),
                },
            })
            .collect()
    }

    fn statement_budget(&self) -> Option<u64> {
        Some(self.budget)
    }

    fn probe(
        &mut self,
        stmts: &[Statement],
        env: ApplyEnv,
    ) -> Result<Vec<StmtResult>, EngineError> {
        let w = WriteRequest {
            id: RequestId(String::new()),
            stmts: stmts.to_vec(),
            transaction: true,
            env,
        };
        // As `apply` does: a statement out of budget makes SQLite roll
        // the transaction back; run again with it marked as exhausted.
        let mut exhausted = BTreeSet::new();
        loop {
            self.write.execute_batch("BEGIN").map_err(storage)?;
            let run = self.run_write(0, &w, &mut exhausted, false);
            if !self.write.is_autocommit() {
                self.write.execute_batch("ROLLBACK").map_err(storage)?;
            }
            self.budget = read_budget(&self.write)?;
            if let Some(results) = run? {
                return Ok(results);
            }
        }
    }

    fn reader(&self, limits: ReadLimits) -> Result<Box<dyn SqlReader>, EngineError> {
        Ok(Box::new(SqliteReader::open(&self.path, limits)?))
    }

    fn completed(&mut self, id: &RequestId) -> Result<Option<Vec<StmtResult>>, EngineError> {
        let encoded: Option<String> = self
            .write
            .prepare_cached("SELECT results FROM _paxsql_requests WHERE id = ?1")
            .and_then(|mut s| s.query_row(params![id.0], |r| r.get(0)).optional())
            .map_err(storage)?;
        encoded
            .map(|e| {
                serde_json::from_str(&e)
                    .map_err(|e| EngineError::Inconsistent(format!("stored results of {id}: {e}")))
            })
            .transpose()
    }

    fn backup(&mut self, dest: &Path) -> Result<LogIndex, EngineError> {
        // Between entries no transaction is open: the copy is the state at
        // exactly `self.applied`.
        let _ = std::fs::remove_file(dest);
        self.write
            .backup(
                rusqlite::MAIN_DB,
                dest,
                None::<fn(rusqlite::backup::Progress)>,
            )
            .map_err(storage)?;
        let copy = Connection::open(dest).map_err(storage)?;
        let internal: Vec<String> = copy
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND name LIKE '\\_paxsql\\_%' ESCAPE '\\'",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(storage)?;
        for name in internal {
            copy.execute_batch(&format!("DROP TABLE \"{}\"", name.replace('"', "\"\"")))
                .map_err(storage)?;
        }
        copy.execute_batch("PRAGMA journal_mode=DELETE; VACUUM;")
            .map_err(storage)?;
        Ok(self.applied)
    }

    fn snapshot(&mut self) -> Result<(LogIndex, Vec<u8>), EngineError> {
        // Between entries no transaction is open: the copy is the state at
        // exactly `self.applied`. The backup API writes a plain (rollback
        // journal) file, which `install` can read back on any replica.
        let tmp = self.scratch_path("snapshot-out");
        let _ = std::fs::remove_file(&tmp);
        self.write
            .backup(
                rusqlite::MAIN_DB,
                &tmp,
                None::<fn(rusqlite::backup::Progress)>,
            )
            .map_err(storage)?;
        let image = std::fs::read(&tmp).map_err(|e| EngineError::Storage(e.to_string()));
        let _ = std::fs::remove_file(&tmp);
        Ok((self.applied, image?))
    }

    fn install(&mut self, index: LogIndex, image: &[u8]) -> Result<(), EngineError> {
        let tmp = self.scratch_path("snapshot-in");
        std::fs::write(&tmp, image).map_err(|e| EngineError::Storage(e.to_string()))?;
        // The image must be what it claims before it replaces anything.
        let claimed: rusqlite::Result<i64> = Connection::open_with_flags(
            &tmp,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.query_row(
                "SELECT value FROM _paxsql_meta WHERE key = 'applied_index'",
                [],
                |r| r.get(0),
            )
        });
        let checked = match claimed {
            Ok(i) if i as u64 == index.0 => Ok(()),
            Ok(i) => Err(EngineError::Inconsistent(format!(
                "snapshot image is at index {i}, not {index}"
            ))),
            Err(e) => Err(EngineError::Inconsistent(format!(
                "snapshot image is not a database: {e}"
            ))),
        };
        // One write transaction on the live file: all of the image or none.
        let restored = checked.and_then(|()| {
            self.write
                .restore(
                    rusqlite::MAIN_DB,
                    &tmp,
                    None::<fn(rusqlite::backup::Progress)>,
                )
                .map_err(storage)
        });
        let _ = std::fs::remove_file(&tmp);
        restored?;
        self.applied = index;
        self.budget = read_budget(&self.write)?;
        self.persist()?;
        Ok(())
    }

    fn persist(&mut self) -> Result<LogIndex, EngineError> {
        // With synchronous=NORMAL the WAL is synced before a checkpoint
        // starts, so every commit so far is durable once this returns, even
        // if a reader kept the checkpoint from finishing.
        self.write
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(storage)?;
        Ok(self.applied)
    }

    fn state_hash(&mut self) -> Result<u64, EngineError> {
        let mut h = Fnv64::new();
        for (name, sql) in self.user_tables()? {
            h.write(name.as_bytes());
            h.write(sql.as_bytes());
            let quoted = name.replace('"', "\"\"");
            let ncols = self
                .read
                .prepare(&format!("SELECT * FROM \"{quoted}\" LIMIT 0"))
                .map_err(storage)?
                .column_count();
            let order: Vec<String> = (1..=ncols).map(|i| i.to_string()).collect();
            let sql = format!("SELECT * FROM \"{quoted}\" ORDER BY {}", order.join(", "));
            let mut stmt = self.read.prepare(&sql).map_err(storage)?;
            let mut rows = stmt.query([]).map_err(storage)?;
            while let Some(row) = rows.next().map_err(storage)? {
                for i in 0..ncols {
                    hash_value(&mut h, row.get_ref(i).map_err(storage)?);
                }
            }
        }
        Ok(h.finish())
    }
}

/// FNV-1a, 64 bit: stable across runs and builds, unlike std's hasher.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn hash_value(h: &mut Fnv64, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => h.write(b"n"),
        ValueRef::Integer(i) => {
            h.write(b"i");
            h.write(&i.to_le_bytes());
        }
        ValueRef::Real(f) => {
            h.write(b"r");
            h.write(&f.to_bits().to_le_bytes());
        }
        ValueRef::Text(t) => {
            h.write(b"t");
            h.write(t);
        }
        ValueRef::Blob(b) => {
            h.write(b"b");
            h.write(b);
        }
    }
}
