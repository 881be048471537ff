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

use crate::{vfs, Applied, EngineError, SqlEngine};
use paxsql_types::{
    ApplyEnv, Entry, LogIndex, Params, Proposal, RequestId, Statement, StmtResult, Value,
    WriteRequest,
};
use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

impl SqliteEngine {
    /// Opens (creating if missing) the database file at `path`.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, EngineError> {
        vfs::register();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let mut write =
            Connection::open_with_flags_and_vfs(path, flags, vfs::NAME).map_err(storage)?;
        write
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            )
            .map_err(storage)?;
        write.execute_batch(SCHEMA).map_err(storage)?;
        let mut read = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            vfs::NAME,
        )
        .map_err(storage)?;
        read.execute_batch("PRAGMA query_only=1; PRAGMA foreign_keys=ON;")
            .map_err(storage)?;

        let rng = Arc::new(AtomicU64::new(0));
        let guard_user_sql = Arc::new(AtomicBool::new(false));
        for conn in [&mut write, &mut read] {
            install_random(conn, &rng).map_err(storage)?;
            install_authorizer(conn, &guard_user_sql).map_err(storage)?;
        }
        let applied: i64 = write
            .query_row(
                "SELECT value FROM _paxsql_meta WHERE key = 'applied_index'",
                [],
                |r| r.get(0),
            )
            .map_err(storage)?;
        Ok(SqliteEngine {
            path: path.to_owned(),
            write,
            read,
            options,
            rng,
            guard_user_sql,
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

    fn apply_write(&mut self, index: LogIndex, w: &WriteRequest) -> Result<Applied, EngineError> {
        if let Some(results) = self.completed(&w.id)? {
            return Ok(Applied::Write {
                id: w.id.clone(),
                results,
                duplicate: true,
            });
        }
        let results = self.run_write(w)?;
        let encoded = serde_json::to_string(&results)
            .map_err(|e| EngineError::Inconsistent(format!("encoding results: {e}")))?;
        self.write
            .prepare_cached(
                "INSERT INTO _paxsql_requests (id, applied_index, results) VALUES (?1, ?2, ?3)",
            )
            .and_then(|mut s| s.execute(params![w.id.0, index.0 as i64, encoded]))
            .map_err(storage)?;
        Ok(Applied::Write {
            id: w.id.clone(),
            results,
            duplicate: false,
        })
    }

    /// Runs a write's statements inside a savepoint of the entry's transaction.
    fn run_write(&mut self, w: &WriteRequest) -> Result<Vec<StmtResult>, EngineError> {
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
        let mut results = Vec::with_capacity(w.stmts.len());
        let mut failed = false;
        for stmt in &w.stmts {
            let result = run_statement(
                &self.write,
                &self.guard_user_sql,
                stmt,
                self.options.result_rows_max,
            );
            let is_error = matches!(result, StmtResult::Error(_));
            results.push(result);
            if is_error && w.transaction {
                failed = true;
                break;
            }
        }
        let end = if failed {
            "ROLLBACK TO paxsql_request; RELEASE paxsql_request"
        } else {
            "RELEASE paxsql_request"
        };
        self.write.execute_batch(end).map_err(storage)?;
        Ok(results)
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
        self.write
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(storage)?;
        let mut out = Vec::with_capacity(entry.proposals.len());
        let outcome = (|| {
            for p in &entry.proposals {
                match p {
                    Proposal::Write(w) => out.push(self.apply_write(index, w)?),
                    Proposal::Barrier(b) => out.push(Applied::Barrier(*b)),
                }
            }
            let next = LogIndex(index.0 + 1);
            self.write
                .prepare_cached("UPDATE _paxsql_meta SET value = ?1 WHERE key = 'applied_index'")
                .and_then(|mut s| s.execute(params![next.0 as i64]))
                .map_err(storage)?;
            self.prune_requests(next)?;
            self.write.execute_batch("COMMIT").map_err(storage)?;
            Ok(next)
        })();
        match outcome {
            Ok(next) => {
                self.applied = next;
                Ok(out)
            }
            Err(e) => {
                let _ = self.write.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn query(&mut self, stmts: &[Statement]) -> Vec<StmtResult> {
        stmts
            .iter()
            .map(|s| {
                run_statement(
                    &self.read,
                    &self.guard_user_sql,
                    s,
                    self.options.result_rows_max,
                )
            })
            .collect()
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

/// Prepares and runs one user statement, turning any failure into the
/// statement's own error.
fn run_statement(
    conn: &Connection,
    guard: &AtomicBool,
    stmt: &Statement,
    rows_max: usize,
) -> StmtResult {
    match try_statement(conn, guard, stmt, rows_max) {
        Ok(r) => r,
        Err(e) => StmtResult::Error(e),
    }
}

fn try_statement(
    conn: &Connection,
    guard: &AtomicBool,
    stmt: &Statement,
    rows_max: usize,
) -> Result<StmtResult, String> {
    let text = |e: rusqlite::Error| error_text(&e);
    guard.store(true, Ordering::Relaxed);
    let prepared = conn.prepare(&stmt.sql);
    guard.store(false, Ordering::Relaxed);
    let mut prepared = prepared.map_err(text)?;
    bind(&mut prepared, &stmt.params).map_err(text)?;
    if prepared.column_count() == 0 {
        let before = conn.total_changes();
        prepared.raw_execute().map_err(text)?;
        // changes() keeps the count of the last INSERT/UPDATE/DELETE, even
        // across a CREATE TABLE; report 0 for a statement that changed nothing.
        let changed = conn.total_changes() != before;
        return Ok(StmtResult::Exec {
            last_insert_id: conn.last_insert_rowid(),
            rows_affected: if changed { conn.changes() } else { 0 },
        });
    }
    // Names and types are read after the first step: a schema change since
    // the statement was compiled is noticed (and the statement recompiled)
    // only when it steps.
    let mut header: Option<(Vec<String>, Vec<String>)> = None;
    let mut values = Vec::new();
    {
        let mut rows = prepared.raw_query();
        while let Some(row) = rows.next().map_err(text)? {
            let (columns, _) = header.get_or_insert_with(|| header_of(row.as_ref()));
            let ncols = columns.len();
            if values.len() == rows_max {
                return Err(format!("result has more than {rows_max} rows; add a LIMIT"));
            }
            let mut out = Vec::with_capacity(ncols);
            for i in 0..ncols {
                out.push(to_value(row.get_ref(i).map_err(text)?));
            }
            values.push(out);
        }
    }
    // No rows: the statement has stepped to its end, so it is compiled
    // against the current schema now.
    let (columns, types) = header.unwrap_or_else(|| header_of(&prepared));
    Ok(StmtResult::Rows {
        columns,
        types,
        values,
    })
}

/// Column names and declared types (lower case, `""` for expressions).
fn header_of(stmt: &rusqlite::Statement<'_>) -> (Vec<String>, Vec<String>) {
    let columns = stmt.column_names().map(str::to_owned).collect();
    let types = stmt
        .columns()
        .map(|c| c.decl_type().unwrap_or("").to_ascii_lowercase())
        .collect();
    (columns, types)
}

fn bind(stmt: &mut rusqlite::Statement<'_>, params: &Params) -> rusqlite::Result<()> {
    match params {
        Params::None => Ok(()),
        Params::Positional(values) => {
            let expected = stmt.parameter_count();
            if values.len() != expected {
                return Err(rusqlite::Error::InvalidParameterCount(
                    values.len(),
                    expected,
                ));
            }
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, to_sql(v))?;
            }
            Ok(())
        }
        Params::Named(pairs) => {
            for (name, v) in pairs {
                let index = named_index(stmt, name)?;
                stmt.raw_bind_parameter(index, to_sql(v))?;
            }
            Ok(())
        }
    }
}

/// Finds a named parameter given with or without its sigil.
fn named_index(stmt: &rusqlite::Statement<'_>, name: &str) -> rusqlite::Result<usize> {
    if name.starts_with([':', '@', '$']) {
        if let Some(i) = stmt.parameter_index(name)? {
            return Ok(i);
        }
    } else {
        for sigil in [':', '@', '$'] {
            if let Some(i) = stmt.parameter_index(&format!("{sigil}{name}"))? {
                return Ok(i);
            }
        }
    }
    Err(rusqlite::Error::InvalidParameterName(name.to_owned()))
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Integer(i) => V::Integer(*i),
        Value::Real(f) => V::Real(*f),
        Value::Text(s) => V::Text(s.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn to_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The message a user sees for a failed statement: SQLite's own text,
/// without rusqlite's wrapping.
fn error_text(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        rusqlite::Error::InvalidParameterCount(given, expected) => {
            format!("wrong number of parameters: {given} given, the statement has {expected}")
        }
        rusqlite::Error::InvalidParameterName(name) => {
            format!("the statement has no parameter named {name}")
        }
        rusqlite::Error::MultipleStatement => {
            "more than one statement in one string; send each statement as its own array element"
                .to_owned()
        }
        other => other.to_string(),
    }
}

/// Replaces SQLite's `random()` and `randomblob()` with a sequence seeded
/// per write, so that they return the same values on every replica.
fn install_random(conn: &Connection, rng: &Arc<AtomicU64>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8;
    let state = Arc::clone(rng);
    conn.create_scalar_function("random", 0, flags, move |_| Ok(next_random(&state) as i64))?;
    let state = Arc::clone(rng);
    conn.create_scalar_function("randomblob", 1, flags, move |ctx| {
        let n = ctx.get::<i64>(0)?.clamp(1, 1 << 30) as usize;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend_from_slice(&next_random(&state).to_le_bytes());
        }
        out.truncate(n);
        Ok(out)
    })
}

fn seed(rng: &AtomicU64, env: ApplyEnv) {
    rng.store(env.seed, Ordering::Relaxed);
}

/// splitmix64: small, fast and good enough for SQL's random().
fn next_random(state: &AtomicU64) -> u64 {
    // The engine's thread is the only caller: load, step, store.
    let mut s = state.load(Ordering::Relaxed);
    let v = crate::splitmix64(&mut s);
    state.store(s, Ordering::Relaxed);
    v
}

fn install_authorizer(conn: &mut Connection, guard: &Arc<AtomicBool>) -> rusqlite::Result<()> {
    let guard = Arc::clone(guard);
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        if !guard.load(Ordering::Relaxed) {
            return Authorization::Allow;
        }
        authorize_user(&ctx)
    }))
}

/// Pragmas that take an argument only to say what to report on.
const REPORTING_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "pragma_list",
    "function_list",
    "collation_list",
    "module_list",
    "database_list",
];

fn authorize_user(ctx: &AuthContext<'_>) -> Authorization {
    use AuthAction as A;
    let internal = |name: &str| name.starts_with("_paxsql_");
    match ctx.action {
        // A pragma with a value changes the connection or the file outside
        // the log (and would be lost on restart): only reporting ones pass.
        A::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } if !REPORTING_PRAGMAS.contains(&pragma_name.to_ascii_lowercase().as_str()) => {
            Authorization::Deny
        }
        A::Transaction { .. } | A::Savepoint { .. } | A::Attach { .. } | A::Detach { .. } => {
            Authorization::Deny
        }
        A::Read { table_name, .. }
        | A::Insert { table_name }
        | A::Delete { table_name }
        | A::Update { table_name, .. }
        | A::CreateTable { table_name }
        | A::DropTable { table_name }
        | A::CreateIndex { table_name, .. }
        | A::DropIndex { table_name, .. }
        | A::CreateTrigger { table_name, .. }
        | A::DropTrigger { table_name, .. }
        | A::AlterTable { table_name, .. }
            if internal(table_name) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
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
