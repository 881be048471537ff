//! Two-phase commit across groups, as the engines see it.
//!
//! A transaction that writes in several data groups commits in three kinds
//! of log entries, each a request led by one directive:
//!
//! 1. **Prepare**, in every participant group: `[CLAIM, PREPARE, EXPECT?,
//!    statements...]`. At apply the statements run (constraints checked, an
//!    expect directive compared) and are rolled back; if all went well the
//!    group records them in [`PREPARED_TABLE`] — its YES vote, a promise —
//!    and answers their results. A group holds at most one prepared
//!    transaction: while it does, every other write entry of the group
//!    (plain writes, commits, other prepares, range changes) fails at once
//!    with [`LOCKED`] (no-wait; the router retries plain writes, a
//!    transaction gets a serialization failure). So nothing the prepared
//!    statements read or write can change before their outcome, and
//!    running them again then gives the same results. The apply loop never
//!    waits.
//! 2. **Decide**, in the coordinator group (group 0): `[DECIDE]`. The first
//!    decision applied for a transaction wins and is recorded in
//!    [`DECISIONS_TABLE`] with the next sequence number; a later one
//!    answers the recorded decision. A driver decides COMMIT when every
//!    participant voted YES; anyone who finds a prepared transaction past
//!    its deadline decides ABORT (which loses if COMMIT was first).
//! 3. **Outcome**, in every participant: `[OUTCOME]` with the decision. On
//!    COMMIT the recorded statements run again with the prepare's
//!    environment; on ABORT they are dropped. Either way the lock goes.
//!    An outcome for a transaction the group does not hold is a no-op, so
//!    outcomes may be sent by several parties, in any number.
//!
//! Participants also keep the sequence number of the last committed
//! decision they applied (in [`DECISIONS_TABLE`]): decisions on one group
//! are applied in sequence order, since a group prepares its next
//! transaction only after the previous one's outcome. A read across groups
//! uses that to see every cross-group transaction whole (see the router).

use crate::ranges::Directive;
use paxsql_types::{ApplyEnv, Params, Statement, StmtResult, Value};
use serde::{Deserialize, Serialize};

/// The prepared transaction of a participant group (at most one row).
pub const PREPARED_TABLE: &str = "_paxsql_prepared";

/// Decisions: in the coordinator, one row per transaction; in a
/// participant, the last committed outcome applied.
pub const DECISIONS_TABLE: &str = "_paxsql_decisions";

/// How the error of a write refused by a group's lock begins.
pub const LOCKED: &str = "locked";

/// The coordinator group: decisions are entries of its log.
pub const COORDINATOR: u32 = 0;

/// Creates the tables (run by the engine at open).
pub(crate) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS _paxsql_prepared (
        txn TEXT PRIMARY KEY,
        coordinator INTEGER NOT NULL,
        since_ms INTEGER NOT NULL,
        env TEXT NOT NULL,
        stmts TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS _paxsql_decisions (
        txn TEXT PRIMARY KEY,
        committed INTEGER NOT NULL,
        seq INTEGER NOT NULL
    );
";

/// What a [`Directive::Prepare`] names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The transaction, unique in the cluster.
    pub txn: String,
    /// The group its decision is logged in.
    pub coordinator: u32,
}

/// A decision: what [`Directive::Decide`] asks for and what
/// [`Directive::Outcome`] carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub txn: String,
    pub commit: bool,
    /// The decision's sequence number in the coordinator (0 when asking).
    #[serde(default)]
    pub seq: u64,
}

/// A transaction a participant holds prepared, as a read finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub txn: String,
    pub coordinator: u32,
    /// When it was prepared (the proposer's clock, ms since the epoch).
    pub since_ms: i64,
}

/// The kind of a write request, by its directives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No two-phase commit directive: subject to the lock.
    Plain,
    /// A prepare (after an optional claim).
    Prepare(Prepare),
    /// A decision, alone.
    Decide(Decision),
    /// An outcome, alone.
    Outcome(Decision),
}

pub(crate) fn kind(stmts: &[Statement]) -> Kind {
    for s in stmts.iter().take(2) {
        match Directive::parse(&s.sql) {
            Some(Ok(Directive::Prepare(p))) => return Kind::Prepare(p),
            Some(Ok(Directive::Decide(d))) if stmts.len() == 1 => return Kind::Decide(d),
            Some(Ok(Directive::Outcome(d))) if stmts.len() == 1 => return Kind::Outcome(d),
            Some(Ok(Directive::Claim(_))) => continue,
            _ => break,
        }
    }
    Kind::Plain
}

/// The statements a prepare records: the request's own, without its
/// directives.
pub(crate) fn recorded(stmts: &[Statement]) -> Vec<Statement> {
    stmts
        .iter()
        .filter(|s| !Directive::is_directive(&s.sql))
        .cloned()
        .collect()
}

