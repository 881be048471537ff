//! Operating paxsql: key-value endpoints for curl users and Prometheus
//! metrics that match the load a node served.

mod common;

use common::Cluster;
use serde_json::json;

fn kv_url(c: &Cluster, id: u64, key: &str) -> String {
    // Percent-encode everything but unreserved characters and '/'.
    let mut encoded = String::new();
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("http://{}/kv/{encoded}", c.node(id).http)
}

#[test]
fn kv_put_get_delete_and_list_through_any_node() {
    let c = Cluster::start(3);
    let http = reqwest::blocking::Client::new();
    let keys = [
        "plain",
        "a/b/c",
        "with space",
        "ünïcødé/键",
        "prefix/1",
        "prefix/2",
    ];
    for (i, key) in keys.iter().enumerate() {
        let r = http
            .put(kv_url(&c, 1 + (i as u64 % 3), key))
            .body(format!("value of {key}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "PUT {key}: {}", r.text().unwrap());
    }
    for key in keys {
        for level in ["linearizable", "leader"] {
            let r = http
                .get(format!("{}?level={level}", kv_url(&c, 3, key)))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200, "GET {key}");
            assert_eq!(r.text().unwrap(), format!("value of {key}"));
        }
    }
    let missing = http.get(kv_url(&c, 2, "nope")).send().unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no such key"),
        "{body}"
    );

    let list: serde_json::Value = http
        .get(format!("http://{}/kv?prefix=prefix/", c.node(2).http))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        list["keys"],
        json!([
            {"key": "prefix/1", "value": "value of prefix/1"},
            {"key": "prefix/2", "value": "value of prefix/2"}
        ])
    );

    let del = http.delete(kv_url(&c, 1, "a/b/c")).send().unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(
        http.get(kv_url(&c, 2, "a/b/c")).send().unwrap().status(),
        404
    );
    assert_eq!(
        http.delete(kv_url(&c, 1, "a/b/c")).send().unwrap().status(),
        404
    );
    // Binary values come back byte for byte.
    let bytes: Vec<u8> = (0..=255).collect();
    http.put(kv_url(&c, 1, "bin"))
        .body(bytes.clone())
        .send()
        .unwrap();
    let got = http
        .get(kv_url(&c, 3, "bin"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(got.to_vec(), bytes);
    // The store is a table like any other.
    assert_eq!(
        c.rows(2, "SELECT count(*) FROM paxsql_kv", "linearizable"),
        vec![json!([6])]
    );
}

fn scrape(c: &Cluster, id: u64) -> prometheus_parse::Scrape {
    let text = reqwest::blocking::get(format!("http://{}/metrics", c.node(id).http))
        .unwrap()
        .text()
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_count_the_load_a_node_served() {
    let c = Cluster::start(3);
    c.execute(2, json!(["CREATE TABLE t (v)"]));
    let writes = 25;
    let reads = 15;
    for i in 0..writes {
        c.execute(2, json!([["INSERT INTO t VALUES (?)", i]]));
    }
    for _ in 0..reads {
        c.rows(2, "SELECT count(*) FROM t", "linearizable");
    }
    let (code, _) = c.post(2, "/db/execute", "not json").unwrap();
    assert_eq!(code, 400);
    let s = scrape(&c, 2);
    let ok_writes = value(
        &s,
        "paxsql_requests_total",
        &[("op", "write"), ("outcome", "ok")],
    );
    assert_eq!(ok_writes, f64::from(writes + 1), "writes (+ the CREATE)");
    let ok_reads = value(
        &s,
        "paxsql_requests_total",
        &[("op", "read"), ("level", "linearizable"), ("outcome", "ok")],
    );
    assert_eq!(ok_reads, f64::from(reads));
    let http_200 = value(
        &s,
        "paxsql_http_requests_total",
        &[("endpoint", "/db/execute"), ("status", "200")],
    );
    assert_eq!(http_200, f64::from(writes + 1));
    let http_400 = value(
        &s,
        "paxsql_http_requests_total",
        &[("endpoint", "/db/execute"), ("status", "400")],
    );
    assert_eq!(http_400, 1.0);
    // Gauges of the replica are there and plausible.
    common::wait_until(std::time::Duration::from_secs(5), "applied gauge", || {
        value(&scrape(&c, 2), "paxsql_applied_index", &[("group", "0")]) >= f64::from(writes + 1)
    });
    assert_eq!(value(&s, "paxsql_peer_up", &[]), 2.0, "two peers up");
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric.starts_with("paxsql_request_duration_seconds")));
}

#[test]
fn a_backup_of_one_cluster_loads_into_another_identically() {
    let a = Cluster::start(3);
    a.execute(
        1,
        json!([
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, pic BLOB, score REAL)",
            "CREATE INDEX users_by_name ON users (name)",
            [
                "INSERT INTO users VALUES (?, ?, ?, ?)",
                1,
                "fiona",
                [0, 1, 255],
                1.5
            ],
            [
                "INSERT INTO users VALUES (?, ?, ?, ?)",
                2,
                "sinead",
                null,
                -2.25
            ],
            "CREATE VIEW names AS SELECT name FROM users"
        ]),
    );
    let http = reqwest::blocking::Client::new();
    let r = http
        .get(format!("http://{}/db/backup", a.node(2).http))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let index: u64 = r.headers()["x-paxsql-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(index >= 1);
    let file = r.bytes().unwrap();
    assert!(file.starts_with(b"SQLite format 3\0"));

    let b = Cluster::start(3);
    b.execute(3, json!(["CREATE TABLE other (v)"]));
    let r = http
        .post(format!("http://{}/db/load", b.node(3).http))
        .body(file.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let all = "SELECT id, name, hex(pic), score FROM users ORDER BY id";
    let want = a.rows(1, all, "linearizable");
    assert_eq!(want.len(), 2);
    assert_eq!(b.rows(1, all, "linearizable"), want);
    b.wait_converged(all, &want);
    assert_eq!(
        b.rows(2, "SELECT name FROM names ORDER BY name", "linearizable"),
        vec![json!(["fiona"]), json!(["sinead"])]
    );
    // Tables the file does not have are left alone; internal tables never travel.
    assert_eq!(
        b.rows(2, "SELECT count(*) FROM other", "linearizable"),
        vec![json!([0])]
    );

    let r = http
        .post(format!("http://{}/db/load", b.node(1).http))
        .body("not a database")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
}
