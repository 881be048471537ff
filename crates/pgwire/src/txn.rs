//! Explicit transactions (`BEGIN` … `COMMIT`) as a session sees them.
//!
//! Every statement inside the transaction, read or write, is answered from a
//! probe of all the transaction's statements so far (see
//! `paxsql_sql::txn`): it sees the transaction's own writes and a state at
//! one linearizable point. The session keeps each answer's digest; `COMMIT`
//! sends the statements through the log with those digests and applies
//! them only if every statement still gives the same answer, else it fails
//! with `40001` and nothing is applied. A transaction that only read commits
//! with no log entry: its last probe checked all its answers at one point.

use crate::backend::Described;
use crate::backend::{is_ddl, lock, result_outcome, Core, Outcome};
use crate::errors::{self, error, Fail};
use crate::session::{SessionCell, Tx, TX_STATEMENTS_MAX};
use crate::Db;
use paxsql_types::{ApplyEnv, Params, Statement, StmtResult};

/// An open transaction: its statements so far and their answers' digests.
#[derive(Debug)]
pub(crate) struct OpenTx {
    stmts: Vec<Statement>,
    digests: Vec<u64>,
    /// Clock and randomness for every probe and the commit.
    env: ApplyEnv,
    /// Whether any statement may have written.
    writes: bool,
}

impl OpenTx {
    pub fn new() -> OpenTx {
        OpenTx {
            stmts: Vec::new(),
            digests: Vec::new(),
            env: paxsql_node::fresh_env(),
            writes: false,
        }
    }
}

impl<D: Db> Core<D> {
    /// Runs a statement inside the session's open transaction.
    pub(crate) async fn run_in_transaction(
        &self,
        cell: &SessionCell,
        sql: &str,
        params: Params,
        write: bool,
        described: Option<&Described>,
    ) -> Result<Outcome, Fail> {
        let (mut stmts, env, timeout) = {
            let s = lock(cell);
            let Tx::Open(tx) = &s.tx else {
                return Err(error("XX000", "no transaction is open"));
            };
            (tx.stmts.clone(), tx.env, s.read_timeout)
        };
        if stmts.len() >= TX_STATEMENTS_MAX {
            return Err(error(
                "54000",
                format!(
                    "a transaction may hold at most {TX_STATEMENTS_MAX} statements; commit and \
                     start another"
                ),
            ));
        }
        let stmt = Statement {
            sql: sql.to_owned(),
            params,
        };
        stmts.push(stmt.clone());
        let resp = self
            .db
            .probe(stmts, env, timeout)
            .await
            .map_err(|e| errors::request(&e))?;
        let mut s = lock(cell);
        let Tx::Open(tx) = &mut s.tx else {
            return Err(error("XX000", "the transaction ended meanwhile"));
        };
        let n = tx.digests.len();
        // An earlier answer that changed since it was given can no longer
        // commit: fail now rather than at COMMIT.
        let changed = resp.results.len() <= n
            || tx
                .digests
                .iter()
                .zip(&resp.results)
                .any(|(d, r)| *d != r.digest());
        if changed {
            return Err(error(
                "40001",
                "could not serialize access due to a concurrent update: another transaction \
                 changed what this one read or wrote; run the whole transaction again",
            ));
        }
        let last = resp.results.into_iter().nth(n).expect("checked above");
        if !matches!(last, StmtResult::Error(_)) {
            tx.digests.push(last.digest());
            tx.stmts.push(stmt);
            tx.writes |= write;
        }
        drop(s);
        result_outcome(sql, last, described, !write)
    }

    /// `COMMIT`: the open transaction through the log, if it wrote.
    pub(crate) async fn commit(&self, cell: &SessionCell) -> Result<Outcome, Fail> {
        let tx = match std::mem::take(&mut lock(cell).tx) {
            Tx::Idle => return Ok(Outcome::End("COMMIT")),
            Tx::Failed => return Ok(Outcome::End("ROLLBACK")),
            Tx::Open(tx) => tx,
        };
        if !tx.writes {
            return Ok(Outcome::End("COMMIT"));
        }
        let ddl = tx.stmts.iter().any(|w| is_ddl(&w.sql));
        let result = self.db.commit(tx.stmts, tx.digests, tx.env).await;
        if ddl {
            self.forget_descriptions();
        }
        result.map_err(|e| errors::request(&e))?;
        Ok(Outcome::End("COMMIT"))
    }
}
