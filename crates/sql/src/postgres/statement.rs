//! One user statement on a connection: the guards it passes first, the
//! savepoint around it, and how its rows come back — all of them for the
//! log (the same answer on every replica), or in bounded chunks for a read.

use super::session::{error_text, is_fatal, storage};
use crate::pg_determinism::{forbidden, reaches_internal};
use crate::pg_values::{decode, inline_params, type_name};
use crate::{settings, EngineError, ReadLimits};
use paxsql_types::{Statement, StmtResult, Value};
use std::time::Instant;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{Client, Transaction};

/// Why running statements stopped, when it is not the statement's answer.
#[derive(Debug)]
pub(super) enum Fatal {
    /// Another session's locks made PostgreSQL abort the transaction
    /// (deadlock): nothing is wrong with the entry, which may run again.
    Conflict(EngineError),
    /// A statement was cancelled (`statement_timeout`, or an operator).
    Cancelled(EngineError),
    /// The connection or the server failed.
    Engine(EngineError),
}

impl Fatal {
    pub(super) fn into_engine(self) -> EngineError {
        match self {
            Fatal::Conflict(e) | Fatal::Cancelled(e) | Fatal::Engine(e) => e,
        }
    }
}

impl From<EngineError> for Fatal {
    fn from(e: EngineError) -> Self {
        Fatal::Engine(e)
    }
}

/// Sorts an error that ends the work by its cause.
pub(super) fn fatal(context: &str, e: &tokio_postgres::Error) -> Fatal {
    let error = storage(context, e);
    match e.code().map(|c| c.code()) {
        Some("40P01" | "40001") => Fatal::Conflict(error),
        Some("57014") => Fatal::Cancelled(error),
        _ => Fatal::Engine(error),
    }
}

/// How a statement runs, and what becomes of its rows.
#[derive(Clone, Copy)]
pub(super) enum How<'t, 'c> {
    /// Applying the log: errors that are not the statement's fault stop
    /// the replica; every row is fetched, then the row bound checked, so
    /// that the answer is the same on every replica.
    Apply {
        /// Rows a statement may return.
        rows_max: usize,
    },
    /// A read: every error is its answer; rows come in chunks through a
    /// portal of `txn`, and fetching stops at the first bound crossed.
    Read {
        /// The read's transaction.
        txn: &'t Transaction<'c>,
        /// The bounds of one statement's result.
        limits: ReadLimits,
        /// When the whole read must end.
        deadline: Instant,
    },
}

/// What to send around one user statement, pipelined with it.
pub(super) struct Around<'a> {
    /// Sent before the statement (the request's setup), whatever happens.
    pub(super) before: &'a str,
    /// Whether the statement gets a savepoint of its own.
    pub(super) savepoint: bool,
    /// Sent after the statement when it succeeded (the request's end).
    pub(super) after: &'a str,
}

/// The text of a user statement that may run, or why it may not.
pub(super) fn checked_sql(stmt: &Statement) -> Result<std::borrow::Cow<'_, str>, String> {
    if let Some(why) = forbidden(&stmt.sql) {
        return Err(format!("ERROR 0A000: {why}"));
    }
    if let Some(why) = reaches_internal(&stmt.sql) {
        return Err(format!("ERROR 42501: {why}"));
    }
    match inline_params(&stmt.sql, &stmt.params) {
        Ok(sql) => Ok(sql),
        Err(error) if error.starts_with("ERROR ") => Err(error),
        Err(error) => Err(format!("ERROR 08P01: {error}")),
    }
}

/// Runs one user statement and turns a statement error into its result;
/// `Err` only for fatal errors. The second value says whether `after` ran:
/// it does only when the statement succeeded.
///
/// Round trips: one for `before` + the savepoint + Parse/Describe, one for
/// Bind/Execute + the release + `after` (for a statement that returns rows,
/// the release follows the rows). A failed statement costs one more, to
/// undo it. A read's rows cost one more, and one per further chunk.
pub(super) async fn run_statement(
    client: &Client,
    stmt: &Statement,
    around: &Around<'_>,
    how: How<'_, '_>,
) -> Result<(StmtResult, bool), Fatal> {
    let sql = match checked_sql(stmt) {
        Ok(sql) => sql,
        Err(error) => {
            if !around.before.is_empty() {
                client
                    .batch_execute(around.before)
                    .await
                    .map_err(|e| fatal("starting a request", &e))?;
            }
            return Ok((StmtResult::Error(error), false));
        }
    };
    let is_fatal_here = |e: &tokio_postgres::Error| {
        (matches!(how, How::Apply { .. }) && is_fatal(e)) || e.as_db_error().is_none()
    };
    let undo = || async {
        if around.savepoint {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT paxsql_stmt; RELEASE SAVEPOINT paxsql_stmt")
                .await
                .map_err(|e| fatal("undoing a failed statement", &e))
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
    opened.map_err(|e| fatal("starting a statement", &e))?;
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) if is_fatal_here(&e) => return Err(fatal("preparing a statement", &e)),
        Err(e) => {
            undo().await?;
            return Ok((StmtResult::Error(error_text(&e)), false));
        }
    };
    let columns = prepared.columns();
    let no_params: [&(dyn ToSql + Sync); 0] = [];
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
                finished.map_err(|e| fatal("ending a statement", &e))?;
                Ok((
                    StmtResult::Exec {
                        last_insert_id: 0,
                        rows_affected: n,
                    },
                    true,
                ))
            }
            Err(e) if is_fatal_here(&e) => Err(fatal("running a statement", &e)),
            Err(e) => {
                undo().await?;
                Ok((StmtResult::Error(error_text(&e)), false))
            }
        };
    }
    let result = match how {
        How::Apply { rows_max } => client
            .query(&prepared, &no_params)
            .await
            .map(|rows| collect_rows(columns, &rows, rows_max)),
        How::Read {
            txn,
            limits,
            deadline,
        } => fetch_bounded(txn, &prepared, limits, deadline).await,
    };
    let result = match result {
        Ok(result) => result,
        Err(e) if is_fatal_here(&e) => return Err(fatal("running a statement", &e)),
        Err(e) => StmtResult::Error(error_text(&e)),
    };
    if matches!(result, StmtResult::Error(_)) {
        undo().await?;
        return Ok((result, false));
    }
    finish()
        .await
        .map_err(|e| fatal("ending a statement", &e))?;
    Ok((result, true))
}

