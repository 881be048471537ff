//! A replica whose database fails under it stops, loudly, and says why —
//! never an endless loop, never a divergent copy — while the others go on.
//!
//! The fault is real: one node's PostgreSQL database is dropped while the
//! cluster runs, so that node's next apply cannot go on. Its group stops on
//! that node; the node process stays up to tell: `/readyz` answers 503 with
//! the reason, `/status` shows it as the group's `failure`, `/metrics` has
//! `paxsql_group_failed 1`, and requests there get the reason too.

mod common;

use common::{postgres_admin, wait_until, Cluster, Engine};
use serde_json::{json, Value};
use std::time::Duration;

#[test]
fn a_replica_whose_database_fails_stops_and_says_why() {
    let c = Cluster::start_engine(3, Engine::Postgres);
    c.execute(
        1,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a INT)",
            "INSERT INTO t VALUES (1, 1)"
        ]),
    );
    let victim = 3;
    let cluster = c
        .cluster_name()
        .expect("a PostgreSQL cluster has a name of its own");
    let database = format!("paxsql_{cluster}_{victim}_g0");
    postgres_admin(&format!("DROP DATABASE \"{database}\" WITH (FORCE)")).unwrap();

    // The others have a quorum and go on.
    c.execute(1, json!(["INSERT INTO t VALUES (2, 2)"]));
    c.execute(2, json!(["INSERT INTO t VALUES (3, 3)"]));

    wait_until(Duration::from_secs(30), "the victim's group stops", || {
        c.status(victim)
            .is_ok_and(|s| !s["groups"][0]["failure"].is_null())
    });
    let status = c.status(victim).unwrap();
    let failure = status["groups"][0]["failure"].as_str().unwrap().to_owned();
    eprintln!("node {victim} says: {failure}");

    let (code, body) = c.get(victim, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    let text = body.as_str().map(str::to_owned).unwrap_or(body.to_string());
    assert!(text.contains("stopped on this node"), "{text}");

    let (_, metrics) = c.get(victim, "/metrics").unwrap();
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("paxsql_group_failed{") && l.ends_with(" 1")),
        "{metrics}"
    );

    let (code, body) = c
        .post(
            victim,
            "/db/execute",
            &json!(["INSERT INTO t VALUES (4, 4)"]).to_string(),
        )
        .unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("stopped on this node"),
        "{body}"
    );

    // The rest of the cluster serves and agrees.
    c.execute(2, json!(["INSERT INTO t VALUES (5, 5)"]));
    let want: Vec<Value> = [1, 2, 3, 5].iter().map(|&i| json!([i, i])).collect();
    for id in [1, 2] {
        assert_eq!(
            c.rows(id, "SELECT id, a FROM t ORDER BY id", "linearizable"),
            want
        );
    }
}
