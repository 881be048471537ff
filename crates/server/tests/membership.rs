//! Membership changes with real processes: a node joins a running cluster
//! with `--join` and gets the data by snapshot; a node is removed with
//! `DELETE /remove`; the rest keeps a quorum and takes writes.

mod common;

use common::{wait_until, Cluster};
use serde_json::{json, Value};
use std::time::Duration;

fn count(c: &Cluster, id: u64, level: &str) -> Value {
    c.rows(id, "SELECT count(*) FROM t", level)[0][0].clone()
}

fn status_group(c: &Cluster, id: u64) -> Value {
    c.status(id).expect("status")["groups"][0].clone()
}

#[test]
fn a_node_joins_gets_the_data_and_a_node_is_removed() {
    let mut c = Cluster::start_with(3, &["--snapshot-entries", "50"]);
    c.execute(1, json!(["CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"]));
    for i in 0..200 {
        c.execute(
            1 + i % 3,
            json!([format!("INSERT INTO t VALUES ({i}, 'row {i}')")]),
        );
    }
    // The log was trimmed: the new node cannot be brought up entry by entry.
    wait_until(Duration::from_secs(20), "logs trimmed", || {
        status_group(&c, 1)["compacted_index"].as_u64().unwrap() > 0
    });

    let new = c.add_joining_node(2);
    c.wait_ready_node(new);
    let s = status_group(&c, new);
    assert_eq!(s["config_id"], 2, "{s}");
    assert_eq!(s["members"], json!([1, 2, 3, 4]), "{s}");
    assert!(s["snapshots_installed"].as_u64().unwrap() >= 1, "{s}");
    let (_, nodes) = c.get(1, "/nodes").unwrap();
    let ids: Vec<u64> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4], "{nodes}");
    c.execute(1, json!(["INSERT INTO t VALUES (1000, 'after join')"]));
    assert_eq!(count(&c, new, "linearizable"), json!(201));
    let latest = c.rows(new, "SELECT v FROM t WHERE k = 1000", "linearizable");
    assert_eq!(latest, vec![json!(["after join"])]);

    // Asking twice for the same member is harmless; bad bodies are refused.
    let again = json!({"id": new, "addr": c.node(new).peer}).to_string();
    let (code, body) = c.post(3, "/join", &again).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["config_id"], 2, "{body}");
    let (code, body) = c.post(3, "/join", "{\"id\": 0}").unwrap();
    assert_eq!(code, 400, "{body}");

    // Remove node 1 through another node.
    let url = format!("http://{}/remove", c.node(2).http);
    let r = reqwest::blocking::Client::new()
        .delete(&url)
        .body(json!({"id": 1}).to_string())
        .send()
        .unwrap();
    let code = r.status().as_u16();
    let body: Value = r.json().unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["config_id"], 3, "{body}");
    wait_until(Duration::from_secs(10), "node 2 in configuration 3", || {
        status_group(&c, 2)["config_id"] == json!(3)
    });
    let r = reqwest::blocking::Client::new()
        .delete(&url)
        .body(json!({"id": 1}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "removing a non-member is refused");

    // Node 1 refuses requests; the other three go on with a quorum, even
    // with node 1 gone for good.
    wait_until(
        Duration::from_secs(10),
        "node 1 knows it was removed",
        || status_group(&c, 1)["removed"] == json!(true),
    );
    let (code, body) = c
        .post(1, "/db/execute", "[\"INSERT INTO t VALUES (-1, 'x')\"]")
        .unwrap();
    assert_eq!(code, 503, "{body}");
    c.kill(1);
    c.execute(2, json!(["INSERT INTO t VALUES (2000, 'after remove')"]));
    for id in [2, 3, new] {
        assert_eq!(count(&c, id, "linearizable"), json!(202), "node {id}");
        assert_eq!(status_group(&c, id)["members"], json!([2, 3, 4]));
    }

    // A member restarts in the configuration it is in now.
    c.stop(3);
    c.spawn(3);
    c.wait_ready_node(3);
    c.execute(3, json!(["INSERT INTO t VALUES (3000, 'after restart')"]));
    assert_eq!(count(&c, 3, "linearizable"), json!(203));
    let all: Vec<Vec<Value>> = [2, 3, new]
        .iter()
        .map(|&id| {
            wait_until(Duration::from_secs(10), "replicas converge", || {
                count(&c, id, "local") == json!(203)
            });
            c.rows(id, "SELECT k, v FROM t ORDER BY k", "local")
        })
        .collect();
    assert!(all.windows(2).all(|w| w[0] == w[1]), "members differ");
}
