//! The SQLite engine's apply and read contract.

use paxsql_sql::{Applied, SqlEngine, SqliteEngine, SqliteOptions};
use paxsql_types::{
    ApplyEnv, BarrierId, Entry, LogIndex, NodeId, Params, Proposal, RequestId, Statement,
    StmtResult, Value, WriteRequest,
};

fn engine(dir: &tempfile::TempDir, name: &str) -> SqliteEngine {
    SqliteEngine::open(&dir.path().join(name), SqliteOptions::default()).unwrap()
}

fn write(id: &str, stmts: &[&str], transaction: bool) -> Proposal {
    Proposal::Write(WriteRequest {
        id: RequestId(id.into()),
        stmts: stmts.iter().map(|s| Statement::new(*s)).collect(),
        transaction,
        env: ApplyEnv {
            unix_ms: 1_700_000_000_123,
            seed: 42,
        },
    })
}

fn apply(e: &mut SqliteEngine, proposals: Vec<Proposal>) -> Vec<Applied> {
    let index = e.applied_index();
    e.apply(index, &Entry { proposals }).unwrap()
}

fn results(a: &Applied) -> &[StmtResult] {
    match a {
        Applied::Write { results, .. } => results,
        Applied::Barrier(_) => panic!("not a write"),
    }
}

fn rows(e: &mut SqliteEngine, sql: &str) -> Vec<Vec<Value>> {
    match &e.query(&[Statement::new(sql)])[0] {
        StmtResult::Rows { values, .. } => values.clone(),
        other => panic!("{sql}: {other:?}"),
    }
}

#[test]
fn applied_index_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    apply(
        &mut e,
        vec![write(
            "r1",
            &["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"],
            false,
        )],
    );
    apply(
        &mut e,
        vec![write("r2", &["INSERT INTO t (v) VALUES ('x')"], false)],
    );
    assert_eq!(e.applied_index(), LogIndex(2));
    drop(e);
    let mut e = engine(&dir, "a.db");
    assert_eq!(e.applied_index(), LogIndex(2));
    assert_eq!(
        rows(&mut e, "SELECT id, v FROM t"),
        vec![vec![Value::Integer(1), Value::Text("x".into())]]
    );
}

#[test]
fn a_repeated_request_id_is_applied_once_and_gets_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    apply(&mut e, vec![write("c", &["CREATE TABLE t (v)"], false)]);
    let first = apply(
        &mut e,
        vec![write("r", &["INSERT INTO t VALUES (1)"], false)],
    );
    let again = apply(
        &mut e,
        vec![write("r", &["INSERT INTO t VALUES (1)"], false)],
    );
    assert!(matches!(
        again[0],
        Applied::Write {
            duplicate: true,
            ..
        }
    ));
    assert_eq!(results(&first[0]), results(&again[0]));
    assert_eq!(
        rows(&mut e, "SELECT count(*) FROM t"),
        vec![vec![Value::Integer(1)]]
    );
    assert!(e.completed(&RequestId("r".into())).unwrap().is_some());
}

#[test]
fn a_transaction_is_all_or_nothing_and_plain_statements_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    apply(
        &mut e,
        vec![write("c", &["CREATE TABLE t (v INTEGER UNIQUE)"], false)],
    );
    let tx = apply(
        &mut e,
        vec![write(
            "tx",
            &[
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (3)",
            ],
            true,
        )],
    );
    let r = results(&tx[0]);
    assert_eq!(r.len(), 2, "a transaction stops at its first error: {r:?}");
    assert!(
        matches!(&r[1], StmtResult::Error(m) if m.contains("UNIQUE")),
        "{r:?}"
    );
    assert_eq!(
        rows(&mut e, "SELECT count(*) FROM t"),
        vec![vec![Value::Integer(0)]]
    );

    let plain = apply(
        &mut e,
        vec![write(
            "p",
            &[
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (3)",
            ],
            false,
        )],
    );
    assert_eq!(results(&plain[0]).len(), 3);
    assert_eq!(
        rows(&mut e, "SELECT v FROM t ORDER BY v"),
        vec![vec![Value::Integer(1)], vec![Value::Integer(3)]]
    );
}

#[test]
fn user_sql_cannot_touch_internal_tables_or_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    let out = apply(
        &mut e,
        vec![write(
            "bad",
            &[
                "DELETE FROM _paxsql_requests",
                "UPDATE _paxsql_meta SET value = 0",
                "BEGIN",
                "COMMIT",
                "ATTACH DATABASE 'x.db' AS x",
                "SELECT * FROM _paxsql_meta",
            ],
            false,
        )],
    );
    for r in results(&out[0]) {
        assert!(
            matches!(r, StmtResult::Error(m) if m.contains("not authorized") || m.contains("prohibited")),
            "{r:?}"
        );
    }
    assert_eq!(e.applied_index(), LogIndex(1));
}

