//! Cross-shard queries: any SELECT over copies of the rows it needs.
//!
//! A query that reads several groups (a join, an aggregate over a split
//! table) is not answered by merging results: the router gathers the rows
//! each group holds for the tables involved into a private in-memory SQLite
//! with the original schema, and runs the query there unchanged. SQLite then
//! gives the exact answer, ORDER BY, GROUP BY, window functions and all.
//!
//! Bounds: the gathered rows are counted in bytes against `bytes_max`, the
//! result in rows against `rows_max`. The database is in memory and cannot
//! reach files: ATTACH is limited to zero databases, and a query is refused
//! unless it only reads (an authorizer allows nothing but reads while it is
//! prepared).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use paxsql_types::{Params, Statement, StmtResult, Value};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;

/// What each gathered row costs beyond its values, in bytes.
const ROW_OVERHEAD_BYTES: usize = 16;

/// An in-memory SQLite database holding copies of the rows a cross-shard
/// query needs, bounded in bytes.
pub struct Gather {
    conn: Connection,
    /// Set while a query is prepared: the authorizer then allows reads only.
    querying: Arc<AtomicBool>,
    /// Invariant: bytes_used <= bytes_max.
    bytes_used: usize,
    bytes_max: usize,
}

impl fmt::Debug for Gather {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gather")
            .field("bytes_used", &self.bytes_used)
            .field("bytes_max", &self.bytes_max)
            .finish_non_exhaustive()
    }
}

impl Gather {
    /// An empty database that holds at most `bytes_max` bytes of rows.
    pub fn new(bytes_max: usize) -> Result<Self, String> {
        let mut conn = Connection::open_in_memory().map_err(|e| e.to_string())?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(|e| e.to_string())?;
        conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA trusted_schema = OFF;")
            .map_err(|e| e.to_string())?;
        let querying = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&querying);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(&ctx, &flag)))
            .map_err(|e| e.to_string())?;
        Ok(Gather {
            conn,
            querying,
            bytes_used: 0,
            bytes_max,
        })
    }

    /// Bytes of rows held so far.
    pub fn bytes_used(&self) -> usize {
        self.bytes_used
    }

    /// Runs a schema statement as the original database has it (CREATE
    /// TABLE/VIEW/INDEX text from `sqlite_schema`). Foreign keys are off, so
    /// tables load in any order. Triggers should not be given: they would
    /// fire as rows are added.
    pub fn schema(&mut self, create_sql: &str) -> Result<(), String> {
        self.conn
            .execute_batch(create_sql)
            .map_err(|e| error_text(&e))
    }

    /// Adds rows to `table`. `columns` are the column names as the source
    /// returned them; a column named `rowid` (or `_rowid_`, `oid`) keeps the
    /// rows' rowids. Every value counts toward the byte bound (text and blob
    /// length, 8 for numbers, 1 for NULL, plus a per-row overhead); rows past
    /// the bound are refused, none of them added.
    pub fn add_rows(
        &mut self,
        table: &str,
        columns: &[String],
        rows: Vec<Vec<Value>>,
    ) -> Result<(), String> {
        if let Some(row) = rows.iter().find(|r| r.len() != columns.len()) {
            return Err(format!(
                "a row for {table} has {} values for {} columns",
                row.len(),
                columns.len()
            ));
        }
        let bytes: usize = rows.iter().map(|r| row_bytes(r)).sum();
        let total = self.bytes_used.saturating_add(bytes);
        if total > self.bytes_max {
            return Err(gather_too_large(self.bytes_max));
        }
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(table),
            columns
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
            vec!["?"; columns.len()].join(", ")
        );
        let tx = self.conn.transaction().map_err(|e| error_text(&e))?;
        {
            let mut insert = tx.prepare(&sql).map_err(|e| error_text(&e))?;
            for row in rows {
                let values = row.into_iter().map(to_sql);
                insert
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(|e| error_text(&e))?;
            }
        }
        tx.commit().map_err(|e| error_text(&e))?;
        self.bytes_used = total;
        Ok(())
    }

    /// Runs the query (one statement with its params) and returns its result
    /// as the engine does: [`StmtResult::Rows`] with column names, declared
    /// types (lower-case, `""` if unknown) and values, or
    /// [`StmtResult::Error`] for an SQL error, a statement that would write,
    /// or a result of more than `rows_max` rows.
    pub fn query(&self, stmt: &Statement, rows_max: usize) -> StmtResult {
        match self.run(stmt, rows_max) {
            Ok(rows) => rows,
            Err(message) => StmtResult::Error(message),
        }
    }

    fn run(&self, stmt: &Statement, rows_max: usize) -> Result<StmtResult, String> {
        self.querying.store(true, Ordering::SeqCst);
        let prepared = self.conn.prepare(&stmt.sql);
        self.querying.store(false, Ordering::SeqCst);
        let mut prepared = prepared.map_err(|e| error_text(&e))?;
        if !prepared.readonly() {
            return Err("a cross-shard query may only read".to_owned());
        }
        bind(&mut prepared, &stmt.params).map_err(|e| error_text(&e))?;
        let columns: Vec<String> = prepared.column_names().map(str::to_owned).collect();
        let types = prepared
            .columns()
            .map(|c| c.decl_type().unwrap_or("").to_ascii_lowercase())
            .collect();
        let mut values = Vec::new();
        let mut rows = prepared.raw_query();
        while let Some(row) = rows.next().map_err(|e| error_text(&e))? {
            if values.len() == rows_max {
                return Err(format!(
                    "the cross-shard query returns more than {rows_max} rows; add a LIMIT or narrow its WHERE"
                ));
            }
            let row = (0..columns.len())
                .map(|i| row.get_ref(i).map(to_value))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| error_text(&e))?;
            values.push(row);
        }
        Ok(StmtResult::Rows {
            columns,
            types,
            values,
        })
    }
}

