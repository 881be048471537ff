//! paxsql's PostgreSQL wire protocol: psql, PostgreSQL drivers and pgbench
//! talk to any node. The framing is the `pgwire` crate's; this crate decides
//! what each statement means for a replicated SQLite database.
//!
//! SQL arriving here is run as **SQLite SQL** (the node's engine). `$1`,
//! `$2`, ... parameters are bound by number, so they may repeat and appear in
//! any order.
//!
//! # What is supported
//!
//! - **Simple query protocol**, several statements in one query. Consecutive
//!   writes in one query commit together as one log entry (one transaction);
//!   a read between them commits the writes before it. The first error stops
//!   the query, as in PostgreSQL.
//! - **Extended query protocol**: Parse/Bind/Describe/Execute/Close/Sync/Flush,
//!   named and unnamed statements and portals, `max_rows` (portal
//!   suspension), text and binary formats for parameters and results.
//!   `Describe` lists every parameter with a type and the result columns, and
//!   `Execute` encodes exactly those types (see [`describe`](crate) below).
//!   A Bind whose parameter count does not match is refused with `08P01`.
//! - **Types**: each result column is `int8`, `float8`, `bool`, `text` or
//!   `bytea`, chosen from SQLite's declared column type by SQLite's affinity
//!   rules, or for an expression from its shape (`count(*)` is `int8`,
//!   `max(x)` has `x`'s type, comparisons are `bool`, ...), else `text`.
//!   Parameters take the type of the column they are compared with,
//!   inserted into or assigned to (`CAST($1 AS INTEGER)` forces one);
//!   otherwise `text`. Clients may declare parameter types themselves (`int2`,
//!   `int4`, `int8`, `float4`, `float8`, `numeric` (text format), `bool`,
//!   `text`, `varchar`, `bytea`, `uuid`, `json`, `jsonb`; others as text).
//!   Unnamed expressions are named as PostgreSQL names them (`count`,
//!   `?column?`).
//! - **Command tags**: `INSERT 0 n`, `UPDATE n`, `DELETE n`, `SELECT n`,
//!   `CREATE TABLE`, `DROP INDEX`, `BEGIN`, `COMMIT`, `SET`, ...
//! - **Errors** as `ErrorResponse` with a SQLSTATE mapped from SQLite's
//!   message (see `errors`): `42601` syntax, `42P01` no such table, `23505`
//!   unique violation, ..., and `08006` when the cluster has no quorum or the
//!   request timed out (the write's outcome is unknown).
//! - **Writes** go through [`Db::write`] — the node's log, with the same
//!   routing, deduplication and determinism rules as HTTP writes.
//! - **Reads** run at the session's level: `SET paxsql.read_level =
//!   'local' | 'leader' | 'linearizable'` (rqlite's `none`/`weak`/`strong`
//!   too), or `-c paxsql.read_level=local` in the startup `options`
//!   (`PGOPTIONS`). The default is `linearizable`. `SHOW paxsql.read_level`.
//! - **Transactions**: `BEGIN` (`START TRANSACTION`) ... `COMMIT` (`END`)
//!   is serializable. Every statement inside, read or write, is answered at
//!   once from a run of the transaction so far at a linearizable point,
//!   rolled back afterwards: it sees the transaction's own writes, with real
//!   row counts and `RETURNING`. `COMMIT` applies the statements as **one**
//!   log entry only if each still gives the answer the client got, else
//!   `40001` and nothing is applied; a transaction that only read commits
//!   with no entry. An earlier answer that changed fails the next statement
//!   with `40001` at once. `ROLLBACK` (`ABORT`) discards everything. Any
//!   error aborts the transaction (`25P02` until `ROLLBACK`/`COMMIT`), as in
//!   PostgreSQL. Not on a sharded cluster yet.
//! - **Session parameters**: `SET`/`RESET`/`SHOW` of any parameter;
//!   `client_encoding` (UTF8 only), `standard_conforming_strings` (on only)
//!   and `extra_float_digits` are checked, `DateStyle`, `TimeZone`,
//!   `application_name`, ... are stored and reported back
//!   (`ParameterStatus`). `SET TRANSACTION ...` is accepted and ignored.
//! - **Catalog**: psql's `\dt`, `\d`, `\d table` (and their `+` forms) are
//!   answered from SQLite's schema; `SELECT version()`, `current_database()`,
//!   `current_schema()`, `current_user` work. See `catalog`.
//! - **Authentication**: trust (default), or one password for every user,
//!   cleartext or MD5 ([`Auth`]). No TLS: an SSL request is answered "no",
//!   so `sslmode=prefer` (the default) connects in clear text.
//! - **Bad input**: garbage bytes, an unsupported protocol version, an
//!   unknown message type, or a message whose fields do not fit its length
//!   get a `FATAL` `ErrorResponse` (`08P01`) and the connection is closed;
//!   every frame is checked before it is decoded (see `frames`), and every
//!   connection is its own task, so others keep working. Query, Parse, Bind
//!   and CopyData messages are limited to [`MESSAGE_BYTES_MAX`], the others
//!   to 10,000 bytes.
//!
//! # What is not supported
//!
//! `COPY`, `LISTEN`/`NOTIFY`, savepoints, two-phase commit, SQL-level
//! `PREPARE`/`EXECUTE`, cursors (`DECLARE`), cancel requests (accepted and
//! ignored), TLS, SCRAM, PostgreSQL-only syntax (`::` casts, `SERIAL`,
//! arrays, `ON CONFLICT ... DO UPDATE` works only in SQLite's form), types
//! other than the five above in results (dates are `text`), and catalog
//! queries other than those listed. Statements of one extended-protocol
//! batch (before `Sync`) are not an implicit transaction: each commits on
//! its own.