/// Every row of a statement applied from the log, or the row bound's error.
pub(super) fn collect_rows(
    columns: &[tokio_postgres::Column],
    rows: &[tokio_postgres::Row],
    rows_max: usize,
) -> StmtResult {
    if rows.len() > rows_max {
        return too_many_rows(rows_max);
    }
    let mut values = Vec::with_capacity(rows.len());
    for row in rows {
        match decode_row(columns, row) {
            Ok(out) => values.push(out),
            Err(e) => return e,
        }
    }
    header(columns, values)
}

fn too_many_rows(rows_max: usize) -> StmtResult {
    StmtResult::Error(format!(
        "ERROR 54000: result has more than {rows_max} rows; add a LIMIT"
    ))
}

fn header(columns: &[tokio_postgres::Column], values: Vec<Vec<Value>>) -> StmtResult {
    StmtResult::Rows {
        columns: columns.iter().map(|c| c.name().to_owned()).collect(),
        types: columns.iter().map(|c| type_name(c.type_())).collect(),
        values,
    }
}

fn decode_row(
    columns: &[tokio_postgres::Column],
    row: &tokio_postgres::Row,
) -> Result<Vec<Value>, StmtResult> {
    let mut out = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        let cell = match row.try_get::<_, Raw<'_>>(i) {
            Ok(raw) => decode(c.type_(), raw.0, c.name()),
            Err(e) => Err(e.to_string()),
        };
        match cell {
            Ok(v) => out.push(v),
            Err(e) => return Err(StmtResult::Error(format!("ERROR 0A000: {e}"))),
        }
    }
    Ok(out)
}

/// What a value counts against a read's byte bound (as the SQLite engine
/// counts: text and blob lengths, 8 per number).
fn size_of_value(v: &Value) -> usize {
    match v {
        Value::Null => 1,
        Value::Integer(_) | Value::Real(_) => 8,
        Value::Text(t) => t.len(),
        Value::Blob(b) => b.len(),
    }
}

/// The first chunk of a read's rows; later ones are sized from the bytes
/// per row seen so far, so that one chunk holds about what the byte bound
/// still allows.
const FIRST_CHUNK_ROWS: usize = 128;
const CHUNK_ROWS_MAX: usize = 4096;

/// A read's rows through a portal, chunk by chunk, stopping at the first
/// bound crossed: the rows bound, the byte bound, or the read's deadline
/// (each chunk runs under the time the read has left). A result over a
/// bound costs at most about one more chunk of memory than the bound.
async fn fetch_bounded(
    txn: &Transaction<'_>,
    prepared: &tokio_postgres::Statement,
    limits: ReadLimits,
    deadline: Instant,
) -> Result<StmtResult, tokio_postgres::Error> {
    let columns = prepared.columns();
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let portal = txn.bind(prepared, &no_params).await?;
    let mut values: Vec<Vec<Value>> = Vec::new();
    let mut bytes = 0usize;
    let mut chunk = FIRST_CHUNK_ROWS;
    loop {
        let rows = if values.is_empty() {
            txn.query_portal(&portal, chunk as i32).await?
        } else {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(StmtResult::Error(
                    "ERROR 57014: canceling statement due to statement timeout".into(),
                ));
            }
            let limit = format!("SET LOCAL statement_timeout = {}", left.as_millis().max(1));
            let (set, rows) = tokio::join!(
                txn.batch_execute(&limit),
                txn.query_portal(&portal, chunk as i32)
            );
            set?;
            rows?
        };
        let got = rows.len();
        for row in &rows {
            if values.len() == limits.rows_max {
                return Ok(too_many_rows(limits.rows_max));
            }
            let out = match decode_row(columns, row) {
                Ok(out) => out,
                Err(e) => return Ok(e),
            };
            bytes = out
                .iter()
                .fold(bytes, |b, v| b.saturating_add(size_of_value(v)));
            if bytes > limits.bytes_max {
                return Ok(StmtResult::Error(settings::result_too_large(
                    limits.bytes_max,
                )));
            }
            values.push(out);
        }
        if got < chunk {
            return Ok(header(columns, values));
        }
        let per_row = (bytes / values.len().max(1)).max(1);
        let room = limits.bytes_max.saturating_sub(bytes) / per_row + 1;
        let rows_left = limits.rows_max.saturating_sub(values.len()) + 1;
        chunk = room.min(rows_left).clamp(1, CHUNK_ROWS_MAX);
    }
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
