//! The replicated SQL core end to end: real `paxsql node` processes, real
//! TCP, driven over the HTTP API — every scenario once on SQLite files and
//! once on PostgreSQL databases ([`both_engines!`]). The SQL in them is
//! valid in both dialects.

mod common;

use common::{wait_until, Cluster, Engine};
use serde_json::{json, Value};
use std::time::Duration;

/// Instantiates each scenario `fn name(engine: Engine)` as a test per engine:
/// `sqlite::name` and `postgres::name`.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::Engine::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::Engine::Postgres) })*
        }
    };
}

both_engines!(
    a_write_at_a_follower_is_readable_everywhere,
    two_hundred_writes_over_three_nodes_leave_identical_tables,
    killing_the_leader_loses_nothing_and_it_catches_up_after_restart,
    a_full_restart_keeps_every_acknowledged_write,
    a_cut_off_follower_never_serves_a_stale_linearizable_read,
    a_cut_off_leader_never_serves_a_stale_linearizable_read,
    bad_input_gets_clear_errors_and_changes_nothing,
    a_retry_with_the_same_request_id_is_applied_once,
);

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

fn a_write_at_a_follower_is_readable_everywhere(engine: Engine) {
    let c = Cluster::start_engine(3, engine);
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

fn two_hundred_writes_over_three_nodes_leave_identical_tables(engine: Engine) {
    let c = Cluster::start_engine(3, engine);
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

fn killing_the_leader_loses_nothing_and_it_catches_up_after_restart(engine: Engine) {
    let mut c = Cluster::start_engine(3, engine);
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

fn a_full_restart_keeps_every_acknowledged_write(engine: Engine) {
    let mut c = Cluster::start_engine(3, engine);
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
            &json!([[
                "INSERT INTO kv VALUES (1, 'during') ON CONFLICT (k) DO UPDATE SET v = excluded.v"
            ]])
            .to_string(),
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

fn a_cut_off_follower_never_serves_a_stale_linearizable_read(engine: Engine) {
    let c = Cluster::start_engine(3, engine);
    let victim = follower_of(&c);
    partition_scenario(&c, victim);
}

fn a_cut_off_leader_never_serves_a_stale_linearizable_read(engine: Engine) {
    let c = Cluster::start_engine(3, engine);
    let victim = c.leader();
    partition_scenario(&c, victim);
}

/// The fallback path alone: linearizable reads by barrier entries.
#[test]
fn with_barrier_reads_a_cut_off_leader_never_serves_a_stale_linearizable_read() {
    let c = Cluster::start_with(3, &["--linearizable-reads", "barrier"]);
    let victim = c.leader();
    partition_scenario(&c, victim);
}

fn bad_input_gets_clear_errors_and_changes_nothing(engine: Engine) {
    let c = Cluster::start_engine(3, engine);
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
    // SQLite: "UNIQUE constraint failed: kv.k"; PostgreSQL: "ERROR 23505:
    // duplicate key value violates unique constraint ...".
    assert!(
        body["results"][2]["error"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("unique"),
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
    c.execute(3, json!(["INSERT INTO kv VALUES (11, CURRENT_TIMESTAMP)"]));
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

fn a_retry_with_the_same_request_id_is_applied_once(engine: Engine) {
    let c = Cluster::start_engine(3, engine);
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

// ---------------------------------------------------------------------------
// PostgreSQL only: what the SQLite engine has no counterpart for.

/// Runs `paxsql node` with `args` until it exits; its exit success and the
/// last line it wrote to stderr.
fn node_exit(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let peers = format!(
        "1=127.0.0.1:{},2=127.0.0.1:{}",
        common::free_port(),
        common::free_port()
    );
    let http = format!("127.0.0.1:{}", common::free_port());
    let out = std::process::Command::new(common::BIN)
        .args([
            "node", "--id", "1", "--peers", &peers, "--http", &http, "--pg", "off",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    (out.status.success(), last)
}

#[test]
fn a_postgres_node_that_cannot_start_exits_with_one_line_naming_the_cause() {
    let closed = common::free_port();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![format!("postgres://postgres@127.0.0.1:{closed}/postgres")],
            format!("cannot connect to PostgreSQL at 127.0.0.1:{closed} as postgres"),
        ),
        (vec!["postgres://[::1".into()], "URL is not valid".into()),
        (
            vec![common::postgres_url().replace("postgres@", "paxsql_no_such_role@")],
            "paxsql_no_such_role".into(),
        ),
    ];
    for (url, want) in cases {
        let (ok, last) = node_exit(&["--engine", "postgres", "--postgres-url", &url[0]]);
        assert!(!ok, "{url:?}");
        assert!(
            last.starts_with("paxsql: ") && last.contains(&want),
            "{url:?}: {last}"
        );
    }
    let (ok, last) = node_exit(&["--engine", "postgres"]);
    assert!(!ok && last.contains("needs --postgres-url"), "{last}");
}

#[test]
fn a_postgres_role_without_createdb_is_told_what_to_grant() {
    let role = format!("paxsql_nocreatedb_{}", std::process::id());
    common::postgres_admin(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN NOCREATEDB"
    ))
    .unwrap();
    let url = common::postgres_url().replace("postgres@", &format!("{role}@"));
    let (ok, last) = node_exit(&["--engine", "postgres", "--postgres-url", &url]);
    common::postgres_admin(&format!("DROP ROLE {role}")).unwrap();
    assert!(!ok);
    assert!(
        last.contains(&format!("ALTER ROLE {role} CREATEDB")),
        "{last}"
    );
}

#[test]
fn postgres_types_and_serial_ids_are_the_same_on_every_replica() {
    let c = Cluster::start_engine(3, Engine::Postgres);
    c.execute(
        1,
        json!([
            "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(8,2), \
             ok bool, raw bytea, at timestamptz DEFAULT now(), tags text[], u uuid DEFAULT gen_random_uuid())"
        ]),
    );
    for (i, node) in [1u64, 2, 3, 1, 2, 3].into_iter().enumerate() {
        c.execute(
            node,
            json!([[
                "INSERT INTO items (name, price, ok, tags) VALUES (?, ?, ?, ?)",
                format!("item {i}"),
                1.25 * i as f64,
                i % 2 == 0,
                "{a,\"b c\"}"
            ]]),
        );
    }
    let all = "SELECT id, name, price, ok, raw, at, tags, u FROM items ORDER BY id";
    let (code, body) = c.query(2, all, "linearizable").unwrap();
    assert_eq!(code, 200, "{body}");
    let r = &body["results"][0];
    assert_eq!(
        r["types"],
        json!([
            "int4",
            "text",
            "numeric",
            "bool",
            "bytea",
            "timestamptz",
            "text[]",
            "uuid"
        ])
    );
    let rows = r["values"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0][0], 1);
    assert_eq!(rows[5][0], 6);
    assert_eq!(rows[1][2], json!(1.25));
    assert_eq!(rows[0][3], json!(1));
    assert_eq!(rows[0][4], Value::Null);
    assert_eq!(rows[0][6], json!("{a,\"b c\"}"));
    assert!(rows[0][5].as_str().unwrap().ends_with("+00"), "{rows:?}");
    c.wait_converged(all, &rows);
}
