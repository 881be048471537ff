//! Running one user statement on a connection: the authorizer armed while
//! it is prepared, the meter while it steps, and its result bounded in rows
//! and bytes.

use super::hooks::{Meter, Tripped, Work};
use crate::settings;
use paxsql_types::{Params, Statement, StmtResult, Value};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};

/// How much one statement's result may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResultBound {
    /// Rows at most.
    pub(crate) rows_max: usize,
    /// Bytes at most (text and blob lengths, 8 per number, 1 per NULL).
    pub(crate) bytes_max: usize,
}

/// A connection with what guards the statements run on it.
pub(crate) struct Guarded<'c> {
    pub(crate) conn: &'c Connection,
    /// Set while user SQL is prepared: the authorizer applies.
    pub(crate) guard: &'c AtomicBool,
    pub(crate) meter: &'c Meter,
}

impl Guarded<'_> {
    /// Prepares and runs one user statement within `work`, turning a
    /// failure of the statement into its own error; says whether the meter
    /// stopped it. `Err` is a failure of the database itself (corruption,
    /// IO, a full disk, no memory): not the statement's doing, so not
    /// something every replica would see alike.
    pub(crate) fn run(
        &self,
        stmt: &Statement,
        work: Work,
        bound: ResultBound,
    ) -> Result<(StmtResult, Option<Tripped>), String> {
        let result = self.try_run(stmt, work, bound);
        let tripped = self.meter.tripped();
        self.meter.stop();
        let result = match (result, tripped, work) {
            (Err(_), Some(Tripped::Budget), Work::Steps(budget)) => {
                StmtResult::Error(settings::budget_exceeded(budget))
            }
            (Err(_), Some(Tripped::Deadline), Work::Until(_, limit)) => {
                StmtResult::Error(settings::read_timed_out(limit))
            }
            (Ok(r), _, _) => r,
            (Err(Failure::Statement(e)), _, _) => StmtResult::Error(e),
            (Err(Failure::Database(e)), _, _) => return Err(e),
        };
        Ok((result, tripped))
    }

    fn try_run(
        &self,
        stmt: &Statement,
        work: Work,
        bound: ResultBound,
    ) -> Result<StmtResult, Failure> {
        let conn = self.conn;
        let text = |e: rusqlite::Error| failure(&e, bound);
        self.guard.store(true, Ordering::Relaxed);
        let prepared = conn.prepare(&stmt.sql);
        self.guard.store(false, Ordering::Relaxed);
        let mut prepared = prepared.map_err(text)?;
        bind(&mut prepared, &stmt.params).map_err(text)?;
        // Metered from the first step only: preparing may read the schema,
        // which one replica has cached and another not.
        self.meter.start(work);
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
        let mut bytes = 0usize;
        {
            let mut rows = prepared.raw_query();
            while let Some(row) = rows.next().map_err(text)? {
                let (columns, _) = header.get_or_insert_with(|| header_of(row.as_ref()));
                let ncols = columns.len();
                if values.len() == bound.rows_max {
                    return Err(Failure::Statement(format!(
                        "result has more than {} rows; add a LIMIT",
                        bound.rows_max
                    )));
                }
                let mut out = Vec::with_capacity(ncols);
                for i in 0..ncols {
                    let v = row.get_ref(i).map_err(text)?;
                    bytes = bytes.saturating_add(size_of_value(v));
                    if bytes > bound.bytes_max {
                        return Err(Failure::Statement(settings::result_too_large(
                            bound.bytes_max,
                        )));
                    }
                    out.push(to_value(v));
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
}

/// Why a statement did not complete.
enum Failure {
    /// The statement's own doing: the same on every replica.
    Statement(String),
    /// The database failed under it.
    Database(String),
}

/// Sorts a SQLite error into the statement's fault or the database's.
fn failure(e: &rusqlite::Error, bound: ResultBound) -> Failure {
    use rusqlite::ErrorCode as C;
    let text = error_text(e, bound);
    match e.sqlite_error_code() {
        Some(
            C::DatabaseCorrupt
            | C::NotADatabase
            | C::SystemIoFailure
            | C::DiskFull
            | C::OutOfMemory
            | C::CannotOpen
            | C::DatabaseBusy
            | C::DatabaseLocked
            | C::FileLockingProtocolFailed
            | C::PermissionDenied,
        ) => Failure::Database(text),
        _ => Failure::Statement(text),
    }
}

/// What a value counts against a result's byte bound.
fn size_of_value(v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null => 1,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(t) => t.len(),
        ValueRef::Blob(b) => b.len(),
    }
}

/// Column names and declared types (lower case, `""` for expressions).
pub(crate) fn header_of(stmt: &rusqlite::Statement<'_>) -> (Vec<String>, Vec<String>) {
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
fn error_text(e: &rusqlite::Error, bound: ResultBound) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::TooBig => {
            settings::result_too_large(bound.bytes_max)
        }
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
