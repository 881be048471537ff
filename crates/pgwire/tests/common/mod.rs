//! The pg-wire server over one SQLite engine standing in for the cluster,
//! shared by the in-process protocol tests.
#![allow(dead_code)]

use paxsql_pgwire::{serve, Db, PgConfig};
use paxsql_sql::{txn, Applied, SqlEngine, SqliteEngine, SqliteOptions};
use paxsql_types::{
    ApplyEnv, Entry, Proposal, ReadLevel, RequestError, RequestId, Response, Statement,
    WriteRequest,
};
use std::future::Future;
use std::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// One SQLite engine: every write is applied at once as its own log entry.
pub struct OneEngine {
    engine: Mutex<(SqliteEngine, u64)>,
    _dir: tempfile::TempDir,
}

impl OneEngine {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            SqliteEngine::open(&dir.path().join("db.sqlite"), SqliteOptions::default()).unwrap();
        OneEngine {
            engine: Mutex::new((engine, 0)),
            _dir: dir,
        }
    }

    fn apply(&self, stmts: Vec<Statement>, transaction: bool) -> Result<Response, RequestError> {
        self.apply_with(
            stmts,
            transaction,
            ApplyEnv {
                unix_ms: 0,
                seed: 1,
            },
        )
    }

    fn apply_with(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
        env: ApplyEnv,
    ) -> Result<Response, RequestError> {
        let mut guard = self.engine.lock().unwrap();
        let (engine, n) = &mut *guard;
        *n += 1;
        let index = engine.applied_index();
        let entry = Entry {
            proposals: vec![Proposal::Write(WriteRequest {
                id: RequestId(format!("test-{n}")),
                stmts,
                transaction,
                env,
            })],
        };
        let applied = engine.apply(index, &entry).unwrap();
        match applied.into_iter().next() {
            Some(Applied::Write { results, .. }) => Ok(Response {
                results,
                index: engine.applied_index(),
            }),
            other => panic!("unexpected {other:?}"),
        }
    }
}

impl Db for OneEngine {
    fn write(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        let r = self.apply(stmts, transaction);
        async move { r }
    }

    fn read(
        &self,
        stmts: Vec<Statement>,
        _level: ReadLevel,
        _timeout: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        let mut guard = self.engine.lock().unwrap();
        let (engine, _) = &mut *guard;
        let r = Ok(Response {
            results: engine.query(&stmts),
            index: engine.applied_index(),
        });
        async move { r }
    }

    fn probe(
        &self,
        stmts: Vec<Statement>,
        env: ApplyEnv,
        _timeout: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        let mut guard = self.engine.lock().unwrap();
        let (engine, _) = &mut *guard;
        let r = engine
            .probe(&stmts, env)
            .map(|results| Response {
                results,
                index: engine.applied_index(),
            })
            .map_err(|e| RequestError::Unavailable(e.to_string()));
        async move { r }
    }

    fn commit(
        &self,
        stmts: Vec<Statement>,
        digests: Vec<u64>,
        env: ApplyEnv,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send {
        let all = txn::commit_request(stmts, digests);
        let r = self.apply_with(all, true, env).and_then(txn::commit_answer);
        async move { r }
    }
}

/// Starts a server on a free port; returns the port.
pub async fn server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(
        listener,
        OneEngine::new(),
        PgConfig::default(),
        std::future::pending(),
    ));
    port
}

/// A tokio-postgres client of the server on `port`.
pub async fn connect(port: u16) -> Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=tester"), NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    client
}
