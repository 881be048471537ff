//! The protocol in one process: the listener over a single SQLite engine
//! standing in for the cluster, driven by tokio-postgres. Fast checks of
//! what needs no replication (types, names, tags, errors, transactions);
//! `crates/server/tests/pgwire.rs` runs real nodes.

mod common;

use common::{connect, server};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

#[tokio::test]
async fn expression_columns_have_pg_names_and_static_types() {
    let port = server().await;
    let c = connect(port).await;
    c.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL, s TEXT, anything)")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO t (x, s, anything) VALUES (1.5, 'a', 'free'), (2, 'b', 7)")
        .await
        .unwrap();
    let stmt = c
        .prepare(
            "SELECT count(*), max(x), sum(id), id * 2, x > 1, s || '!', anything, \
             typeof(anything) AS kind, CAST(s AS BLOB) FROM t GROUP BY id ORDER BY id",
        )
        .await
        .unwrap();
    let cols: Vec<(&str, Type)> = stmt
        .columns()
        .iter()
        .map(|c| (c.name(), c.type_().clone()))
        .collect();
    assert_eq!(
        cols,
        [
            ("count", Type::INT8),
            ("max", Type::FLOAT8),
            ("sum", Type::INT8),
            ("?column?", Type::INT8),
            ("?column?", Type::BOOL),
            ("?column?", Type::TEXT),
            ("anything", Type::TEXT),
            ("kind", Type::TEXT),
            ("s", Type::BYTEA),
        ]
    );
    let rows = c.query(&stmt, &[]).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].get::<_, f64>("max"), 2.0);
    assert!(rows[1].get::<_, bool>(4));
    // A column without a declared type holds anything and is sent as text.
    assert_eq!(rows[1].get::<_, String>("anything"), "7");
    assert_eq!(rows[0].get::<_, Vec<u8>>(8), b"a");
}

#[tokio::test]
async fn a_statement_prepared_before_the_table_changed_is_refused() {
    let port = server().await;
    let c = connect(port).await;
    c.batch_execute("CREATE TABLE t (a INTEGER, b TEXT)")
        .await
        .unwrap();
    let stmt = c.prepare("SELECT * FROM t").await.unwrap();
    c.query(&stmt, &[]).await.unwrap();
    c.batch_execute("ALTER TABLE t ADD COLUMN c REAL")
        .await
        .unwrap();
    // SQLite's read connection learns of the new column when it next steps
    // a statement (until then a fresh `SELECT *` still reports two columns).
    c.query("SELECT count(*) FROM t", &[]).await.unwrap();
    let e = c.query(&stmt, &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    // Prepared again, it sees the new column.
    let stmt = c.prepare("SELECT * FROM t").await.unwrap();
    assert_eq!(stmt.columns().len(), 3);
}

#[tokio::test]
async fn binary_results_refuse_values_their_column_type_cannot_carry() {
    let port = server().await;
    let c = connect(port).await;
    c.batch_execute("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1), ('not a number')")
        .await
        .unwrap();
    // tokio-postgres asks for binary results: int8 cannot carry text.
    let e = c.query("SELECT n FROM t", &[]).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&SqlState::INVALID_BINARY_REPRESENTATION),
        "{e}"
    );
    // The simple protocol (text) sends the value as it is.
    let rows = c
        .simple_query("SELECT n FROM t ORDER BY rowid")
        .await
        .unwrap();
    let texts: Vec<Option<String>> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect();
    assert_eq!(texts, [Some("1".into()), Some("not a number".into())]);
}

#[tokio::test]
async fn sessions_keep_their_settings_and_transactions_apart() {
    let port = server().await;
    let a = connect(port).await;
    let b = connect(port).await;
    a.batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .unwrap();
    a.batch_execute("SET paxsql.read_level TO local")
        .await
        .unwrap();
    let level: String = b
        .query_one("SHOW paxsql.read_level", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(level, "linearizable");
    a.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    // Not visible to anyone until COMMIT.
    let n: i64 = b
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    a.batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    let n: i64 = b
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // An error aborts the transaction until ROLLBACK.
    a.batch_execute("BEGIN").await.unwrap();
    assert!(a.batch_execute("SELEC 1").await.is_err());
    let e = a
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{e}");
    a.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = a
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    // Savepoints and COPY are refused with a reason.
    let e = a.batch_execute("SAVEPOINT s").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
}