#[test]
fn reads_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    apply(&mut e, vec![write("c", &["CREATE TABLE t (v)"], false)]);
    let r = e.query(&[Statement::new("INSERT INTO t VALUES (1)")]);
    assert!(matches!(&r[0], StmtResult::Error(_)), "{r:?}");
    assert_eq!(
        rows(&mut e, "SELECT count(*) FROM t"),
        vec![vec![Value::Integer(0)]]
    );
}

#[test]
fn clock_and_random_are_the_same_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = engine(&dir, "a.db");
    let mut b = engine(&dir, "b.db");
    let stmts = [
        "CREATE TABLE t (id INTEGER PRIMARY KEY, r INTEGER DEFAULT (random()), at TEXT DEFAULT CURRENT_TIMESTAMP, b BLOB DEFAULT (randomblob(8)))",
        "INSERT INTO t (id) VALUES (1)",
        "INSERT INTO t (id, r) VALUES (2, random())",
    ];
    for e in [&mut a, &mut b] {
        apply(e, vec![write("x", &stmts, false)]);
    }
    let ra = rows(&mut a, "SELECT * FROM t ORDER BY id");
    assert_eq!(ra, rows(&mut b, "SELECT * FROM t ORDER BY id"));
    assert_eq!(
        ra[0][2],
        Value::Text("2023-11-14 22:13:20".into()),
        "the entry's clock"
    );
    assert_ne!(ra[0][1], ra[1][1], "random() advances");
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[test]
fn state_hash_tells_content_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = engine(&dir, "a.db");
    let mut b = engine(&dir, "b.db");
    apply(
        &mut a,
        vec![write(
            "1",
            &["CREATE TABLE t (v)", "INSERT INTO t VALUES ('x')"],
            false,
        )],
    );
    apply(
        &mut b,
        vec![write(
            "1",
            &["CREATE TABLE t (v)", "INSERT INTO t VALUES ('y')"],
            false,
        )],
    );
    assert_ne!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[test]
fn parameters_bind_by_position_and_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    let mut p = write("1", &["CREATE TABLE t (a, b)"], false);
    if let Proposal::Write(w) = &mut p {
        w.stmts.push(Statement {
            sql: "INSERT INTO t VALUES (?, ?)".into(),
            params: Params::Positional(vec![Value::Integer(1), Value::Blob(vec![0, 255])]),
        });
        w.stmts.push(Statement {
            sql: "INSERT INTO t VALUES (:a, @b)".into(),
            params: Params::Named(vec![
                ("a".into(), Value::Real(2.5)),
                ("b".into(), Value::Null),
            ]),
        });
        w.stmts.push(Statement {
            sql: "INSERT INTO t VALUES (?, ?)".into(),
            params: Params::Positional(vec![Value::Integer(1)]),
        });
    }
    let out = apply(&mut e, vec![p]);
    let r = results(&out[0]);
    assert!(
        matches!(&r[3], StmtResult::Error(m) if m.contains("wrong number of parameters")),
        "{r:?}"
    );
    assert_eq!(
        rows(&mut e, "SELECT a, b FROM t ORDER BY a"),
        vec![
            vec![Value::Integer(1), Value::Blob(vec![0, 255])],
            vec![Value::Real(2.5), Value::Null]
        ]
    );
}

#[test]
fn barriers_pass_through_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    let b = BarrierId {
        node: NodeId(1),
        seq: 7,
        epoch: 9,
    };
    let out = apply(
        &mut e,
        vec![
            Proposal::Barrier(b),
            write("w", &["CREATE TABLE t (v)"], false),
        ],
    );
    assert_eq!(out[0], Applied::Barrier(b));
    assert_eq!(e.applied_index(), LogIndex(1));
}

#[test]
fn pragmas_that_change_the_connection_are_refused_and_reporting_ones_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(&dir, "a.db");
    let out = apply(
        &mut e,
        vec![write(
            "p",
            &[
                "CREATE TABLE t (v)",
                "PRAGMA foreign_keys=OFF",
                "PRAGMA table_info(t)",
            ],
            false,
        )],
    );
    let r = results(&out[0]);
    assert!(
        matches!(&r[1], StmtResult::Error(m) if m.contains("not authorized")),
        "{r:?}"
    );
    assert!(
        matches!(&r[2], StmtResult::Rows { values, .. } if values.len() == 1),
        "{r:?}"
    );
    let q = e.query(&[Statement::new("PRAGMA query_only=0")]);
    assert!(matches!(&q[0], StmtResult::Error(_)), "{q:?}");
}

#[test]
fn last_insert_id_does_not_depend_on_what_the_connection_did_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = engine(&dir, "a.db");
    apply(
        &mut a,
        vec![write(
            "1",
            &["CREATE TABLE t (v)", "INSERT INTO t VALUES (1)"],
            false,
        )],
    );
    let before = apply(&mut a, vec![write("2", &["CREATE TABLE u (v)"], false)]);
    drop(a);
    let mut a = engine(&dir, "a.db");
    let after = apply(&mut a, vec![write("3", &["CREATE TABLE w (v)"], false)]);
    assert_eq!(results(&before[0]), results(&after[0]));
}
