//! Errors as PostgreSQL clients expect them: an `ErrorResponse` with a
//! SQLSTATE that drivers and ORMs branch on.
//!
//! | what went wrong | SQLSTATE |
//! |---|---|
//! | SQLite syntax error, incomplete input, unrecognized token | `42601` syntax_error |
//! | no such table | `42P01` undefined_table |
//! | no such column | `42703` undefined_column |
//! | no such function | `42883` undefined_function |
//! | table/index ... already exists | `42P07` duplicate_table |
//! | UNIQUE / PRIMARY KEY constraint failed | `23505` unique_violation |
//! | NOT NULL constraint failed | `23502` not_null_violation |
//! | FOREIGN KEY constraint failed | `23503` foreign_key_violation |
//! | CHECK constraint failed | `23514` check_violation |
//! | other constraint failures | `23000` integrity_constraint_violation |
//! | datatype mismatch | `42804` datatype_mismatch |
//! | a write sent as a read (readonly database) | `25006` read_only_sql_transaction |
//! | SQL paxsql refuses to replicate (non-deterministic, `ATTACH`, ...) or a feature it lacks | `0A000` feature_not_supported |
//! | parameter count or name does not match | `08P01` / `42P02` |
//! | **no quorum, no leader, or the request timed out** | **`08006` connection_failure**: the outcome of a write is unknown (it may have been applied), exactly as when a PostgreSQL server dies during `COMMIT`; retry only what is idempotent |
//! | the node is overloaded | `53000` insufficient_resources |
//! | the statement budget or a result's byte bound was exceeded | `54000` program_limit_exceeded |
//! | a read ran past its time limit (`statement_timeout`) | `57014` query_canceled |
//! | any other engine error | `XX000` internal_error |

use paxsql_types::RequestError;
use pgwire::error::{ErrorInfo, PgWireError};

/// An error to send: boxed, as `ErrorInfo` is large.
pub(crate) type Fail = Box<ErrorInfo>;

/// An `ERROR`-severity message.
pub(crate) fn error(code: &str, message: impl Into<String>) -> Fail {
    Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    ))
}

/// The same, with a hint.
pub(crate) fn error_hint(code: &str, message: impl Into<String>, hint: &str) -> Fail {
    let mut e = error(code, message);
    e.hint = Some(hint.to_owned());
    e
}

/// As a pgwire error (what handlers return).
pub(crate) fn pg(e: Fail) -> PgWireError {
    PgWireError::UserError(e)
}

/// The SQLSTATE for a SQLite (or paxsql) error message.
pub(crate) fn sqlstate(msg: &str) -> &'static str {
    let m = msg.to_ascii_lowercase();
    let has = |s: &str| m.contains(s);
    if m.starts_with("statement budget exceeded") || m.starts_with("result too large") {
        "54000"
    } else if m.starts_with("read timeout") {
        "57014"
    } else if has("syntax error") || has("incomplete input") || has("unrecognized token") {
        "42601"
    } else if has("no such table") {
        "42P01"
    } else if has("no such column") || has("has no column named") {
        "42703"
    } else if has("no such function") || has("wrong number of arguments to function") {
        "42883"
    } else if has("already exists") {
        "42P07"
    } else if has("unique constraint failed") || has("primary key") && has("constraint") {
        "23505"
    } else if has("not null constraint failed") {
        "23502"
    } else if has("foreign key constraint failed") {
        "23503"
    } else if has("check constraint failed") {
        "23514"
    } else if has("constraint failed") {
        "23000"
    } else if has("datatype mismatch") {
        "42804"
    } else if has("readonly database") || has("read-only") {
        "25006"
    } else if has("parameter count") || has("invalid parameter") {
        "42P02"
    } else if has("not allowed")
        || has("is not supported")
        || has("cannot be fixed before")
        || has("ambiguous")
    {
        "0A000"
    } else {
        "XX000"
    }
}

/// A statement's error from the engine.
pub(crate) fn engine(msg: &str) -> Fail {
    error(sqlstate(msg), msg)
}

/// A request the cluster could not serve.
pub(crate) fn request(e: &RequestError) -> Fail {
    match e {
        RequestError::BadRequest(m) => error(sqlstate(m), m.clone()),
        RequestError::Unavailable(m) if m.starts_with("read timeout") => error("57014", m.clone()),
        RequestError::Unavailable(m) => error_hint(
            "08006",
            m.clone(),
            "paxsql could not complete the request in time (see the message for why); \
             a write may or may not have been applied",
        ),
        RequestError::Overloaded(m) => error("53000", format!("overloaded: {m}")),
        RequestError::Conflict(m) => error("40001", m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_messages_map_to_sqlstates() {
        assert_eq!(sqlstate("near \"SELEC\": syntax error"), "42601");
        assert_eq!(sqlstate("no such table: nope"), "42P01");
        assert_eq!(sqlstate("UNIQUE constraint failed: t.id"), "23505");
        assert_eq!(sqlstate("NOT NULL constraint failed: t.a"), "23502");
        assert_eq!(sqlstate("CHECK constraint failed: a > 0"), "23514");
        assert_eq!(sqlstate("table t already exists"), "42P07");
        assert_eq!(
            sqlstate("random() is not allowed in a replicated statement"),
            "0A000"
        );
        assert_eq!(sqlstate("disk I/O error"), "XX000");
        assert_eq!(
            sqlstate(&paxsql_sql::settings::budget_exceeded(1_000_000)),
            "54000"
        );
        assert_eq!(
            sqlstate(&paxsql_sql::settings::read_timed_out(
                std::time::Duration::from_secs(1)
            )),
            "57014"
        );
        assert_eq!(
            sqlstate(&paxsql_sql::settings::result_too_large(10)),
            "54000"
        );
        assert_eq!(
            request(&RequestError::timeout("write")).code,
            "08006".to_owned()
        );
    }
}
