//! One small handler per route, and the middleware around them.
//!
//! Each `/db/*` handler does the same four steps: read the flags (checking
//! the ones it uses before touching the body), read the statements, call
//! the [`Db`], render rqlite's JSON.

use crate::db::Db;
use crate::error::ApiError;
use crate::flags::Flags;
use crate::render::{json_response, results_body, Extras};
use crate::statements;
use crate::Limits;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use paxsql_types::Response as DbResponse;
use std::time::{Duration, Instant};

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App<D> {
    pub(crate) db: D,
    pub(crate) limits: Limits,
}

/// `POST /db/execute`.
pub(crate) async fn execute<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&uri, &headers);
    let opts = flags.write_options()?;
    let stmts = read_statements(body, &headers, &app.limits).await?;
    let response = app.db.execute(stmts, opts).await?;
    Ok(render(&response, &flags, true, started))
}

/// `GET /db/query?q=SQL`.
pub(crate) async fn query_get<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&uri, &headers);
    let read = flags.read_options(app.limits.request_timeout)?;
    let sql = flags.q.as_deref().ok_or_else(|| {
        ApiError::bad_request(
            "missing query parameter q: GET /db/query?q=SELECT... (or POST the statements)",
        )
    })?;
    let stmt = statements::from_sql(sql).map_err(|e| ApiError::bad_request(format!("q: {e}")))?;
    let response = app.db.query(vec![stmt], read).await?;
    Ok(render(&response, &flags, false, started))
}

/// `POST /db/query`.
pub(crate) async fn query_post<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&uri, &headers);
    let read = flags.read_options(app.limits.request_timeout)?;
    let stmts = read_statements(body, &headers, &app.limits).await?;
    let response = app.db.query(stmts, read).await?;
    Ok(render(&response, &flags, false, started))
}

/// `POST /db/request`.
pub(crate) async fn request<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flags = Flags::parse(&uri, &headers);
    let read = flags.read_options(app.limits.request_timeout)?;
    let opts = flags.write_options()?;
    let stmts = read_statements(body, &headers, &app.limits).await?;
    let response = app.db.request(stmts, opts, read).await?;
    Ok(render(&response, &flags, true, started))
}

/// `GET /status`.
pub(crate) async fn status<D: Db>(State(app): State<App<D>>, uri: Uri) -> Response {
    let pretty = Flags::parse(&uri, &HeaderMap::new()).pretty;
    json_response(StatusCode::OK, &app.db.status().await, pretty)
}

/// `GET /nodes`.
pub(crate) async fn nodes<D: Db>(State(app): State<App<D>>, uri: Uri) -> Response {
    let pretty = Flags::parse(&uri, &HeaderMap::new()).pretty;
    json_response(StatusCode::OK, &app.db.nodes().await, pretty)
}

/// `GET /shards`: the groups, their leaders and every range.
pub(crate) async fn shards<D: Db>(
    State(app): State<App<D>>,
    uri: Uri,
) -> Result<Response, crate::error::ApiError> {
    let pretty = Flags::parse(&uri, &HeaderMap::new()).pretty;
    let shards = app.db.shards().await?;
    Ok(json_response(StatusCode::OK, &shards, pretty))
}

/// `GET /readyz`: plain text in rqlite's style. With `noleader`, only that
/// the node answers.
pub(crate) async fn readyz<D: Db>(State(app): State<App<D>>, uri: Uri) -> Response {
    if Flags::parse(&uri, &HeaderMap::new()).noleader {
        return text(StatusCode::OK, "[+]node ok\n".to_owned());
    }
    match app.db.ready().await {
        Ok(()) => text(
            StatusCode::OK,
            "[+]node ok\n[+]leader ok\n[+]store ok\n".to_owned(),
        ),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[+]node ok\n[-]not ready: {reason}\n"),
        ),
    }
}

/// Any path not routed.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(method.as_str(), uri.path())
}

/// Answers `503` when a request (body upload included) outlasts its time.
pub(crate) async fn time_limit(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, "HTTP request timed out");
            ApiError::timed_out(timeout).into_response()
        }
    }
}

/// The fallback of a route for methods it does not serve: a JSON `405`
/// naming `allowed` (axum adds the `Allow` header to it). Without it axum
/// answers an empty `405`, and rqlite's clients expect JSON errors.
pub(crate) fn wrong_method(
    allowed: &'static str,
) -> impl FnOnce() -> std::future::Ready<ApiError> + Clone + Send + Sync + 'static {
    move || std::future::ready(ApiError::method_not_allowed(allowed))
}

/// The body's statements, within the limits on size and count.
async fn read_statements(
    body: Body,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<Vec<paxsql_types::Statement>, ApiError> {
    let bytes = read_body(body, headers, limits.body_bytes_max).await?;
    statements::parse_body(&bytes, limits.statements_max).map_err(ApiError::bad_request)
}

/// The whole body, refused early when its declared length is too large and
/// cut off as soon as it grows too large otherwise.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    body_bytes_max: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > body_bytes_max as u64) {
        return Err(ApiError::body_too_large(body_bytes_max));
    }
    match Limited::new(body, body_bytes_max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::body_too_large(body_bytes_max))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// rqlite's shaped results as a `200`.
fn render(response: &DbResponse, flags: &Flags, raft_index: bool, started: Instant) -> Response {
    let extras = Extras {
        raft_index,
        elapsed: flags.timings.then(|| started.elapsed()),
    };
    let body = results_body(response, flags.shape(), extras);
    json_response(StatusCode::OK, &body, flags.pretty)
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
