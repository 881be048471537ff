//! The replicated SQL core end to end: real `paxsql node` processes, real
//! TCP, real SQLite files, driven over the HTTP API.

mod common;

use common::{wait_until, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

fn create_table(c: &Cluster, at: u64) {
    c.execute(
        at,
        json!(["CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"]),
    );
}

fn follower_of(c: &Cluster) -> u64 {
    let leader = c.leader();
    c.running().into_iter().find(|&n| n != leader).unwrap()
}

const ALL: &str = "SELECT k, v FROM kv ORDER BY k";

#[test]
fn a_write_at_a_follower_is_readable_everywhere() {
    let c = Cluster::start(3);
    let f = follower_of(&c);
    create_table(&c, f);
    let body = c.execute(
        f,
        json!([["INSERT INTO kv (k, v) VALUES (?, ?)", 1, "one"]]),
    );
    assert_eq!(body["results"][0]["rows_affected"], 1);
    assert!(body["raft_index"].as_u64().unwrap() >= 2, "{body}");
    let want = vec![json!([1, "one"])];
    // Linearizable: at once, on every node.
    for id in 1..=3 {
        assert_eq!(c.rows(id, ALL, "linearizable"), want, "node {id}");
        assert_eq!(c.rows(id, ALL, "strong"), want, "node {id} (rqlite's name)");
    }
    // Leader: at once too (forwarded when asked at a follower).
    for id in 1..=3 {
        assert_eq!(c.rows(id, ALL, "leader"), want, "node {id}");
    }
    // Local: eventually.
    c.wait_converged(ALL, &want);
}

#[test]
fn two_hundred_writes_over_three_nodes_leave_identical_tables() {
    let c = Cluster::start(3);
    create_table(&c, 1);
    std::thread::scope(|s| {
        for node in 1..=3u64 {
            let c = &c;
            s.spawn(move || {
                for i in 0..67u64 {
                    let k = node * 1000 + i;
                    c.execute(
                        node,
                        json!([[
                            "INSERT INTO kv (k, v) VALUES (?, ?)",
                            k,
                            format!("n{node}-{i}")
                        ]]),
                    );
                }
            });
        }
    });
    let want = c.rows(1, ALL, "linearizable");
    assert_eq!(want.len(), 201);
    c.wait_converged(ALL, &want);
    for id in 1..=3 {
        assert_eq!(c.rows(id, ALL, "local"), want, "node {id} differs");
    }
}

#[test]
fn killing_the_leader_loses_nothing_and_it_catches_up_after_restart() {
    let mut c = Cluster::start(3);
    create_table(&c, 1);
    for k in 0..20 {
        c.execute(
            1 + k % 3,
            json!([["INSERT INTO kv VALUES (?, 'before')", k]]),
        );
    }
    let old = c.leader();
    c.kill(old);
    let survivors = c.running();
    let new = c.leader();
    assert_ne!(new, old);
    for k in 20..40u64 {
        c.execute(
            survivors[(k % 2) as usize],
            json!([["INSERT INTO kv VALUES (?, 'after')", k]]),
        );
    }
    for &id in &survivors {
        assert_eq!(
            c.rows(id, "SELECT count(*) FROM kv", "linearizable"),
            vec![json!([40])]
        );
    }
    c.spawn(old);
    c.wait_ready_node(old);
    let want = c.rows(new, ALL, "linearizable");
    assert_eq!(want.len(), 40);
    c.wait_converged(ALL, &want);
    assert_eq!(c.rows(old, ALL, "linearizable"), want);
}

#[test]
fn a_full_restart_keeps_every_acknowledged_write() {
    let mut c = Cluster::start(3);
    create_table(&c, 2);
    let mut acked = Vec::new();
    for k in 0..50u64 {
        c.execute(
            1 + k % 3,
            json!([["INSERT INTO kv VALUES (?, ?)", k, format!("v{k}")]]),
        );
        acked.push(json!([k, format!("v{k}")]));
    }
    for id in 1..=3 {
        c.stop(id);
    }
    for id in 1..=3 {
        c.spawn(id);
    }
    c.wait_ready();
    for id in 1..=3 {
        assert_eq!(c.rows(id, ALL, "linearizable"), acked, "node {id}");
    }
}

/// Cuts `victim` off while it keeps running and checks every read level.
fn partition_scenario(c: &Cluster, victim: u64) {
    create_table(c, 1);
    c.execute(1, json!([["INSERT INTO kv VALUES (0, 'before')"]]));
    c.wait_converged(ALL, &[json!([0, "before"])]);
    c.isolate(victim, true);
    let survivors: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
    // The majority elects a leader among itself (if it lost it) and goes on.
    wait_until(Duration::from_secs(30), "a write at the majority", || {
        c.post(
            survivors[0],
            "/db/execute",
            &json!([["INSERT OR REPLACE INTO kv VALUES (1, 'during')"]]).to_string(),
        )
        .is_ok_and(|(code, _)| code == 200)
    });
    for k in 2..10 {
        c.execute(
            survivors[k % 2],
            json!([["INSERT INTO kv VALUES (?, 'during')", k]]),
        );
    }
    for &s in &survivors {
        assert_eq!(
            c.rows(s, "SELECT count(*) FROM kv", "linearizable"),
            vec![json!([10])]
        );
    }
    // The cut node: local reads are allowed to be stale ...
    let local = c.rows(victim, "SELECT count(*) FROM kv", "local");
    assert!(
        local == vec![json!([1])] || local == vec![json!([10])],
        "{local:?}"
    );
    // ... a linearizable read must not be: it fails rather than answer 1.
    let (code, body) = c
        .query(victim, "SELECT count(*) FROM kv", "linearizable")
        .unwrap();
    assert_eq!(
        code, 503,
        "a cut-off node answered a linearizable read: {body}"
    );
    assert!(
        body["error"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
    // A write there fails clearly too and is not lost once healed: it is
    // either applied once everywhere or nowhere.
    let (code, _) = c
        .post(
            victim,
            "/db/execute?request_id=cut-write",
            &json!([["INSERT INTO kv VALUES (100, 'cut')"]]).to_string(),
        )
        .unwrap();
    assert_eq!(code, 503);
    c.isolate(victim, false);
    c.wait_ready_node(victim);
    let want = c.rows(survivors[0], ALL, "linearizable");
    assert!(want.len() == 10 || want.len() == 11, "{want:?}");
    c.wait_converged(ALL, &want);
    assert_eq!(c.rows(victim, ALL, "linearizable"), want);
}

#[test]
fn a_cut_off_follower_never_serves_a_stale_linearizable_read() {
    let c = Cluster::start(3);
    let victim = follower_of(&c);
    partition_scenario(&c, victim);
}

#[test]
fn a_cut_off_leader_never_serves_a_stale_linearizable_read() {
    let c = Cluster::start(3);
    let victim = c.leader();
    partition_scenario(&c, victim);
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let c = Cluster::start(3);
    create_table(&c, 1);
    let (code, body) = c.post(2, "/db/execute", r#"["INSERT INTO kv VALUES (1, 'a')", "INSRT INTO kv VALUES (2, 'b')", "INSERT INTO kv VALUES (1, 'dup')"]"#).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["results"][0]["rows_affected"], 1);
    assert!(
        body["results"][1]["error"]
            .as_str()
            .unwrap()
            .contains("syntax error"),
        "{body}"
    );
    assert!(
        body["results"][2]["error"]
            .as_str()
            .unwrap()
            .contains("UNIQUE"),
        "{body}"
    );

    let (code, body) = c
        .post(1, "/db/execute", "[\"INSERT INTO kv VALUES (3, 'x')\"")
        .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].is_string(), "{body}");
    let (code, _) = c
        .post(1, "/db/query?level=sometimes", r#"["SELECT 1"]"#)
        .unwrap();
    assert_eq!(code, 400);

    // random() is fixed once, before the log: the same value everywhere.
    c.execute(
        3,
        json!(["INSERT INTO kv VALUES (10, CAST(random() AS TEXT))"]),
    );
    c.execute(3, json!(["INSERT INTO kv VALUES (11, datetime('now'))"]));
    let want = c.rows(1, ALL, "linearizable");
    assert_eq!(want.len(), 3, "{want:?}");
    c.wait_converged(ALL, &want);

    // Transaction control in a statement is refused with the reason.
    let (code, body) = c.post(1, "/db/execute", r#"["BEGIN"]"#).unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("transaction"),
        "{body}"
    );
}

#[test]
fn a_retry_with_the_same_request_id_is_applied_once() {
    let c = Cluster::start(3);
    create_table(&c, 1);
    c.execute(
        1,
        json!([
            "CREATE TABLE counter (n INTEGER)",
            "INSERT INTO counter VALUES (0)"
        ]),
    );
    let body = json!(["UPDATE counter SET n = n + 1"]).to_string();
    let mut answers = Vec::new();
    // The same request sent to all three nodes, twice.
    for id in [1, 2, 3, 1, 2, 3] {
        let (code, b) = c.post(id, "/db/execute?request_id=bump-1", &body).unwrap();
        assert_eq!(code, 200, "{b}");
        answers.push(b["results"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    for id in 1..=3 {
        assert_eq!(
            c.rows(id, "SELECT n FROM counter", "linearizable"),
            vec![json!([1])]
        );
    }
    let (_, b) = c.post(2, "/db/execute?request_id=bump-2", &body).unwrap();
    assert_eq!(b["results"][0]["rows_affected"], 1);
    assert_eq!(
        c.rows(3, "SELECT n FROM counter", "linearizable"),
        vec![Value::from(vec![json!(2)])]
    );
}
