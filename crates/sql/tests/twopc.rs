//! Two-phase commit in the SQLite engine: a prepare votes by running its
//! statements and locks the group, the first decision wins, an outcome
//! applies or drops what was prepared, and a probe can see it committed.

use paxsql_sql::ranges::Directive;
use paxsql_sql::twopc::{self, Decision, Prepare};
use paxsql_sql::{Applied, SqlEngine, SqliteEngine, SqliteOptions};
use paxsql_types::{
    ApplyEnv, Entry, Proposal, RequestId, Statement, StmtResult, Value, WriteRequest,
};

const ENV: ApplyEnv = ApplyEnv {
    unix_ms: 1_700_000_000_000,
    seed: 7,
};

/// Applies one request as an entry of its own; its results.
fn apply(e: &mut SqliteEngine, id: &str, stmts: Vec<Statement>) -> Vec<StmtResult> {
    let entry = Entry {
        proposals: vec![Proposal::Write(WriteRequest {
            id: RequestId(id.into()),
            stmts,
            transaction: true,
            env: ENV,
        })],
    };
    let index = e.applied_index();
    match e.apply(index, &entry).unwrap().remove(0) {
        Applied::Write { results, .. } => results,
        other => panic!("{other:?}"),
    }
}

fn sql(s: &str) -> Statement {
    Statement::new(s)
}

fn prepare(txn: &str) -> Statement {
    Directive::Prepare(Prepare {
        txn: txn.into(),
        coordinator: 0,
    })
    .statement()
}

fn decision(txn: &str, commit: bool, seq: u64) -> Decision {
    Decision {
        txn: txn.into(),
        commit,
        seq,
    }
}

fn balances(e: &mut SqliteEngine) -> Vec<Vec<Value>> {
    match &e.query(&[sql("SELECT id, balance FROM a ORDER BY id")])[0] {
        StmtResult::Rows { values, .. } => values.clone(),
        r => panic!("{r:?}"),
    }
}

fn engine(dir: &tempfile::TempDir) -> SqliteEngine {
    let mut e = SqliteEngine::open(&dir.path().join("db"), SqliteOptions::default()).unwrap();
    apply(
        &mut e,
        "setup",
        vec![
            sql("CREATE TABLE a (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))"),
            sql("INSERT INTO a VALUES (1, 10), (2, 10)"),
        ],
    );
    e
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

#[test]
fn a_prepare_locks_the_group_until_its_outcome_commits_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir);
    let r = apply(
        &mut e,
        "p1",
        vec![
            prepare("t1"),
            sql("UPDATE a SET balance = balance - 3 WHERE id = 1"),
            sql("SELECT balance FROM a WHERE id = 1"),
        ],
    );
    assert!(
        !r.iter().any(|r| matches!(r, StmtResult::Error(_))),
        "{r:?}"
    );
    assert_eq!(
        r[2],
        StmtResult::Rows {
            columns: vec!["balance".into()],
            types: vec!["integer".into()],
            values: vec![vec![int(7)]],
        }
    );
    // The vote applied nothing, and the group holds t1.
    assert_eq!(
        balances(&mut e),
        vec![vec![int(1), int(10)], vec![int(2), int(10)]]
    );
    let held = e.query(&[twopc::held_sql()]);
    assert_eq!(twopc::held(&held[0]).map(|h| h.txn), Some("t1".into()));

    // Every other write is kept out, a second prepare too.
    let w = apply(
        &mut e,
        "w",
        vec![sql("UPDATE a SET balance = 0 WHERE id = 2")],
    );
    assert!(twopc::is_locked(&w), "{w:?}");
    let p2 = apply(&mut e, "p2", vec![prepare("t2"), sql("SELECT 1")]);
    assert!(twopc::is_locked(&p2), "{p2:?}");

    // A probe is not kept out, and can see t1 as committed.
    let probe = e
        .probe(
            &[
                Directive::WithPrepared.statement(),
                sql("SELECT balance FROM a WHERE id = 1"),
            ],
            ENV,
        )
        .unwrap();
    assert!(matches!(&probe[1], StmtResult::Rows { values, .. } if values == &vec![vec![int(7)]]));
    assert_eq!(balances(&mut e)[0], vec![int(1), int(10)]);

    // The first decision stands.
    let d = apply(
        &mut e,
        "d1",
        vec![Directive::Decide(decision("t1", true, 0)).statement()],
    );
    assert_eq!(twopc::decision("t1", &d[0]), Some(decision("t1", true, 1)));
    let again = apply(
        &mut e,
        "d2",
        vec![Directive::Decide(decision("t1", false, 0)).statement()],
    );
    assert_eq!(
        twopc::decision("t1", &again[0]),
        Some(decision("t1", true, 1))
    );

    // The outcome applies t1 once, and frees the group.
    let out = Directive::Outcome(decision("t1", true, 1)).statement();
    apply(&mut e, "o1", vec![out.clone()]);
    apply(&mut e, "o2", vec![out]);
    assert_eq!(balances(&mut e)[0], vec![int(1), int(7)]);
    assert!(twopc::held(&e.query(&[twopc::held_sql()])[0]).is_none());
    assert_eq!(
        twopc::integer(&e.query(&[twopc::applied_seq_sql()])[0]),
        Some(1)
    );
    let w = apply(
        &mut e,
        "w2",
        vec![sql("UPDATE a SET balance = 0 WHERE id = 2")],
    );
    assert!(!twopc::is_locked(&w), "{w:?}");
}

#[test]
fn an_aborted_or_failing_prepare_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir);
    // A constraint fails: the vote is NO and nothing is held.
    let r = apply(
        &mut e,
        "p1",
        vec![
            prepare("t1"),
            sql("UPDATE a SET balance = balance - 30 WHERE id = 1"),
        ],
    );
    assert!(
        matches!(&r[1], StmtResult::Error(m) if m.contains("CHECK")),
        "{r:?}"
    );
    assert!(twopc::held(&e.query(&[twopc::held_sql()])[0]).is_none());
    // A YES vote, then ABORT: dropped, and the group is free.
    apply(&mut e, "p2", vec![prepare("t2"), sql("DELETE FROM a")]);
    apply(
        &mut e,
        "o2",
        vec![Directive::Outcome(decision("t2", false, 4)).statement()],
    );
    assert_eq!(balances(&mut e).len(), 2);
    assert!(twopc::held(&e.query(&[twopc::held_sql()])[0]).is_none());
    assert_eq!(
        twopc::integer(&e.query(&[twopc::applied_seq_sql()])[0]),
        Some(0)
    );
}
