//! Whole-database copies: `GET /db/backup` (a consistent SQLite file and the
//! log index it reflects) and `POST /db/load` (a SQLite file loaded through
//! the log on every replica).

use crate::db::Db;
use crate::error::ApiError;
use crate::flags::Flags;
use crate::handlers::{read_body, App};
use crate::kv::{first_error, json};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// `GET /db/backup?level=`: the database as a SQLite file; the log index it
/// reflects is in the `X-Paxsql-Index` header.
pub(crate) async fn backup<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let level = Flags::parse(&uri, &headers).read_level()?;
    let (bytes, index) = app.db.backup(level).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"paxsql-backup.sqlite\"".to_string(),
            ),
            (
                header::HeaderName::from_static("x-paxsql-index"),
                index.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `POST /db/load`: a SQLite file (the body) loaded through the log.
pub(crate) async fn load<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let opts = Flags::parse(&uri, &headers).write_options()?;
    let image = read_body(body, &headers, app.limits.body_bytes_max).await?;
    if !image.starts_with(b"SQLite format 3\0") {
        return Err(ApiError::bad_request(
            "the body is not a SQLite database file (send the file's bytes, e.g. curl --data-binary @backup.sqlite)",
        ));
    }
    let r = app.db.load(image.to_vec(), opts).await?;
    first_error(&r.results)?;
    let statements = r.results.len();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({"raft_index": r.index.0, "statements": statements}),
    ))
}
