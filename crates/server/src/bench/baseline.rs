//! The baseline: the same workload against one local SQLite file, as
//! durable as the cluster's log.
//!
//! **Durability.** WAL mode with `synchronous=FULL`: every commit fsyncs
//! the WAL before it returns, as the cluster fsyncs its log before it
//! answers. Each request is one transaction, so one fsync per request — what
//! an application that commits per request gets from SQLite. (The cluster
//! may cover many requests with one fsync: that group commit is part of
//! what is being measured, not something to hand the baseline too.)
//!
//! **Path.** SQLite allows one writer at a time. Giving each client task its
//! own writing connection would make the tasks fight over the database lock
//! through `SQLITE_BUSY` and the busy handler's sleeps, which measures the
//! lock's back-off rather than SQLite. So writes go the way careful SQLite
//! applications send them: through a bounded queue to **one writer thread**
//! that owns the only writing connection and runs one job at a time —
//! the same shape as a replica's group thread. Reads take the other
//! well-trodden path: **one connection per client task**, on its own
//! thread, reading alongside the writer as WAL allows. Client tasks are the
//! same tokio tasks that drive the cluster; only the hop differs (a channel
//! here, HTTP there). No SQL ever runs on a tokio task.
//!
//! The statements are the workload's own, with the same bound parameters
//! and the same batching; a failing statement fails alone and the rest of
//! its request still commits, as in the cluster without `?transaction`.

