//! A read-only connection that serves reads on a thread of its own, beside
//! the group thread that applies the log: SQLite's WAL lets readers run
//! while the writer commits, each reader seeing the last commit before its
//! read transaction began.

use super::hooks::{install_authorizer, install_random, Meter, Work};
use super::statement::{Guarded, ResultBound};
use super::{open_connection, read_budget, storage};
use crate::settings::Setting;
use crate::{EngineError, ReadLimits, SqlReader};
use paxsql_types::{LogIndex, Statement, StmtResult};
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One reader connection of a SQLite replica.
pub struct SqliteReader {
    conn: Connection,
    guard: Arc<AtomicBool>,
    meter: Meter,
    bound: ResultBound,
}

impl std::fmt::Debug for SqliteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReader").finish_non_exhaustive()
    }
}

impl SqliteReader {
    /// Opens a reader on the database at `path`.
    pub(crate) fn open(path: &Path, limits: ReadLimits) -> Result<Self, EngineError> {
        let mut conn = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA query_only=1; PRAGMA foreign_keys=ON;")
            .map_err(storage)?;
        // No single value may outgrow the result bound: zeroblob(1e9) fails
        // at once instead of allocating a gigabyte first.
        let length_max = limits.bytes_max.clamp(1 << 10, i32::MAX as usize) as i32;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, length_max)
            .map_err(storage)?;
        let guard = Arc::new(AtomicBool::new(false));
        let meter = Meter::default();
        install_random(&conn, &Arc::new(AtomicU64::new(rand_seed())))
            .and_then(|()| install_authorizer(&mut conn, &guard))
            .and_then(|()| meter.install(&mut conn))
            .map_err(storage)?;
        Ok(SqliteReader {
            conn,
            guard,
            meter,
            bound: ResultBound {
                rows_max: limits.rows_max,
                bytes_max: limits.bytes_max,
            },
        })
    }
}

/// Reads need no determinism; any seed will do.
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl SqlReader for SqliteReader {
    fn query(
        &mut self,
        stmts: &[Statement],
        timeout: Duration,
    ) -> Result<(LogIndex, Vec<StmtResult>), EngineError> {
        let until = Instant::now() + timeout;
        // One read transaction: every statement sees the same commit, and
        // the applied index read first is the one they reflect.
        self.conn.execute_batch("BEGIN").map_err(storage)?;
        let outcome = (|| {
            let applied: i64 = self
                .conn
                .prepare_cached("SELECT value FROM _paxsql_meta WHERE key = 'applied_index'")
                .and_then(|mut s| s.query_row([], |r| r.get(0)))
                .map_err(storage)?;
            let guarded = Guarded {
                conn: &self.conn,
                guard: &self.guard,
                meter: &self.meter,
            };
            let mut results = Vec::with_capacity(stmts.len());
            for stmt in stmts {
                let result = match Setting::parse(&stmt.sql) {
                    Some(Setting::ShowStatementBudget) => {
                        crate::settings::budget_rows(read_budget(&self.conn)?, "integer")
                    }
                    Some(Setting::SetStatementBudget(_)) => {
                        StmtResult::Error(crate::settings::SET_IS_A_WRITE.into())
                    }
                    None => match guarded.run(stmt, Work::Until(until, timeout), self.bound) {
                        Ok((result, _)) => result,
                        Err(e) => StmtResult::Error(e),
                    },
                };
                results.push(result);
            }
            Ok((LogIndex(applied as u64), results))
        })();
        // A read transaction has nothing to keep: end it whatever happened.
        let _ = self.conn.execute_batch("COMMIT");
        outcome
    }
}
