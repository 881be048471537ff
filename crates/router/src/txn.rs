//! Interactive transactions: probes and commits (see `paxsql_sql::txn`).
//!
//! A transaction on an unsharded cluster runs on group 0. On a sharded
//! cluster it is refused for now: its statements would have to stay inside
//! one range's group (a claim per probe) or commit by two-phase commit.

use crate::{refuse_directives, Router};
use paxsql_sql::txn;
use paxsql_types::{ApplyEnv, GroupId, RequestError, Response, Statement};
use std::time::Duration;

impl Router {
    /// Runs a transaction's statements so far at a linearizable point and
    /// rolls them back: one result per statement, stopping at the first
    /// that fails, as if the transaction were applied now with `env`.
    pub async fn probe(
        &self,
        stmts: Vec<Statement>,
        env: ApplyEnv,
        timeout: Option<Duration>,
    ) -> Result<Response, RequestError> {
        refuse_directives(&stmts)?;
        self.unsharded_transactions()?;
        self.inner
            .node
            .probe_on(GroupId(0), stmts, env, timeout)
            .await
    }

    /// Commits a transaction whose probes answered results with `digests`
    /// (one per statement, in order): applied through the log only if every
    /// statement gives the same result at the commit's place, else
    /// [`RequestError::Conflict`] and nothing applied. The results are the
    /// statements' own.
    pub async fn commit(
        &self,
        stmts: Vec<Statement>,
        digests: Vec<u64>,
        env: ApplyEnv,
    ) -> Result<Response, RequestError> {
        refuse_directives(&stmts)?;
        self.unsharded_transactions()?;
        let all = txn::commit_request(stmts, digests);
        let resp = self
            .inner
            .node
            .commit_on(GroupId(0), all, None, env)
            .await?;
        txn::commit_answer(resp)
    }

    fn unsharded_transactions(&self) -> Result<(), RequestError> {
        match self.is_sharded() {
            false => Ok(()),
            true => Err(RequestError::BadRequest(
                "interactive transactions are not supported on a sharded cluster yet (--groups \
                 above 1): send the transaction's statements in one request \
                 (/db/execute?transaction) instead"
                    .into(),
            )),
        }
    }
}
