//! Interactive transactions over pg-wire: reads see the transaction's own
//! writes, conflicting transactions abort with 40001, aborted ones leave
//! nothing behind.

mod common;

use common::{connect, server};
use tokio_postgres::error::SqlState;

async fn balances(c: &tokio_postgres::Client) -> Vec<i64> {
    c.query("SELECT balance FROM acct ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn setup() -> (tokio_postgres::Client, tokio_postgres::Client) {
    let port = server().await;
    let a = connect(port).await;
    let b = connect(port).await;
    a.batch_execute(
        "CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         INSERT INTO acct VALUES (1, 100), (2, 100)",
    )
    .await
    .unwrap();
    (a, b)
}

#[tokio::test]
async fn a_transaction_reads_its_own_writes_and_commits_them() {
    let (a, b) = setup().await;
    a.batch_execute("BEGIN").await.unwrap();
    let n = a
        .execute("UPDATE acct SET balance = balance - 30 WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(n, 1, "the row count is known at once");
    let mine: i64 = a
        .query_one("SELECT balance FROM acct WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mine, 70, "the transaction sees its own write");
    assert_eq!(balances(&b).await, [100, 100], "nobody else does yet");
    a.execute(
        "UPDATE acct SET balance = balance + $1 WHERE id = 2",
        &[&30i64],
    )
    .await
    .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(balances(&b).await, [70, 130]);
}

#[tokio::test]
async fn write_skew_aborts_one_side() {
    let (a, b) = setup().await;
    // Each moves money out of one account if the two together keep 150.
    for c in [&a, &b] {
        c.batch_execute("BEGIN").await.unwrap();
        let sum: i64 = c
            .query_one("SELECT sum(balance) FROM acct", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sum, 200);
    }
    a.batch_execute("UPDATE acct SET balance = balance - 50 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("UPDATE acct SET balance = balance - 50 WHERE id = 2")
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    let e = b.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE), "{e}");
    assert_eq!(balances(&a).await, [50, 100], "the loser left no trace");
    // The session is usable again, and a retry commits.
    b.batch_execute("BEGIN; UPDATE acct SET balance = balance - 50 WHERE id = 2; COMMIT")
        .await
        .unwrap();
    assert_eq!(balances(&a).await, [50, 50]);
}

#[tokio::test]
async fn lost_update_is_prevented_and_noticed_early() {
    let (a, b) = setup().await;
    let mut read = Vec::new();
    for c in [&a, &b] {
        c.batch_execute("BEGIN").await.unwrap();
        let v: i64 = c
            .query_one("SELECT balance FROM acct WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        read.push(v);
    }
    a.execute(
        "UPDATE acct SET balance = $1 WHERE id = 1",
        &[&(read[0] + 1)],
    )
    .await
    .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    // b's read changed: its next statement already fails.
    let e = b
        .execute(
            "UPDATE acct SET balance = $1 WHERE id = 1",
            &[&(read[1] + 1)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::T_R_SERIALIZATION_FAILURE), "{e}");
    let e = b.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{e}");
    b.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(balances(&b).await, [101, 100]);
}

#[tokio::test]
async fn an_error_or_a_rollback_discards_everything() {
    let (a, b) = setup().await;
    a.batch_execute("BEGIN; DELETE FROM acct WHERE id = 1")
        .await
        .unwrap();
    let e = a
        .batch_execute("INSERT INTO acct VALUES (2, 0)")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    // COMMIT of a failed transaction rolls back, as in PostgreSQL.
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(balances(&b).await, [100, 100]);
    a.batch_execute("BEGIN; DELETE FROM acct; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(balances(&b).await, [100, 100]);
    // COMMIT without BEGIN is accepted with nothing to do.
    a.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn blind_writes_do_not_conflict() {
    let (a, b) = setup().await;
    for c in [&a, &b] {
        c.batch_execute("BEGIN").await.unwrap();
        c.execute("UPDATE acct SET balance = balance + 1 WHERE id = 1", &[])
            .await
            .unwrap();
    }
    a.batch_execute("COMMIT").await.unwrap();
    b.batch_execute("COMMIT").await.unwrap();
    assert_eq!(balances(&a).await, [102, 100]);
}
