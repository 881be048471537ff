//! paxsql's HTTP API, compatible with [rqlite's](https://rqlite.io/docs/api/api/)
//! so that rqlite's clients (the `rqlite` shell, Go `gorqlite`, Python
//! `pyrqlite` and `sqlalchemy-rqlite`, ...) work against paxsql unchanged.
//!
//! The crate turns HTTP requests into calls on a [`Db`], the narrow handle
//! a node offers, and the node's [`Response`](paxsql_types::Response)s back
//! into rqlite's JSON. It holds no state of its own and never talks to
//! other nodes: forwarding to the leader, timeouts on quorum and retries are
//! the node's business. [`router`] builds the [`axum::Router`]; [`serve`]
//! runs it on a listener until a shutdown signal.
//!
//! # Routes
//!
//! | route | calls | notes |
//! |---|---|---|
//! | `POST /db/execute` | [`Db::execute`] | writes; answer carries `raft_index` |
//! | `GET /db/query?q=SQL` | [`Db::query`] | one statement |
//! | `POST /db/query` | [`Db::query`] | statements in the body |
//! | `POST /db/request` | [`Db::request`] | mixed reads and writes; answer carries `raft_index` |
//! | `GET /status` | [`Db::status`] | the node's JSON as is |
//! | `GET /nodes` | [`Db::nodes`] | the node's JSON as is |
//! | `GET /readyz` | [`Db::ready`] | plain text, as rqlite answers |
//! | `GET /console` | — | the web console (HTML, with `/console/console.{js,css}`); see `console.rs` |
//!
//! # Request bodies
//!
//! A JSON array of statements, each one of:
//!
//! ```json
//! "INSERT INTO foo(name) VALUES('fiona')"
//! ["INSERT INTO foo(name, age) VALUES(?, ?)", "fiona", 20]
//! ["INSERT INTO foo(name, age) VALUES(:name, :age)", {"name": "fiona", "age": 20}]
//! ```
//!
//! `["SELECT 1"]` as an element (an array with the SQL alone) is a
//! statement without parameters. The forms may be mixed in one body. Parameter values are JSON scalars:
//! strings are text, integers are integers, other numbers are reals, `true`
//! and `false` are 1 and 0 (SQLite has no boolean), `null` is NULL, and an
//! array of byte values (`[0, 255, 16]`) is a BLOB, as rqlite takes them.
//! Anything else — an object body, a number where a statement should be,
//! `[]`, a named-parameter object that is not alone after the SQL, invalid
//! JSON or UTF-8 — is a `400` whose message names the statement and what is
//! wrong with it.
//!
//! # Responses
//!
//! ```json
//! {"results": [{"last_insert_id": 1, "rows_affected": 1}, {"error": "UNIQUE constraint failed: foo.id"}],
//!  "raft_index": 42}
//! {"results": [{"columns": ["id", "name"], "types": ["integer", "text"], "values": [[1, "fiona"]]}]}
//! ```
//!
//! A statement that fails has `{"error": "..."}` in its own slot and the
//! request is still a `200`, as in rqlite. A result with no rows has no
//! `values` key (rqlite leaves it out too). With `associative`, rows are
//! objects: `{"types": {"id": "integer"}, "rows": [{"id": 1}]}`, and a
//! result with no rows has `"rows": []`. BLOBs are base64 text unless
//! `blob_array` asks for arrays of bytes. `raft_index` is
//! [`Response::index`](paxsql_types::Response::index) and is present on
//! `/db/execute` and `/db/request`.
//!
//! # Query flags
//!
//! rqlite clients often send a flag bare (`?transaction`); a flag is on when
//! present, unless its value is `false`, `0`, `no` or `off`.
//!
//! | flag | meaning |
//! |---|---|
//! | `transaction` | all statements or none (writes) |
//! | `timings` | top-level `"time"`: seconds the request took in this node |
//! | `pretty` | indented JSON (four spaces, like rqlite) |
//! | `associative` | rows as objects |
//! | `blob_array` | BLOBs as arrays of bytes rather than base64 |
//! | `level=` | `local`, `leader`, `linearizable` (default), or rqlite's `none`, `weak`, `strong`; `auto` is taken as `weak` (every paxsql node votes) |
//! | `request_id=` | the write's id for retries; the `X-Request-Id` header does the same, and the query parameter wins if both are given |
//! | `q=` | the statement of `GET /db/query` |
//! | `noleader` | `/readyz` only checks that the node answers |
//!
//! Flags that only tune how rqlite itself serves a request — `redirect`,
//! `freshness`, `freshness_strict`, `timeout`, `db_timeout`, `wait`,
//! `nonvoters`, `ver`, `sync` — and unknown flags are ignored, as rqlite
//! ignores unknown ones. Requests are forwarded to the leader by the node,
//! so `redirect` is never needed.
//!
//! # Errors
//!
//! Every error is JSON, `{"error": "..."}`, except `/readyz` which is text:
//!
//! | cause | status |
//! |---|---|
//! | malformed body or statement, unknown level, bad request id, too many statements, `queue` | 400 |
//! | body over [`Limits::body_bytes_max`] | 413 |
//! | [`RequestError::Unavailable`](paxsql_types::RequestError::Unavailable) | 503 |
//! | [`RequestError::Overloaded`](paxsql_types::RequestError::Overloaded) | 503 with `Retry-After: 1` |
//! | [`Limits::request_timeout`] passed | 503 |
//! | unknown path | 404 |
//! | wrong method | 405 with `Allow` |
//!
//! # Where paxsql's answers differ from rqlite's
//!
//! Each difference is one a client written for rqlite already copes with:
//!
//! - An exec result always has both `last_insert_id` and `rows_affected`;
//!   rqlite leaves out whichever is zero (a `CREATE TABLE` answers `{}`).
//! - `raft_index` is always on `/db/execute` and `/db/request` answers.
//! - A REAL that happens to be whole is written `1.0` (Go writes `1`).
//! - `X-Request-Id` and `request_id=` are paxsql's: retrying a write with
//!   the same id applies it at most once.
//! - `/readyz` says why a node is not ready in one `[-]not ready: ...` line
//!   rather than rqlite's per-check lines.
//!
//! # Not supported
//!
//! - Queued writes (`queue`, with its `sequence_number` answer): a `400`
//!   says to drop the flag; every write is synchronous.
//! - Per-statement `"time"` with `timings` (the node does not measure it);
//!   only the top-level `"time"` is given.
//! - `transaction` on reads, `freshness` limits on `local` reads: accepted and
//!   ignored.
//! - rqlite's other endpoints: `/db/load`, `/db/backup`, `/boot`, `/remove`,
//!   `/leader`, `/debug/vars`, `/metrics` answer `404`.
//! - Basic authentication and TLS (put a proxy in front).