/// The error of a write a prepared transaction keeps out.
pub(crate) fn locked(holder: &str) -> String {
    format!(
        "{LOCKED}: this group holds prepared transaction {holder} until its outcome; nothing of \
         this request was applied, send it again"
    )
}

/// Whether a request's first result says the group was locked.
pub fn is_locked(results: &[StmtResult]) -> bool {
    matches!(results.first(), Some(StmtResult::Error(m)) if m.starts_with(LOCKED))
}

/// Reads the transaction a group holds prepared, if any: the first
/// statement of a read that must know it.
pub fn held_sql() -> Statement {
    Statement::new(format!(
        "SELECT txn, coordinator, since_ms FROM {PREPARED_TABLE} LIMIT 1"
    ))
}

/// The holder from the result of [`held_sql`].
pub fn held(result: &StmtResult) -> Option<Held> {
    let StmtResult::Rows { values, .. } = result else {
        return None;
    };
    match values.first()?.as_slice() {
        [Value::Text(txn), Value::Integer(c), Value::Integer(since)] => Some(Held {
            txn: txn.clone(),
            coordinator: *c as u32,
            since_ms: *since,
        }),
        _ => None,
    }
}

/// Reads the sequence number of the last committed decision a participant
/// applied (0 if none).
pub fn applied_seq_sql() -> Statement {
    Statement::new(format!(
        "SELECT coalesce(max(seq), 0) FROM {DECISIONS_TABLE} WHERE committed"
    ))
}

/// Reads the decision for a transaction in the coordinator.
pub fn decision_sql(txn: &str) -> Statement {
    Statement {
        sql: format!("SELECT committed, seq FROM {DECISIONS_TABLE} WHERE txn = ?"),
        params: Params::Positional(vec![Value::Text(txn.to_owned())]),
    }
}

/// Reads the highest decision sequence number in the coordinator.
pub fn last_seq_sql() -> Statement {
    Statement::new(format!(
        "SELECT coalesce(max(seq), 0) FROM {DECISIONS_TABLE}"
    ))
}

/// A single integer answer (of [`applied_seq_sql`] or [`last_seq_sql`]).
pub fn integer(result: &StmtResult) -> Option<u64> {
    match result {
        StmtResult::Rows { values, .. } => match values.first()?.first()? {
            Value::Integer(i) => Some(*i as u64),
            _ => None,
        },
        _ => None,
    }
}

/// The decision from the result of [`decision_sql`] or of a decide
/// request; `None` if nothing was decided.
pub fn decision(txn: &str, result: &StmtResult) -> Option<Decision> {
    let StmtResult::Rows { values, .. } = result else {
        return None;
    };
    match values.first()?.as_slice() {
        [Value::Integer(c), Value::Integer(seq)] => Some(Decision {
            txn: txn.to_owned(),
            commit: *c != 0,
            seq: *seq as u64,
        }),
        _ => None,
    }
}

/// The rows answer of a decide request.
pub(crate) fn decision_rows(d: &Decision) -> StmtResult {
    StmtResult::Rows {
        columns: vec!["committed".into(), "seq".into()],
        types: vec!["integer".into(), "integer".into()],
        values: vec![vec![
            Value::Integer(i64::from(d.commit)),
            Value::Integer(d.seq as i64),
        ]],
    }
}

/// A prepared row's environment, encoded.
pub(crate) fn encode_env(env: &ApplyEnv) -> String {
    format!("{} {}", env.unix_ms, env.seed)
}

pub(crate) fn decode_env(s: &str) -> Option<ApplyEnv> {
    let (ms, seed) = s.split_once(' ')?;
    Some(ApplyEnv {
        unix_ms: ms.parse().ok()?,
        seed: seed.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_by_their_directives() {
        let claim = Directive::Claim(vec![(1, 1)]).statement();
        let prepare = Directive::Prepare(Prepare {
            txn: "t".into(),
            coordinator: 0,
        })
        .statement();
        let d = Decision {
            txn: "t".into(),
            commit: true,
            seq: 3,
        };
        let user = Statement::new("UPDATE t SET v = 1");
        assert_eq!(
            kind(&[claim.clone(), prepare.clone(), user.clone()]),
            Kind::Prepare(Prepare {
                txn: "t".into(),
                coordinator: 0
            })
        );
        assert_eq!(kind(&[claim.clone(), user.clone()]), Kind::Plain);
        assert_eq!(
            kind(&[Directive::Outcome(d.clone()).statement()]),
            Kind::Outcome(d.clone())
        );
        assert_eq!(
            kind(&[Directive::Decide(d.clone()).statement()]),
            Kind::Decide(d.clone())
        );
        // An outcome with more statements is not one.
        assert_eq!(
            kind(&[Directive::Outcome(d).statement(), user.clone()]),
            Kind::Plain
        );
        assert_eq!(recorded(&[claim, prepare, user.clone()]), vec![user]);
        let env = ApplyEnv {
            unix_ms: -5,
            seed: u64::MAX,
        };
        assert_eq!(decode_env(&encode_env(&env)), Some(env));
    }
}