/// Everything is allowed while loading, except attaching files; while a
/// query is prepared, only reading.
fn authorize(ctx: &AuthContext<'_>, querying: &AtomicBool) -> Authorization {
    match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        _ if !querying.load(Ordering::SeqCst) => Authorization::Allow,
        AuthAction::Select
        | AuthAction::Read { .. }
        | AuthAction::Function { .. }
        | AuthAction::Recursive => Authorization::Allow,
        _ => Authorization::Deny,
    }
}

/// The message for gathered rows past the bound.
fn gather_too_large(bytes_max: usize) -> String {
    format!(
        "the query needs more than {bytes_max} bytes of rows gathered from several groups \
         (cross-shard query bound); narrow it with a WHERE on the key (any WHERE, if it \
         reads one table) or raise --gather-bytes-max"
    )
}

fn row_bytes(row: &[Value]) -> usize {
    let values: usize = row
        .iter()
        .map(|v| match v {
            Value::Null => 1,
            Value::Integer(_) | Value::Real(_) => 8,
            Value::Text(t) => t.len(),
            Value::Blob(b) => b.len(),
        })
        .sum();
    values + ROW_OVERHEAD_BYTES
}

/// An identifier in double quotes, inner quotes doubled.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
                stmt.raw_bind_parameter(i + 1, to_sql(v.clone()))?;
            }
            Ok(())
        }
        Params::Named(pairs) => {
            for (name, v) in pairs {
                let index = named_index(stmt, name)?;
                stmt.raw_bind_parameter(index, to_sql(v.clone()))?;
            }
            Ok(())
        }
    }
}

/// Finds a named parameter given with or without its sigil.
fn named_index(stmt: &rusqlite::Statement<'_>, name: &str) -> rusqlite::Result<usize> {
    let candidates: Vec<String> = if name.starts_with([':', '@', '$']) {
        vec![name.to_owned()]
    } else {
        [':', '@', '$']
            .iter()
            .map(|s| format!("{s}{name}"))
            .collect()
    };
    for candidate in candidates {
        if let Some(i) = stmt.parameter_index(&candidate)? {
            return Ok(i);
        }
    }
    Err(rusqlite::Error::InvalidParameterName(name.to_owned()))
}

fn to_sql(v: Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(f) => SqlValue::Real(f),
        Value::Text(s) => SqlValue::Text(s),
        Value::Blob(b) => SqlValue::Blob(b),
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

/// SQLite's own message, without rusqlite's wrapping.
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
            "more than one statement in one string; send each statement on its own".to_owned()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
