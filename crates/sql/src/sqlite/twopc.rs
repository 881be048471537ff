//! Two-phase commit in the SQLite engine: the prepared transaction, the
//! coordinator's decisions and a participant's outcomes
//! ([`crate::twopc`]), all inside the entry's transaction.

use super::statement::ResultBound;
use super::{hooks::seed, storage, SqliteEngine, StmtAt};
use crate::twopc::{self, Decision, Prepare};
use crate::{vfs, EngineError};
use paxsql_types::{Statement, StmtResult, WriteRequest};
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeSet;

impl SqliteEngine {
    /// The transaction this group holds prepared, if any.
    pub(super) fn holder(&self) -> Result<Option<String>, EngineError> {
        self.write
            .prepare_cached("SELECT txn FROM _paxsql_prepared LIMIT 1")
            .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
            .map_err(storage)
    }

    /// Records a prepare whose statements all ran well: the group's YES
    /// vote.
    pub(super) fn record_prepared(
        &mut self,
        p: &Prepare,
        w: &WriteRequest,
    ) -> Result<(), EngineError> {
        let stmts = serde_json::to_string(&twopc::recorded(&w.stmts))
            .map_err(|e| EngineError::Inconsistent(format!("encoding a prepare: {e}")))?;
        self.write
            .prepare_cached(
                "INSERT INTO _paxsql_prepared (txn, coordinator, since_ms, env, stmts)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    p.txn,
                    p.coordinator,
                    w.env.unix_ms,
                    twopc::encode_env(&w.env),
                    stmts
                ])
            })
            .map_err(storage)?;
        Ok(())
    }

    /// Records a decision unless one was recorded first; answers the
    /// decision that stands.
    pub(super) fn decide(&mut self, d: &Decision) -> Result<StmtResult, EngineError> {
        let found: Option<(bool, i64)> = self
            .write
            .prepare_cached("SELECT committed, seq FROM _paxsql_decisions WHERE txn = ?1")
            .and_then(|mut s| {
                s.query_row([&d.txn], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(storage)?;
        let (commit, seq) = match found {
            Some((commit, seq)) => (commit, seq),
            None => {
                let seq: i64 = self
                    .write
                    .query_row(
                        "SELECT coalesce(max(seq), 0) + 1 FROM _paxsql_decisions",
                        [],
                        |r| r.get(0),
                    )
                    .map_err(storage)?;
                self.write
                    .prepare_cached(
                        "INSERT INTO _paxsql_decisions (txn, committed, seq) VALUES (?1, ?2, ?3)",
                    )
                    .and_then(|mut s| s.execute(params![d.txn, d.commit, seq]))
                    .map_err(storage)?;
                (d.commit, seq)
            }
        };
        Ok(twopc::decision_rows(&Decision {
            txn: d.txn.clone(),
            commit,
            seq: seq as u64,
        }))
    }

    /// The prepared transaction `txn`: its environment and statements.
    fn prepared(
        &self,
        txn: &str,
    ) -> Result<Option<(paxsql_types::ApplyEnv, Vec<Statement>)>, EngineError> {
        let row: Option<(String, String)> = self
            .write
            .prepare_cached("SELECT env, stmts FROM _paxsql_prepared WHERE txn = ?1")
            .and_then(|mut s| {
                s.query_row([txn], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(storage)?;
        let Some((env, stmts)) = row else {
            return Ok(None);
        };
        let bad = |what: &str| EngineError::Inconsistent(format!("prepared {txn}: bad {what}"));
        let env = twopc::decode_env(&env).ok_or_else(|| bad("environment"))?;
        let stmts = serde_json::from_str(&stmts).map_err(|_| bad("statements"))?;
        Ok(Some((env, stmts)))
    }

    /// Runs the recorded statements of a prepared transaction with its own
    /// environment. `None` when SQLite rolled the entry back.
    fn run_prepared(
        &mut self,
        at: usize,
        env: paxsql_types::ApplyEnv,
        stmts: &[Statement],
        bound: ResultBound,
        exhausted: &mut BTreeSet<StmtAt>,
    ) -> Result<Option<Vec<StmtResult>>, EngineError> {
        seed(&self.rng, env);
        let _clock = vfs::pin_clock(env.unix_ms);
        // SAFETY: the handle is this open connection's, used on its thread.
        unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(self.write.handle(), 0) };
        Ok(self
            .run_stmts(at, stmts, true, bound, exhausted)?
            .map(|(results, _)| results))
    }

    /// Applies a decision in a participant: the prepared statements run
    /// again (commit) or are dropped (abort), and the lock goes. A
    /// transaction the group does not hold is a no-op.
    pub(super) fn outcome(
        &mut self,
        at: usize,
        d: &Decision,
        bound: ResultBound,
        exhausted: &mut BTreeSet<StmtAt>,
    ) -> Result<Option<Vec<StmtResult>>, EngineError> {
        let mut results = vec![StmtResult::Exec {
            last_insert_id: 0,
            rows_affected: 0,
        }];
        let Some((env, stmts)) = self.prepared(&d.txn)? else {
            return Ok(Some(results));
        };
        self.write
            .prepare_cached("DELETE FROM _paxsql_prepared WHERE txn = ?1")
            .and_then(|mut s| s.execute([&d.txn]))
            .map_err(storage)?;
        if !d.commit {
            return Ok(Some(results));
        }
        let Some(ran) = self.run_prepared(at, env, &stmts, bound, exhausted)? else {
            return Ok(None);
        };
        results.extend(ran);
        // Only the last committed outcome is kept: reads ask for its
        // sequence number.
        self.write
            .execute_batch("DELETE FROM _paxsql_decisions")
            .map_err(storage)?;
        self.write
            .prepare_cached(
                "INSERT INTO _paxsql_decisions (txn, committed, seq) VALUES (?1, 1, ?2)",
            )
            .and_then(|mut s| s.execute(params![d.txn, d.seq as i64]))
            .map_err(storage)?;
        Ok(Some(results))
    }

    /// In a probe: runs the group's prepared transaction, as its commit
    /// would. Nothing to run is fine.
    pub(super) fn with_prepared(
        &mut self,
        at: usize,
        bound: ResultBound,
        exhausted: &mut BTreeSet<StmtAt>,
    ) -> Result<Option<StmtResult>, EngineError> {
        let Some(txn) = self.holder()? else {
            return Ok(Some(StmtResult::Exec {
                last_insert_id: 0,
                rows_affected: 0,
            }));
        };
        let Some((env, stmts)) = self.prepared(&txn)? else {
            return Err(EngineError::Inconsistent(format!(
                "prepared {txn} vanished"
            )));
        };
        let Some(ran) = self.run_prepared(at, env, &stmts, bound, exhausted)? else {
            return Ok(None);
        };
        Ok(Some(
            ran.into_iter()
                .find(|r| matches!(r, StmtResult::Error(_)))
                .unwrap_or(StmtResult::Exec {
                    last_insert_id: 0,
                    rows_affected: stmts.len() as u64,
                }),
        ))
    }
}