mod backup;
mod console;
mod db;
mod error;
mod flags;
mod handlers;
mod kv;
mod render;
mod statements;

pub use db::{Db, ReadOptions, WriteOptions};

use axum::{
    middleware::from_fn_with_state,
    routing::{get, post},
    Router,
};
use std::future::Future;
use std::time::Duration;

/// Bounds on what one HTTP request may ask of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request body accepted; a larger one is a `413`.
    pub body_bytes_max: usize,
    /// The most statements in one request; more is a `400`.
    pub statements_max: usize,
    /// How long a request may take in all, body upload included, before it
    /// is answered with a `503`. The node bounds its own waits too; this is
    /// the backstop that makes sure no request hangs.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 16 * 1024 * 1024,
            statements_max: 10_000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The HTTP API over `db`, as an [`axum::Router`] ready to serve.
pub fn router<D: Db>(db: D, limits: Limits) -> Router {
    let request_timeout = limits.request_timeout;
    let app = handlers::App { db, limits };
    let wrong_method = handlers::wrong_method;
    Router::new()
        .route(
            "/db/execute",
            post(handlers::execute::<D>).fallback(wrong_method("POST")),
        )
        .route(
            "/db/query",
            get(handlers::query_get::<D>)
                .post(handlers::query_post::<D>)
                .fallback(wrong_method("GET or POST")),
        )
        .route(
            "/db/request",
            post(handlers::request::<D>).fallback(wrong_method("POST")),
        )
        .route(
            "/status",
            get(handlers::status::<D>).fallback(wrong_method("GET")),
        )
        .route(
            "/nodes",
            get(handlers::nodes::<D>).fallback(wrong_method("GET")),
        )
        .route(
            "/shards",
            get(handlers::shards::<D>).fallback(wrong_method("GET")),
        )
        .route(
            "/readyz",
            get(handlers::readyz::<D>).fallback(wrong_method("GET")),
        )
        .route(
            "/db/backup",
            get(backup::backup::<D>).fallback(wrong_method("GET")),
        )
        .route(
            "/db/load",
            post(backup::load::<D>).fallback(wrong_method("POST")),
        )
        .route("/kv", get(kv::list::<D>).fallback(wrong_method("GET")))
        .route(
            "/kv/{*key}",
            get(kv::get_one::<D>)
                .put(kv::put::<D>)
                .delete(kv::delete::<D>)
                .fallback(wrong_method("GET, PUT or DELETE")),
        )
        .merge(console::routes())
        .fallback(handlers::not_found)
        .layer(from_fn_with_state(request_timeout, handlers::time_limit))
        .with_state(app)
}

/// Serves the HTTP API over `db` on `listener` until `shutdown` completes,
/// then lets requests in flight finish (each is bounded by
/// [`Limits::request_timeout`]) and returns.
pub async fn serve<D: Db>(
    listener: tokio::net::TcpListener,
    db: D,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(db, limits))
        .with_graceful_shutdown(shutdown)
        .await
}