use super::http::short;
use super::workload::{Arg, Op, Stmt};
use anyhow::Context;
use rusqlite::{Connection, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A batch for a connection thread, and where its answer goes.
#[derive(Debug)]
struct Job {
    stmts: Vec<Stmt>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// The database file and its writer thread.
#[derive(Debug)]
pub struct SqliteBaseline {
    path: PathBuf,
    writer: Option<SyncSender<Job>>,
    writer_thread: Option<JoinHandle<()>>,
}

impl SqliteBaseline {
    /// Creates (or opens) `path` in WAL mode with `synchronous=FULL` and
    /// starts the writer thread, whose queue holds one job per client task.
    /// With `metered`, the writer counts VM steps through SQLite's progress
    /// handler exactly as a replica's statement budget does.
    pub fn open(path: &Path, clients: usize, metered: bool) -> anyhow::Result<SqliteBaseline> {
        let mut conn =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        if metered {
            meter(&mut conn)?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        anyhow::ensure!(
            mode.eq_ignore_ascii_case("wal"),
            "{}: SQLite refused WAL mode (got {mode})",
            path.display()
        );
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (tx, rx) = sync_channel(clients + 1);
        let thread = std::thread::Builder::new()
            .name("baseline-writer".into())
            .spawn(move || serve(conn, rx, write))?;
        Ok(SqliteBaseline {
            path: path.to_owned(),
            writer: Some(tx),
            writer_thread: Some(thread),
        })
    }

    /// A client for one task; `reads` gives it its own reading connection.
    pub fn client(&self, reads: bool) -> anyhow::Result<SqliteClient> {
        let reader = if reads {
            let conn = Connection::open(&self.path)?;
            conn.pragma_update(None, "query_only", true)?;
            let (tx, rx) = sync_channel(1);
            let thread = std::thread::Builder::new()
                .name("baseline-reader".into())
                .spawn(move || serve(conn, rx, read))?;
            Some(Reader {
                tx: Some(tx),
                thread: Some(thread),
            })
        } else {
            None
        };
        Ok(SqliteClient {
            writer: self.writer.clone().expect("writer runs until drop"),
            reader,
        })
    }

    /// Runs `stmts` through the writer as one transaction (setup and load).
    pub async fn execute(&self, stmts: Vec<Stmt>) -> Result<(), String> {
        submit(self.writer.as_ref().expect("writer runs until drop"), stmts).await
    }
}

impl Drop for SqliteBaseline {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

/// One client task's way to the database.
#[derive(Debug)]
pub struct SqliteClient {
    writer: SyncSender<Job>,
    reader: Option<Reader>,
}

impl SqliteClient {
    /// Runs `op`: reads on this task's connection, writes through the writer.
    pub async fn run(&self, op: &Op) -> Result<(), String> {
        let queue = match (&self.reader, op.kind.is_read()) {
            (Some(r), true) => r.tx.as_ref().expect("reader runs until drop"),
            (None, true) => return Err("baseline: client has no reader".into()),
            (_, false) => &self.writer,
        };
        submit(queue, op.stmts.clone()).await
    }
}

#[derive(Debug)]
struct Reader {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands `stmts` to a connection thread and waits for its answer. The
/// queue has room for every client's one outstanding job, so `send` does
/// not block the async task.
async fn submit(queue: &SyncSender<Job>, stmts: Vec<Stmt>) -> Result<(), String> {
    let (reply, answer) = oneshot::channel();
    queue
        .send(Job { stmts, reply })
        .map_err(|_| "baseline: connection thread stopped".to_owned())?;
    answer
        .await
        .map_err(|_| "baseline: connection thread stopped".to_owned())?
}

/// What a replica's meter does every 1000 VM steps: count, compare with the
/// budget, and (never, here) stop the statement.
fn meter(conn: &mut Connection) -> rusqlite::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let checks = std::sync::Arc::new(AtomicU64::new(0));
    conn.progress_handler(
        1000,
        Some(move || {
            let n = checks.fetch_add(1, Ordering::Relaxed) + 1;
            n > u64::MAX / 2
        }),
    )
}

/// A connection thread: runs jobs until every sender is gone.
fn serve(
    mut conn: Connection,
    jobs: Receiver<Job>,
    run: fn(&mut Connection, &[Stmt]) -> Result<(), String>,
) {
    conn.set_prepared_statement_cache_capacity(64);
    for job in jobs {
        let result = run(&mut conn, &job.stmts);
        let _ = job.reply.send(result);
    }
}

/// One request = one transaction = one fsync. A failing statement fails
/// alone; the request reports the first failure.
fn write(conn: &mut Connection, stmts: &[Stmt]) -> Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("sqlite begin: {}", short(&e.to_string())))?;
    let mut first_error = None;
    for s in stmts {
        if let Err(e) = execute(&tx, s) {
            first_error.get_or_insert_with(|| format!("statement: {}", short(&e.to_string())));
        }
    }
    tx.commit()
        .map_err(|e| format!("sqlite commit: {}", short(&e.to_string())))?;
    first_error.map_or(Ok(()), Err)
}

fn execute(conn: &Connection, s: &Stmt) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(&s.sql)?;
    bind(&mut stmt, &s.args)?;
    stmt.raw_execute()
}

/// Each statement must find exactly one row, as over HTTP.
fn read(conn: &mut Connection, stmts: &[Stmt]) -> Result<(), String> {
    for s in stmts {
        let rows = query(conn, s).map_err(|e| format!("statement: {}", short(&e.to_string())))?;
        if rows != 1 {
            return Err(format!("read: {rows} rows for one key"));
        }
    }
    Ok(())
}

/// Reads every row and column (as the HTTP API does to encode them).
fn query(conn: &Connection, s: &Stmt) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(&s.sql)?;
    bind(&mut stmt, &s.args)?;
    let columns = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut n = 0;
    while let Some(row) = rows.next()? {
        for c in 0..columns {
            std::hint::black_box(row.get_ref(c)?);
        }
        n += 1;
    }
    Ok(n)
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, args: &[Arg]) -> rusqlite::Result<()> {
    for (i, a) in args.iter().enumerate() {
        match a {
            Arg::Int(v) => stmt.raw_bind_parameter(i + 1, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(i + 1, v.as_str())?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::{Distribution, OpKind, Workload, WorkloadKind, WorkloadSpec};

    #[test]
    fn the_baseline_loads_writes_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let w = Workload::new(WorkloadSpec {
            kind: WorkloadKind::YcsbA,
            table: "t".into(),
            keys: 100,
            row_size: 8,
            batch: 2,
            distribution: Distribution::Zipfian,
            theta: 0.99,
            seed: 5,
            ranges: 1,
        });
        let db = SqliteBaseline::open(&dir.path().join("b.sqlite"), 1, true).unwrap();
        rt.block_on(async {
            for r in w.setup_requests() {
                db.execute(r).await.unwrap();
            }
            let client = db.client(true).unwrap();
            let mut g = w.generator(0);
            let mut kinds = std::collections::BTreeSet::new();
            for _ in 0..50 {
                let op = g.next_op();
                kinds.insert(op.kind);
                client.run(&op).await.unwrap();
            }
            assert_eq!(kinds.len(), 2, "a YCSB-A mix reads and updates");
            let dup = Op {
                kind: OpKind::Insert,
                stmts: vec![Stmt {
                    sql: "INSERT INTO t (id, v) VALUES (?, ?)".into(),
                    args: vec![Arg::Int(1), Arg::Text("x".into())],
                }],
            };
            let e = client.run(&dup).await.unwrap_err();
            assert!(e.starts_with("statement: UNIQUE constraint failed"), "{e}");
        });
        drop(db);
        let conn = Connection::open(dir.path().join("b.sqlite")).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100);
        let sync: i64 = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .map(|m| i64::from(m == "wal"))
            .unwrap();
        assert_eq!(sync, 1);
    }
}