mod auth;
mod backend;
mod catalog;
mod describe;
mod errors;
mod frames;
mod session;
mod sqltext;
mod txn;
mod types;

pub use auth::Auth;
pub use frames::MESSAGE_BYTES_MAX;

use backend::{Core, Handler};
use futures::{SinkExt, StreamExt};
use paxsql_types::{ApplyEnv, ReadLevel, RequestError, Response, Statement};
use pgwire::api::{
    ClientInfo, DefaultClient, NoopHandler, PgWireConnectionState, PgWireServerHandlers,
};
use pgwire::messages::response::{GssEncResponse, SslResponse};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, SslNegotiationMetaMessage};
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// The database as this crate needs it: writes through the log, reads at a
/// level. Implemented for [`paxsql_node::NodeHandle`].
pub trait Db: Send + Sync + 'static {
    /// Runs statements through the log (all or nothing with `transaction`).
    fn write(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send;

    /// Runs read-only statements at a level, within `timeout` (the node's
    /// default when `None`).
    fn read(
        &self,
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send;

    /// Runs an interactive transaction's statements so far at a
    /// linearizable point and rolls them back (see `paxsql_sql::txn`).
    fn probe(
        &self,
        stmts: Vec<Statement>,
        env: ApplyEnv,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        let _ = (stmts, env, timeout);
        async { Err(no_transactions()) }
    }

    /// Commits an interactive transaction whose probes answered results
    /// with `digests`; [`RequestError::Conflict`] when any differs now.
    fn commit(
        &self,
        stmts: Vec<Statement>,
        digests: Vec<u64>,
        env: ApplyEnv,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        let _ = (stmts, digests, env);
        async { Err(no_transactions()) }
    }
}

fn no_transactions() -> RequestError {
    RequestError::BadRequest("interactive transactions are not supported here".into())
}

impl Db for paxsql_node::NodeHandle {
    fn write(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        paxsql_node::NodeHandle::write(self, stmts, transaction, None)
    }

    fn read(
        &self,
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        paxsql_node::NodeHandle::read(self, stmts, level, timeout)
    }
}

/// How the listener behaves.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// How clients authenticate.
    pub auth: Auth,
    /// Connections served at once; more are refused with `53300`.
    pub connections_max: usize,
    /// How long a client may take to finish startup and authentication.
    pub startup_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            auth: Auth::Trust,
            connections_max: 512,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// The `server_version` paxsql reports: PostgreSQL 15's protocol and the
/// psql 15 catalog queries are what it emulates.
pub const SERVER_VERSION: &str = "15.0";

/// The text of `SELECT version()`.
pub fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (paxsql {}, a replicated SQLite database; SQL is SQLite's)",
        env!("CARGO_PKG_VERSION")
    )
}

struct Handlers<D> {
    handler: Arc<Handler<D>>,
    startup: Arc<auth::Startup<D>>,
}

impl<D: Db> PgWireServerHandlers for Handlers<D> {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }
}

