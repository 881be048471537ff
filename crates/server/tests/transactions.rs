//! Interactive transactions over pg-wire on real node processes: a bank
//! whose total holds in every linearizable read while clients transfer
//! money, pgbench's built-in TPC-B-like script unchanged, and a client that
//! walks away mid-transaction.

mod common;

use common::pg::{connect, pg_tool};
use common::Cluster;
use rand::Rng;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;

const ACCOUNTS: i64 = 100;
const START: i64 = 100;

/// Whether an error is a serialization failure (the transaction is to be
/// run again).
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

/// One transfer in an interactive transaction: read both balances, check
/// the funds, write both. `Ok(false)` when it lost a conflict.
async fn transfer(
    client: &tokio_postgres::Client,
    from: i64,
    to: i64,
    amount: i64,
) -> Result<bool, tokio_postgres::Error> {
    let read = "SELECT balance FROM accounts WHERE id = $1";
    let write = "UPDATE accounts SET balance = $1 WHERE id = $2";
    let run = async {
        client.batch_execute("BEGIN").await?;
        let a: i64 = client.query_one(read, &[&from]).await?.get(0);
        let b: i64 = client.query_one(read, &[&to]).await?.get(0);
        if a >= amount {
            client.execute(write, &[&(a - amount), &from]).await?;
            client.execute(write, &[&(b + amount), &to]).await?;
        }
        client.batch_execute("COMMIT").await
    };
    match run.await {
        Ok(()) => Ok(true),
        Err(e) if is_conflict(&e) => {
            // An early failure leaves the transaction open and aborted.
            client.batch_execute("ROLLBACK").await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_transfers_keep_the_total_in_every_linearizable_read() {
    let c = Arc::new(
        tokio::task::spawn_blocking(|| Cluster::start(3))
            .await
            .unwrap(),
    );
    let setup = connect(&c, 1, "").await;
    setup
        .batch_execute(&format!(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             INSERT INTO accounts (id, balance)
               WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {ACCOUNTS})
               SELECT i, {START} FROM s;"
        ))
        .await
        .unwrap();
    let total = ACCOUNTS * START;

    let stop = Arc::new(AtomicBool::new(false));
    let (commits, conflicts, sums) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let client = connect(&c, 1 + i % 3, "").await;
        let (stop, commits, conflicts) = (stop.clone(), commits.clone(), conflicts.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (from, to, amount) = {
                    let mut rng = rand::rng();
                    let from = rng.random_range(1..=ACCOUNTS);
                    let to = (from + rng.random_range(1..ACCOUNTS) - 1) % ACCOUNTS + 1;
                    (from, to, rng.random_range(1..=30))
                };
                match transfer(&client, from, to, amount).await {
                    Ok(true) => commits.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => conflicts.fetch_add(1, Ordering::Relaxed),
                    Err(e) => panic!("transfer {from} -> {to}: {e:?}"),
                };
            }
        }));
    }
    for node in 1..=3u64 {
        let client = connect(&c, node, "").await;
        let (stop, sums) = (stop.clone(), sums.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let row = client
                    .query_one(
                        "SELECT sum(balance), count(*), min(balance) FROM accounts",
                        &[],
                    )
                    .await
                    .unwrap();
                let (sum, n, min): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                assert_eq!(
                    (sum, n),
                    (total, ACCOUNTS),
                    "a linearizable read on node {node} saw money made or lost"
                );
                assert!(min >= 0, "an account went below zero: {min}");
                sums.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (commits, conflicts, sums) = (
        commits.load(Ordering::Relaxed),
        conflicts.load(Ordering::Relaxed),
        sums.load(Ordering::Relaxed),
    );
    eprintln!("bank: {commits} transfers committed, {conflicts} conflicts, {sums} sum reads");
    assert!(commits > 0, "no transfer committed");
    assert!(sums > 0, "no sum was read");

    // Every replica ends with the same accounts, and the total.
    let c2 = c.clone();
    tokio::task::spawn_blocking(move || {
        let sql = "SELECT id, balance FROM accounts ORDER BY id";
        let want = c2.rows(1, sql, "linearizable");
        let sum: i64 = want.iter().map(|r| r[1].as_i64().unwrap()).sum();
        assert_eq!(sum, total);
        c2.wait_converged(sql, &want);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_transaction_leaves_no_trace() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .unwrap();
    let setup = connect(&c, 1, "").await;
    setup
        .batch_execute(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             INSERT INTO accounts VALUES (1, 100), (2, 100);",
        )
        .await
        .unwrap();
    {
        let leaver = connect(&c, 2, "").await;
        leaver
            .batch_execute("BEGIN; UPDATE accounts SET balance = 0 WHERE id = 1")
            .await
            .unwrap();
        let seen: i64 = leaver
            .query_one("SELECT balance FROM accounts WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(seen, 0, "the transaction reads its own write");
        // Dropped here: the connection closes with the transaction open.
    }
    // Nothing of it was applied, and nothing it touched is held: another
    // session writes the same row at once.
    let other = connect(&c, 3, "").await;
    other
        .batch_execute("BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    let rows = tokio::task::spawn_blocking(move || {
        c.rows(
            1,
            "SELECT id, balance FROM accounts ORDER BY id",
            "linearizable",
        )
    })
    .await
    .unwrap();
    assert_eq!(rows, vec![json!([1, 101]), json!([2, 100])]);
}

/// Runs pgbench against node `id`; returns its report.
fn pgbench(c: &Cluster, id: u64, args: &[&str]) -> String {
    let out = Command::new(pg_tool("pgbench"))
        .args(args)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.pg_port(id).to_string(),
            "-U",
            "tester",
        ])
        .arg("paxsql")
        .output()
        .expect("running pgbench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn pgbench_tpcb_like_runs_unchanged_and_keeps_its_invariant() {
    let c = Cluster::start(3);
    // pgbench -i's tables, in SQLite's DDL, at scale 1.
    let setup = json!([
        "CREATE TABLE pgbench_branches (bid INTEGER PRIMARY KEY, bbalance INTEGER, filler TEXT)",
        "CREATE TABLE pgbench_tellers (tid INTEGER PRIMARY KEY, bid INTEGER, tbalance INTEGER, filler TEXT)",
        "CREATE TABLE pgbench_accounts (aid INTEGER PRIMARY KEY, bid INTEGER, abalance INTEGER, filler TEXT)",
        "CREATE TABLE pgbench_history (tid INTEGER, bid INTEGER, aid INTEGER, delta INTEGER, mtime TIMESTAMP, filler TEXT)",
        "INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0)",
        "INSERT INTO pgbench_tellers (tid, bid, tbalance) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10) SELECT i, 1, 0 FROM s",
        "INSERT INTO pgbench_accounts (aid, bid, abalance) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100000) SELECT i, 1, 0 FROM s",
    ]);
    let body = c.execute(1, setup);
    assert!(
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("error").is_none()),
        "{body}"
    );
    let mut processed = 0;
    for (node, mode) in [(2, "simple"), (3, "prepared"), (1, "extended")] {
        let report = pgbench(
            &c,
            node,
            &[
                "-n",
                "-b",
                "tpcb-like",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                "3",
                "--max-tries",
                "10",
                "-M",
                mode,
            ],
        );
        eprintln!("pgbench -M {mode} on node {node}:\n{report}");
        processed += report
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert!(processed > 0, "pgbench processed no transaction");
    let sums = "SELECT (SELECT sum(abalance) FROM pgbench_accounts), \
                (SELECT sum(bbalance) FROM pgbench_branches), \
                (SELECT sum(tbalance) FROM pgbench_tellers), \
                (SELECT sum(delta) FROM pgbench_history), \
                (SELECT count(*) FROM pgbench_history)";
    let want = c.rows(1, sums, "linearizable");
    let row = want[0].as_array().unwrap();
    assert!(
        row[..4].iter().all(|v| v == &row[0]),
        "TPC-B's balances disagree: {row:?}"
    );
    assert_eq!(
        row[4],
        Value::from(processed),
        "one history row per committed transaction"
    );
    c.wait_converged(sums, &want);
}
