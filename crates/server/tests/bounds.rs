//! Bounded work, end to end on real `paxsql node` processes: no statement
//! or read a client sends can stop the cluster.
//!
//! - A runaway write is stopped by the replicated statement budget on every
//!   replica alike, answered with the budget error, and the cluster goes on
//!   (also after a restart of every node, which replays the entry).
//! - Runaway reads at every level, on two nodes at once, run on reader
//!   threads under a time limit: writes keep working meanwhile.
//! - Huge results are refused with a clear error while the node's memory
//!   stays under a stated bound.

mod common;

use common::{wait_until, Cluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const RUNAWAY_UPDATE: &str = "UPDATE t SET a = (WITH RECURSIVE c(x) AS \
    (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c)";
const RUNAWAY_SELECT: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
const ALL: &str = "SELECT id, a FROM t ORDER BY id";

fn setup(c: &Cluster) {
    c.execute(
        1,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a INT)",
            "INSERT INTO t (a) VALUES (1), (2), (3)"
        ]),
    );
}

/// The first statement's error of a 200 answer, if any.
fn first_error(body: &Value) -> Option<String> {
    body["results"][0]
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A write at every node, each answered; returns the slowest answer.
fn write_everywhere(c: &Cluster, value: i64) -> Duration {
    let mut slowest = Duration::ZERO;
    for id in c.running() {
        let started = Instant::now();
        c.execute(id, json!([["INSERT INTO t (a) VALUES (?)", value]]));
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[test]
fn a_runaway_write_fails_on_every_replica_and_the_cluster_goes_on() {
    let mut c = Cluster::start(3);
    setup(&c);
    let before = c.rows(1, ALL, "linearizable");

    // On a loaded machine the budget may take longer than the request
    // timeout: a retry with the same request id gets the first answer.
    let started = Instant::now();
    let (code, body) = loop {
        let (code, body) = c
            .post(
                2,
                "/db/execute?request_id=runaway-1",
                &json!([RUNAWAY_UPDATE]).to_string(),
            )
            .unwrap();
        if code != 503 {
            break (code, body);
        }
    };
    let runaway_took = started.elapsed();
    assert_eq!(code, 200, "{body}");
    let error = first_error(&body).unwrap_or_else(|| panic!("no error in {body}"));
    assert!(
        error.starts_with("statement budget exceeded") && error.contains("STATEMENT_BUDGET"),
        "{error}"
    );
    // Nothing changed, and every replica agrees.
    c.wait_converged(ALL, &before);

    let slowest = write_everywhere(&c, 10);
    eprintln!("runaway answered in {runaway_took:?}; then the slowest write took {slowest:?}");
    let after = c.rows(1, ALL, "linearizable");
    assert_eq!(after.len(), before.len() + 3);
    c.wait_converged(ALL, &after);

    // A restart of every node replays the entry: it fails the same way and
    // the cluster serves.
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    c.wait_ready();
    c.wait_converged(ALL, &after);
    write_everywhere(&c, 20);
    let last = c.rows(3, ALL, "linearizable");
    assert_eq!(last.len(), after.len() + 3);
    c.wait_converged(ALL, &last);
}

#[test]
fn the_statement_budget_is_a_replicated_setting() {
    let c = Cluster::start(3);
    setup(&c);
    let show = |id: u64| c.rows(id, "SHOW PAXSQL STATEMENT_BUDGET", "linearizable")[0][0].clone();
    assert_eq!(show(1), json!(100_000_000));
    c.execute(2, json!(["SET PAXSQL STATEMENT_BUDGET = 20000"]));
    for id in 1..=3 {
        assert_eq!(show(id), json!(20_000));
        wait_until(Duration::from_secs(10), "status shows the budget", || {
            c.status(id).unwrap()["groups"][0]["statement_budget"] == json!(20_000)
        });
    }
    // A statement that fits a larger budget now fails ...
    let heavy = "UPDATE t SET a = (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                 SELECT x+1 FROM c LIMIT 100000) SELECT count(*) FROM c) WHERE id = 1";
    let (_, body) = c
        .post(1, "/db/execute", &json!([heavy]).to_string())
        .unwrap();
    assert!(
        first_error(&body).is_some_and(|e| e.starts_with("statement budget exceeded")),
        "{body}"
    );
    // ... and runs once the budget is raised.
    c.execute(3, json!(["SET PAXSQL STATEMENT_BUDGET = 100000000"]));
    c.execute(1, json!([heavy]));
    // Out-of-range values are refused before they reach the log.
    let (code, body) = c
        .post(
            1,
            "/db/execute",
            &json!(["SET PAXSQL STATEMENT_BUDGET = 5"]).to_string(),
        )
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("between"),
        "{body}"
    );
}

#[test]
fn runaway_reads_at_every_level_on_two_nodes_leave_writes_working() {
    let c = Cluster::start(3);
    setup(&c);
    runaway_reads_leave_writes_working(&c, 3, "3s");
}

/// Runaway `SELECT`s at every level, `per_node` of each on the leader and
/// on a follower at once, each with `timeout=`: meanwhile writes go through
/// at every node; each read ends with a read timeout (or, refused, a 503
/// that says to retry), never a hang; the replicas agree afterwards.
fn runaway_reads_leave_writes_working(c: &Cluster, per_node: usize, timeout: &str) {
    let leader = c.leader();
    let other = (1..=3).find(|&n| n != leader).unwrap();
    std::thread::scope(|s| {
        let mut readers = Vec::new();
        for level in ["local", "leader", "linearizable"] {
            for node in [leader, other] {
                for _ in 0..per_node {
                    readers.push(s.spawn(move || {
                        let body = json!([RUNAWAY_SELECT]).to_string();
                        let path = format!("/db/query?level={level}&timeout={timeout}");
                        (level, node, c.post(node, &path, &body))
                    }));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let slowest = write_everywhere(c, 7);
        eprintln!(
            "writes during {} runaway reads: slowest {slowest:?}",
            readers.len()
        );
        for r in readers {
            let (level, node, answer) = r.join().unwrap();
            let (code, body) = answer.unwrap_or_else(|e| panic!("{level} at {node}: {e}"));
            match code {
                200 => {
                    let e = first_error(&body).unwrap_or_else(|| panic!("{body}"));
                    assert!(e.starts_with("read timeout"), "{level} at {node}: {e}");
                }
                503 => {
                    let e = body["error"].as_str().unwrap_or_default();
                    assert!(
                        e.contains("busy") || e.contains("timeout") || e.contains("retry"),
                        "{level} at {node}: {body}"
                    );
                }
                other => panic!("{level} at {node}: {other} {body}"),
            }
        }
    });
    write_everywhere(c, 8);
    let all = c.rows(1, ALL, "linearizable");
    c.wait_converged(ALL, &all);
}

#[test]
fn reads_beyond_reads_max_are_refused_with_retry_after() {
    let c = Cluster::start_with(3, &["--reads-max", "2", "--readers", "1"]);
    setup(&c);
    let url = format!("http://{}/db/query?level=local&timeout=2s", c.node(1).http);
    let client = reqwest::blocking::Client::new();
    std::thread::scope(|s| {
        let asks: Vec<_> = (0..8)
            .map(|_| {
                let (client, url) = (&client, &url);
                s.spawn(move || {
                    client
                        .post(url.as_str())
                        .header("Content-Type", "application/json")
                        .body(json!([RUNAWAY_SELECT]).to_string())
                        .send()
                        .unwrap()
                })
            })
            .collect();
        let answers: Vec<(u16, Option<String>, String)> = asks
            .into_iter()
            .map(|a| {
                let r = a.join().unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (r.status().as_u16(), retry, r.text().unwrap())
            })
            .collect();
        // Two are admitted: one runs until its time limit, one waits for
        // the only reader and times out; the other six are refused at once.
        let (refused, admitted): (Vec<_>, Vec<_>) = answers
            .iter()
            .partition(|(_, _, body)| body.contains("--reads-max"));
        assert_eq!(refused.len(), 6, "{answers:?}");
        for (code, retry, body) in refused {
            assert_eq!((*code, retry.as_deref()), (503, Some("1")), "{body}");
        }
        for (_, _, body) in admitted {
            assert!(body.contains("read timeout"), "{body}");
        }
    });
    // Once the reads are done, reads are admitted again.
    assert_eq!(
        c.rows(1, "SELECT count(*) FROM t", "local"),
        vec![json!([3])]
    );
}

/// Peak resident memory of a node process, in bytes.
fn peak_rss(c: &Cluster, id: u64) -> u64 {
    let pid = c.pid(id);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// The bound the node's memory must stay under while it refuses huge
/// results: its readers (4) each hold at most one result of
/// `--result-bytes-max` (64 MiB) before refusing it, twice over for the
/// values' own overhead, plus 256 MiB for everything else.
const MEMORY_BOUND: u64 = 4 * 64 * 2 * (1 << 20) + (256 << 20);

#[test]
fn twenty_concurrent_hundred_megabyte_results_are_refused_within_a_memory_bound() {
    let c = Cluster::start(3);
    setup(&c);
    let queries = [
        // One value of 100 MB.
        "SELECT zeroblob(100000000)",
        // 100,000 rows of 1 kB.
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 100000) \
         SELECT x, zeroblob(1000) FROM c",
    ];
    for sql in queries {
        std::thread::scope(|s| {
            let asks: Vec<_> = (0..20)
                .map(|i| {
                    let c = &c;
                    s.spawn(move || {
                        let body = json!([sql]).to_string();
                        c.post(1 + i % 2, "/db/query?level=local&timeout=20s", &body)
                    })
                })
                .collect();
            for a in asks {
                let (code, body) = a.join().unwrap().unwrap();
                match code {
                    200 => {
                        let e = first_error(&body).unwrap_or_else(|| panic!("{body}"));
                        assert!(e.starts_with("result too large"), "{e}");
                    }
                    503 => assert!(body["error"].as_str().unwrap().contains("retry"), "{body}"),
                    other => panic!("{other} {body}"),
                }
            }
        });
    }
    for id in [1, 2] {
        let peak = peak_rss(&c, id);
        eprintln!("node {id}: peak RSS {} MiB", peak >> 20);
        assert!(
            peak < MEMORY_BOUND,
            "node {id} peaked at {} MiB, above {} MiB",
            peak >> 20,
            MEMORY_BOUND >> 20
        );
    }
    // The node still serves.
    write_everywhere(&c, 9);
}

// ---------------------------------------------------------------------------
// PostgreSQL counts no steps: the node that receives a write runs it first
// in a transaction that is rolled back, under the time the budget buys, and
// refuses it before the log if it runs past that (docs/architecture.md,
// "Runaway statements on PostgreSQL"). Reads run on reader connections.

fn setup_postgres(c: &Cluster) {
    c.execute(
        1,
        json!([
            "CREATE TABLE t (id SERIAL PRIMARY KEY, a INT)",
            "INSERT INTO t (a) VALUES (1), (2), (3)"
        ]),
    );
}

#[test]
fn a_runaway_write_on_postgres_is_refused_before_the_log_and_the_cluster_goes_on() {
    let c = Cluster::start_engine(3, common::Engine::Postgres);
    setup_postgres(&c);
    let before = c.rows(1, ALL, "linearizable");
    let index_before = c.status(1).unwrap()["groups"][0]["applied_index"].clone();

    let started = Instant::now();
    let (code, body) = c
        .post(2, "/db/execute", &json!([RUNAWAY_UPDATE]).to_string())
        .unwrap();
    let took = started.elapsed();
    assert_eq!(code, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("statement budget exceeded") && error.contains("STATEMENT_BUDGET"),
        "{error}"
    );
    // The default budget buys one second of dry run.
    assert!(took < Duration::from_secs(5), "{took:?}");
    eprintln!("runaway refused in {took:?}");
    // Nothing entered the log.
    assert_eq!(
        c.status(1).unwrap()["groups"][0]["applied_index"],
        index_before
    );
    c.wait_converged(ALL, &before);

    // Writes at every node work, and every replica numbers the rows the
    // same although each node's dry runs took numbers from the sequence.
    let slowest = write_everywhere(&c, 10);
    eprintln!("then the slowest write took {slowest:?}");
    let after = c.rows(1, ALL, "linearizable");
    assert_eq!(after.len(), before.len() + 3);
    c.wait_converged(ALL, &after);
    for id in 1..=3 {
        let status = c.status(id).unwrap();
        assert!(status["groups"][0]["failure"].is_null(), "{status}");
        assert_eq!(
            status["groups"][0]["statement_budget"],
            json!(100_000_000),
            "{status}"
        );
    }
}

#[test]
fn the_statement_budget_is_a_replicated_setting_on_postgres_too() {
    let c = Cluster::start_engine(3, common::Engine::Postgres);
    setup_postgres(&c);
    // 20,000 steps buy the shortest time budget, 10 ms.
    c.execute(2, json!(["SET PAXSQL STATEMENT_BUDGET = 20000"]));
    for id in 1..=3 {
        let show = c.rows(id, "SHOW PAXSQL STATEMENT_BUDGET", "linearizable");
        assert_eq!(show[0][0], json!(20_000));
    }
    // A statement of about a fifth of a second is refused ...
    let heavy = "UPDATE t SET a = (SELECT count(*)::int FROM generate_series(1, 2000000)) \
                 WHERE id = 1";
    let (code, body) = c
        .post(1, "/db/execute", &json!([heavy]).to_string())
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("statement budget exceeded")),
        "{body}"
    );
    // ... and runs once the budget buys ten seconds — at a node whose
    // replica applied the change (its dry runs read the budget there).
    c.execute(3, json!(["SET PAXSQL STATEMENT_BUDGET = 1000000000"]));
    let show = c.rows(1, "SHOW PAXSQL STATEMENT_BUDGET", "linearizable");
    assert_eq!(show[0][0], json!(1_000_000_000));
    c.execute(1, json!([heavy]));
    let all = c.rows(1, ALL, "linearizable");
    assert_eq!(all[0][1], json!(2_000_000));
    c.wait_converged(ALL, &all);
}

#[test]
fn runaway_reads_on_postgres_leave_writes_working() {
    let c = Cluster::start_engine(3, common::Engine::Postgres);
    setup_postgres(&c);
    runaway_reads_leave_writes_working(&c, 2, "2s");
    for id in 1..=3 {
        assert!(c.status(id).unwrap()["groups"][0]["failure"].is_null());
    }
}