/// Serves the PostgreSQL protocol on `listener` until `shutdown` resolves.
pub async fn serve<D: Db>(
    listener: TcpListener,
    db: D,
    config: PgConfig,
    shutdown: impl Future<Output = ()>,
) {
    let server_params = vec![
        ("server_version".to_owned(), SERVER_VERSION.to_owned()),
        ("server_encoding".to_owned(), "UTF8".to_owned()),
        ("client_encoding".to_owned(), "UTF8".to_owned()),
        ("DateStyle".to_owned(), "ISO, MDY".to_owned()),
        ("IntervalStyle".to_owned(), "postgres".to_owned()),
        ("TimeZone".to_owned(), "UTC".to_owned()),
        ("integer_datetimes".to_owned(), "on".to_owned()),
        ("standard_conforming_strings".to_owned(), "on".to_owned()),
        ("is_superuser".to_owned(), "on".to_owned()),
        ("default_transaction_read_only".to_owned(), "off".to_owned()),
        ("in_hot_standby".to_owned(), "off".to_owned()),
    ];
    let core = Arc::new(Core::new(db, server_params));
    let handlers = Arc::new(Handlers {
        handler: Arc::new(Handler::new(Arc::clone(&core))),
        startup: Arc::new(auth::Startup::new(&config.auth, core)),
    });
    let open = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accepting a PostgreSQL connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handlers = Arc::clone(&handlers);
        let open = Arc::clone(&open);
        let config = config.clone();
        tokio::spawn(async move {
            if open.fetch_add(1, Ordering::AcqRel) >= config.connections_max {
                refuse(socket, config.connections_max).await;
            } else if let Err(e) = connection(socket, handlers, config.startup_timeout).await {
                tracing::debug!(%peer, error = %e, "PostgreSQL connection ended with an error");
            }
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn refuse(socket: TcpStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let mut e = errors::error("53300", format!("sorry, too many clients already ({max})"));
    e.severity = "FATAL".into();
    let mut buf = bytes::BytesMut::new();
    if PgWireBackendMessage::ErrorResponse((*e).into())
        .encode(&mut buf)
        .is_ok()
    {
        let mut socket = socket;
        let _ = socket.write_all(&buf).await;
    }
}

/// One connection: pgwire's message loop over a [`frames::Checked`] socket,
/// except that a message that cannot be decoded (garbage, an unknown
/// protocol version or message type, a malformed frame) gets a `FATAL`
/// error before the connection closes, instead of a silent close or a
/// panic. SSL and GSSAPI encryption requests are answered "no" here (pgwire's
/// `negotiate_tls` wants the bare `TcpStream`).
async fn connection<D: Db>(
    socket: TcpStream,
    handlers: Arc<Handlers<D>>,
    startup_timeout: Duration,
) -> std::io::Result<()> {
    let startup_deadline = tokio::time::Instant::now() + startup_timeout;
    socket.set_nodelay(true)?;
    let client = DefaultClient::new(socket.peer_addr()?, false);
    let mut socket = Framed::new(
        frames::Checked::new(socket),
        PgWireMessageServerCodec::new(client),
    );
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = Arc::new(NoopHandler);
    let cancel = Arc::new(NoopHandler);
    loop {
        let in_startup = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingSslRequest
                | PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if in_startup {
            match tokio::time::timeout_at(startup_deadline, socket.next()).await {
                Ok(m) => m,
                Err(_) => return Ok(()),
            }
        } else {
            socket.next().await
        };
        let msg = match next {
            None => return Ok(()),
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                let info = undecodable(&e, in_startup);
                socket
                    .send(PgWireBackendMessage::ErrorResponse((*info).into()))
                    .await?;
                drain(socket.get_mut().get_mut()).await;
                return Ok(());
            }
        };
        let msg = match msg {
            PgWireFrontendMessage::Terminate(_) => return Ok(()),
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_)) => {
                let refuse = PgWireBackendMessage::SslResponse(SslResponse::Refuse);
                socket.send(refuse).await?;
                continue;
            }
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(_)) => {
                let refuse = PgWireBackendMessage::GssEncResponse(GssEncResponse::Refuse);
                socket.send(refuse).await?;
                continue;
            }
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::None) => {
                // Not a request: the startup packet, read again in this state.
                socket.set_state(PgWireConnectionState::AwaitingStartup);
                continue;
            }
            msg => msg,
        };
        let is_cancel = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        let extended_msg = msg.is_extended_query();
        if let Err(e) = process_message(
            msg,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await
        {
            let fatal = e.is_fatal();
            process_error(&mut socket, e, extended_msg).await?;
            if fatal {
                return Ok(());
            }
        }
        if is_cancel {
            return Ok(());
        }
    }
}

/// Closes after a refusal without losing the error: closing a socket with
/// unread bytes makes the kernel reset the connection, and some clients'
/// systems then drop the error unread. So stop sending, then read and drop
/// what the client still sends, for a bounded time and amount.
async fn drain(socket: &mut TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DRAIN_BYTES_MAX: usize = 256 * 1024;
    const DRAIN_TIME: Duration = Duration::from_millis(500);
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let _ = socket.shutdown().await;
    let mut buf = [0u8; 8 * 1024];
    let mut drained = 0;
    while drained < DRAIN_BYTES_MAX {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Ok(Ok(n @ 1..)) => drained += n,
            _ => return,
        }
    }
}

/// The error for bytes that are not a PostgreSQL message.
fn undecodable(e: &pgwire::error::PgWireError, in_startup: bool) -> errors::Fail {
    let what = if in_startup {
        "invalid startup packet"
    } else {
        "invalid frontend message"
    };
    let mut info = match frames::FrameError::of(e) {
        Some(refused) => errors::error(refused.code, refused.to_string()),
        None => errors::error("08P01", format!("{what}: {e}")),
    };
    info.severity = "FATAL".into();
    info
}
