//! Connections of a replica's database beside the one that applies the
//! log: readers, which serve reads on threads of their own, and the same
//! connections running dry runs of writes before they enter the log
//! ([`super::admission`], [`super::dry_run`]).
//!
//! A read runs in one `REPEATABLE READ READ ONLY` transaction, so every
//! statement of it sees the same commit, and the applied index read first
//! is the one its results reflect. PostgreSQL's `statement_timeout` bounds
//! it: each statement gets the time the read has left. Rows come through a
//! portal in chunks, so a result over its bounds is refused after about one
//! chunk more than the bound, not after the whole result arrived.

use super::dry_run::{dry_run, DryRun, Pace};
use super::read_budget;
use super::session::{connect, runtime, sqlstate_of, storage};
use super::statement::{run_statement, Around, Fatal, How};
use crate::settings::{self, Setting};
use crate::{EngineError, ReadLimits, SqlReader};
use paxsql_types::{LogIndex, Statement, StmtResult};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, Config, IsolationLevel};

/// One reader connection of a PostgreSQL replica, with the runtime that
/// drives it on the caller's thread. A connection that broke is opened
/// again on the next call.
pub struct PostgresReader {
    rt: tokio::runtime::Runtime,
    config: Config,
    client: Option<Client>,
    limits: ReadLimits,
}

impl std::fmt::Debug for PostgresReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReader")
            .field("database", &self.config.get_dbname())
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl PostgresReader {
    /// A reader of the database `config` names, connected now.
    pub(super) fn open(config: Config, limits: ReadLimits) -> Result<Self, EngineError> {
        let mut reader = PostgresReader::lazy(config, limits)?;
        reader.connected()?;
        Ok(reader)
    }

    /// A reader that connects on its first call.
    pub(super) fn lazy(config: Config, limits: ReadLimits) -> Result<Self, EngineError> {
        Ok(PostgresReader {
            rt: runtime()?,
            config,
            client: None,
            limits,
        })
    }

    /// The connection, opened again if it broke.
    fn connected(&mut self) -> Result<(), EngineError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        if self.client.take().is_some() {
            tracing::warn!(database = ?self.config.get_dbname(), "a PostgreSQL reader's connection broke; reconnecting");
        }
        self.client = Some(self.rt.block_on(connect(&self.config))?);
        Ok(())
    }

    /// Dry runs of a group of writes, in one transaction that is always
    /// rolled back ([`super::dry_run`]); one answer per write.
    pub(super) fn dry_run(
        &mut self,
        writes: &[&[Statement]],
        gate_wait: Duration,
        pace: Pace,
    ) -> Result<Vec<DryRun>, EngineError> {
        self.connected()?;
        let client = self.client.as_ref().expect("connected above");
        let outcome = self
            .rt
            .block_on(dry_run(client, writes, gate_wait, pace))
            .map_err(Fatal::into_engine);
        if outcome.is_err() {
            self.client = None;
        }
        outcome
    }
}

impl SqlReader for PostgresReader {
    fn query(
        &mut self,
        stmts: &[Statement],
        timeout: Duration,
    ) -> Result<(LogIndex, Vec<StmtResult>), EngineError> {
        self.connected()?;
        let limits = self.limits;
        let client = self.client.as_mut().expect("connected above");
        let outcome = self.rt.block_on(read(client, stmts, timeout, limits));
        if outcome.is_err() {
            self.client = None;
        }
        outcome
    }
}

/// One read: its transaction, the applied index, the statements.
pub(super) async fn read(
    client: &mut Client,
    stmts: &[Statement],
    timeout: Duration,
    limits: ReadLimits,
) -> Result<(LogIndex, Vec<StmtResult>), EngineError> {
    let deadline = Instant::now() + timeout;
    let txn = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| storage("starting a read", &e))?;
    let applied: String = txn
        .query_typed_one(
            "SELECT value FROM paxsql_internal.meta WHERE key = 'applied_index'",
            &[],
        )
        .await
        .map_err(|e| storage("reading the applied index", &e))?
        .get(0);
    let applied = applied
        .parse::<u64>()
        .map_err(|e| EngineError::Inconsistent(format!("stored applied index {applied:?}: {e}")))?;
    let mut results = Vec::with_capacity(stmts.len());
    for (i, stmt) in stmts.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let result = match Setting::parse(&stmt.sql) {
            _ if left.is_zero() => StmtResult::Error(settings::read_timed_out(timeout)),
            Some(Setting::ShowStatementBudget) => {
                super::apply::budget_rows(read_budget(txn.client()).await?)
            }
            Some(Setting::SetStatementBudget(_)) => {
                StmtResult::Error(crate::settings::SET_IS_A_WRITE.into())
            }
            None => {
                let before = format!("SET LOCAL statement_timeout = {}", left.as_millis().max(1));
                // The read is rolled back whatever happens: only a
                // statement with others after it needs a savepoint.
                let around = Around {
                    before: &before,
                    savepoint: i + 1 < stmts.len(),
                    after: "",
                };
                let how = How::Read {
                    txn: &txn,
                    limits,
                    deadline,
                };
                let (r, _) = run_statement(txn.client(), stmt, &around, how)
                    .await
                    .map_err(Fatal::into_engine)?;
                match &r {
                    StmtResult::Error(t) if sqlstate_of(t) == Some("57014") => {
                        StmtResult::Error(settings::read_timed_out(timeout))
                    }
                    _ => r,
                }
            }
        };
        results.push(result);
    }
    txn.rollback()
        .await
        .map_err(|e| storage("ending a read", &e))?;
    Ok((LogIndex(applied), results))
}
