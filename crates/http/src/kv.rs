//! Key-value endpoints for `curl` users, stored in the ordinary table
//! `paxsql_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)` and replicated
//! like any other write (so SQL can read them too).
//!
//! | route | does |
//! |---|---|
//! | `PUT /kv/{key}` | sets the key to the request body (bytes, kept as is) |
//! | `GET /kv/{key}?level=` | the value's bytes, or `404` |
//! | `DELETE /kv/{key}` | removes the key; `404` if it was not there |
//! | `GET /kv?prefix=P&level=` | `{"keys": [{"key", "value"}]}`; values as UTF-8 text, or base64 with `"encoding": "base64"` |
//!
//! A key is the rest of the path after `/kv/`, percent-decoded, so it may
//! hold `/`, spaces and any Unicode.

use crate::db::Db;
use crate::error::ApiError;
use crate::flags::Flags;
use crate::handlers::{read_body, App};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use paxsql_types::{Params, Statement, StmtResult, Value};

const CREATE: &str =
    "CREATE TABLE IF NOT EXISTS paxsql_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)";
/// Keys listed by one prefix query at most.
const LIST_MAX: usize = 10_000;

fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.into(),
        params: Params::Positional(params),
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("empty key: use /kv/{key}"));
    }
    Ok(())
}

/// `PUT /kv/{key}`.
pub(crate) async fn put<D: Db>(
    State(app): State<App<D>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let flags = Flags::parse(&uri, &headers);
    let opts = flags.write_options()?;
    let value = read_body(body, &headers, app.limits.body_bytes_max).await?;
    let upsert = stmt(
        "INSERT INTO paxsql_kv (key, value) VALUES (?, ?) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        vec![Value::Text(key), Value::Blob(value.to_vec())],
    );
    let r = app
        .db
        .execute(vec![Statement::new(CREATE), upsert], opts)
        .await?;
    first_error(&r.results)?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"raft_index": r.index.0}),
    ))
}

/// `GET /kv/{key}`.
pub(crate) async fn get_one<D: Db>(
    State(app): State<App<D>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let read = Flags::parse(&uri, &headers).read_options(app.limits.request_timeout)?;
    let q = stmt(
        "SELECT value FROM paxsql_kv WHERE key = ?",
        vec![Value::Text(key.clone())],
    );
    let r = app.db.query(vec![q], read).await?;
    let rows = rows_or_empty(&r.results)?;
    let Some(value) = rows.first().and_then(|row| row.first()) else {
        return Err(ApiError::missing(format!("no such key: {key:?}")));
    };
    let bytes = match value {
        Value::Blob(b) => b.clone(),
        Value::Text(t) => t.clone().into_bytes(),
        other => other.to_json().to_string().into_bytes(),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// `DELETE /kv/{key}`.
pub(crate) async fn delete<D: Db>(
    State(app): State<App<D>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let opts = Flags::parse(&uri, &headers).write_options()?;
    let del = stmt(
        "DELETE FROM paxsql_kv WHERE key = ?",
        vec![Value::Text(key.clone())],
    );
    let r = app
        .db
        .execute(vec![Statement::new(CREATE), del], opts)
        .await?;
    first_error(&r.results)?;
    match r.results.get(1) {
        Some(StmtResult::Exec { rows_affected, .. }) if *rows_affected > 0 => Ok(json(
            StatusCode::OK,
            serde_json::json!({"deleted": key, "raft_index": r.index.0}),
        )),
        _ => Err(ApiError::missing(format!("no such key: {key:?}"))),
    }
}

/// `GET /kv?prefix=P`.
pub(crate) async fn list<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let read = Flags::parse(&uri, &headers).read_options(app.limits.request_timeout)?;
    let prefix = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(pairs)| pairs)
        .unwrap_or_default()
        .into_iter()
        .find(|(k, _)| k == "prefix")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let q = stmt(
        &format!(
            "SELECT key, value FROM paxsql_kv WHERE substr(key, 1, length(?1)) = ?1 \
             ORDER BY key LIMIT {LIST_MAX}"
        ),
        vec![Value::Text(prefix)],
    );
    let r = app.db.query(vec![q], read).await?;
    let keys = rows_or_empty(&r.results)?
        .iter()
        .map(|row| match row.as_slice() {
            [key, value, ..] => Ok(entry_json(key, value)),
            _ => Err(ApiError::internal("unexpected result shape")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json(StatusCode::OK, serde_json::json!({ "keys": keys })))
}

fn entry_json(key: &Value, value: &Value) -> serde_json::Value {
    let key = key.to_json();
    match value {
        Value::Blob(b) => match std::str::from_utf8(b) {
            Ok(text) => serde_json::json!({"key": key, "value": text}),
            Err(_) => serde_json::json!({
                "key": key,
                "value": base64::engine::general_purpose::STANDARD.encode(b),
                "encoding": "base64",
            }),
        },
        other => serde_json::json!({"key": key, "value": other.to_json()}),
    }
}

/// Rows of the one result; a missing table means no keys yet.
fn rows_or_empty(results: &[StmtResult]) -> Result<Vec<Vec<Value>>, ApiError> {
    match results.first() {
        Some(StmtResult::Rows { values, .. }) => Ok(values.clone()),
        Some(StmtResult::Error(e)) if e.contains("no such table") => Ok(Vec::new()),
        Some(StmtResult::Error(e)) => Err(ApiError::internal(e.clone())),
        _ => Err(ApiError::internal("unexpected result shape")),
    }
}

pub(crate) fn first_error(results: &[StmtResult]) -> Result<(), ApiError> {
    for r in results {
        if let StmtResult::Error(e) = r {
            return Err(ApiError::internal(e.clone()));
        }
    }
    Ok(())
}

pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}
