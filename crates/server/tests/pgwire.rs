//! The PostgreSQL wire protocol against real node processes, with real
//! clients: psql, tokio-postgres, pgbench, and raw bytes.

mod common;

use common::pg::{connect, pg_tool};
use common::Cluster;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::NoTls;

/// Runs psql against node `id` with `-c` commands; returns stdout, panics
/// on a non-zero exit.
fn psql(c: &Cluster, id: u64, commands: &[&str]) -> String {
    psql_with(c, id, &["-t"], commands)
}

/// psql with extra flags (unaligned output, no psqlrc, stop on error).
fn psql_with(c: &Cluster, id: u64, flags: &[&str], commands: &[&str]) -> String {
    let mut cmd = Command::new(pg_tool("psql"));
    cmd.args(["-X", "-A", "-v", "ON_ERROR_STOP=1"])
        .args(flags)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &c.pg_port(id).to_string(),
            "-U",
            "tester",
        ])
        .env("PGCONNECT_TIMEOUT", "10");
    for command in commands {
        cmd.args(["-c", command]);
    }
    let out = cmd.output().expect("running psql");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "psql {commands:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn follower(c: &Cluster) -> u64 {
    let leader = c.leader();
    (1..=3).find(|&i| i != leader).unwrap()
}

#[test]
fn psql_creates_inserts_and_selects_on_a_follower_and_lists_tables() {
    let c = Cluster::start(3);
    let f = follower(&c);
    let out = psql(
        &c,
        f,
        &[
            "CREATE TABLE pets (id INTEGER PRIMARY KEY, name TEXT NOT NULL, weight REAL)",
            "INSERT INTO pets (name, weight) VALUES ('rex', 12.5), ('tom', 4)",
            "SELECT id, name, weight FROM pets ORDER BY id",
            "UPDATE pets SET weight = weight + 1",
            "SELECT count(*), sum(weight) FROM pets",
        ],
    );
    assert_eq!(
        out,
        "CREATE TABLE\nINSERT 0 2\n1|rex|12.5\n2|tom|4\nUPDATE 2\n2|18.5\n"
    );
    // Several statements in one simple query; the writes commit together.
    let out = psql(
        &c,
        f,
        &["INSERT INTO pets (name) VALUES ('a'); INSERT INTO pets (name) VALUES ('b'); SELECT count(*) FROM pets"],
    );
    // psql 15 shows every statement's result.
    assert_eq!(out, "INSERT 0 1\nINSERT 0 1\n4\n");
    let listed = psql(&c, f, &["\\dt"]);
    assert_eq!(listed, "public|pets|table|tester\n");
    let described = psql_with(&c, f, &[], &["\\d pets"]);
    assert!(described.contains("id|integer||not null|"), "{described}");
    assert!(described.contains("name|text||not null|"), "{described}");
    assert!(
        described.contains("\"pets_pkey\" PRIMARY KEY, btree (id)"),
        "{described}"
    );
    let version = psql(&c, f, &["SELECT version()"]);
    assert!(version.starts_with("PostgreSQL 15"), "{version}");
    // Every replica has the rows.
    c.wait_converged(
        "SELECT id, name FROM pets ORDER BY id",
        &c.rows(1, "SELECT id, name FROM pets ORDER BY id", "linearizable"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_reuses_parameterized_and_prepared_statements() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .unwrap();
    let client = connect(&c, 2, "").await;
    client
        .batch_execute(
            "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL, f REAL, b BLOB, ok BOOLEAN)",
        )
        .await
        .unwrap();

    let insert = client
        .prepare("INSERT INTO kv (k, v, f, b, ok) VALUES ($1, $2, $3, $4, $5)")
        .await
        .unwrap();
    assert_eq!(
        insert.params(),
        &[
            Type::INT8,
            Type::TEXT,
            Type::FLOAT8,
            Type::BYTEA,
            Type::BOOL
        ]
    );
    for k in 0..100i64 {
        let n = client
            .execute(
                &insert,
                &[
                    &k,
                    &format!("value {k}"),
                    &(k as f64 / 2.0),
                    &vec![k as u8; 3],
                    &(k % 2 == 0),
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    let get = client
        .prepare("SELECT v, f, b, ok, k * 2 AS twice FROM kv WHERE k = $1")
        .await
        .unwrap();
    assert_eq!(get.params(), &[Type::INT8]);
    let types: Vec<Type> = get.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        [
            Type::TEXT,
            Type::FLOAT8,
            Type::BYTEA,
            Type::BOOL,
            Type::INT8
        ]
    );
    for k in 0..100i64 {
        let row = client.query_one(&get, &[&k]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("value {k}"));
        assert_eq!(row.get::<_, f64>(1), k as f64 / 2.0);
        assert_eq!(row.get::<_, Vec<u8>>(2), vec![k as u8; 3]);
        assert_eq!(row.get::<_, bool>(3), k % 2 == 0);
        assert_eq!(row.get::<_, i64>("twice"), 2 * k);
    }

    // Unprepared parameterized statements (prepared and closed per call).
    let row = client
        .query_one(
            "SELECT count(*), max(k), avg(f) FROM kv WHERE k >= $1 AND v LIKE $2",
            &[&50i64, &"value%"],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>("count"), 50);
    assert_eq!(row.get::<_, i64>("max"), 99);
    assert_eq!(row.get::<_, f64>("avg"), 37.25);
    let n = client
        .execute("UPDATE kv SET v = $1 WHERE k < $2", &[&"low", &10i64])
        .await
        .unwrap();
    assert_eq!(n, 10);
    let n = client
        .execute("DELETE FROM kv WHERE k >= $1", &[&90i64])
        .await
        .unwrap();
    assert_eq!(n, 10);
    let rows = client
        .query(
            "SELECT k FROM kv WHERE v = $1 ORDER BY k LIMIT $2",
            &[&"low", &3i64],
        )
        .await
        .unwrap();
    let ks: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ks, [0, 1, 2]);
    let row = client
        .query_one(
            "INSERT INTO kv (k, v) VALUES ($1, $2) RETURNING k, v",
            &[&500i64, &"r"],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (500, "r".to_owned())
    );

    // Errors carry SQLSTATEs.
    let e = client
        .execute(&insert, &[&1i64, &"dup", &0.0f64, &vec![0u8], &true])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    let e = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::SYNTAX_ERROR), "{e}");
    let e = client.prepare("SELECT * FROM nope").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_TABLE), "{e}");
    // The connection still works after errors.
    let row = client.query_one(&get, &[&5i64]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "low");

    // A portal fetched a few rows at a time (Execute with max_rows).
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    let portal = tx
        .bind("SELECT k FROM kv WHERE k < $1 ORDER BY k", &[&10i64])
        .await
        .unwrap();
    let first = tx.query_portal(&portal, 4).await.unwrap();
    let rest = tx.query_portal(&portal, 100).await.unwrap();
    assert_eq!((first.len(), rest.len()), (4, 6));
    assert_eq!(rest[0].get::<_, i64>(0), 4);
    tx.commit().await.unwrap();

    // Transactions: writes commit atomically at COMMIT, or not at all.
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[&1000i64, &"tx1"])
        .await
        .unwrap();
    tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[&1001i64, &"tx2"])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO kv (k, v) VALUES ($1, $2)",
        &[&1002i64, &"gone"],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[&1003i64, &"x"])
        .await
        .unwrap();
    // A read sees the transaction's own write; dropping it rolls back.
    let mine = tx
        .query("SELECT k FROM kv WHERE k >= 1000 ORDER BY k", &[])
        .await
        .unwrap();
    let ks: Vec<i64> = mine.iter().map(|r| r.get(0)).collect();
    assert_eq!(ks, [1000, 1001, 1003]);
    drop(tx);
    // A failing statement fails at once, and COMMIT then rolls the whole
    // transaction back (answered ROLLBACK, as PostgreSQL does).
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[&1004i64, &"x"])
        .await
        .unwrap();
    let e = tx
        .execute("INSERT INTO kv (k, v) VALUES ($1, $2)", &[&1000i64, &"dup"])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    tx.commit().await.unwrap();
    let rows = client
        .query("SELECT k FROM kv WHERE k >= 1000 ORDER BY k", &[])
        .await
        .unwrap();
    let ks: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ks, [1000, 1001]);
    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
}

#[test]
fn pgbench_custom_script_leaves_replicas_identical() {
    let c = Cluster::start(3);
    psql(
        &c,
        1,
        &[
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL DEFAULT 0)",
            "INSERT INTO accounts (id) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200) SELECT i FROM s",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bench.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 200)\n\\set delta random(-5000, 5000)\n\
         UPDATE accounts SET balance = balance + :delta WHERE id = :aid;\n\
         SELECT balance FROM accounts WHERE id = :aid;\n",
    )
    .unwrap();
    let f = follower(&c);
    for (mode, clients) in [("prepared", "4"), ("simple", "2"), ("extended", "2")] {
        let out = Command::new(pg_tool("pgbench"))
            .args(["-n", "-f"])
            .arg(&script)
            .args(["-c", clients, "-j", "2", "-T", "2", "-M", mode])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &c.pg_port(f).to_string(),
                "-U",
                "tester",
            ])
            .arg("paxsql")
            .output()
            .expect("running pgbench");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgbench -M {mode}: {stderr}\n{stdout}"
        );
        assert!(
            stdout.contains("number of failed transactions: 0 (0.000%)"),
            "pgbench -M {mode}: {stdout}\n{stderr}"
        );
        let processed = stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|n| n.split('/').next()?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            processed > 0,
            "pgbench -M {mode} processed nothing: {stdout}"
        );
    }
    let sql = "SELECT id, balance FROM accounts ORDER BY id";
    let want = c.rows(1, sql, "linearizable");
    assert_eq!(want.len(), 200);
    c.wait_converged(sql, &want);
    let total: i64 = want.iter().map(|r| r[1].as_i64().unwrap()).sum();
    assert_ne!(total, 0, "pgbench changed no balance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_node_1_is_seen_at_once_by_a_linearizable_session_on_node_3() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .unwrap();
    let writer = connect(&c, 1, "").await;
    let reader = connect(&c, 3, "").await;
    let level = reader
        .query_one("SHOW paxsql.read_level", &[])
        .await
        .unwrap();
    assert_eq!(level.get::<_, String>(0), "linearizable");
    writer
        .batch_execute("CREATE TABLE events (id INTEGER PRIMARY KEY, note TEXT)")
        .await
        .unwrap();
    let insert = writer
        .prepare("INSERT INTO events (note) VALUES ($1)")
        .await
        .unwrap();
    let count = reader.prepare("SELECT count(*) FROM events").await.unwrap();
    for i in 1..=30i64 {
        writer
            .execute(&insert, &[&format!("event {i}")])
            .await
            .unwrap();
        let seen: i64 = reader.query_one(&count, &[]).await.unwrap().get(0);
        assert_eq!(
            seen, i,
            "a linearizable read on node 3 missed an acknowledged write"
        );
    }
    // The level is per session: SET, and the startup options.
    reader
        .batch_execute("SET paxsql.read_level = 'local'")
        .await
        .unwrap();
    let level = reader
        .query_one("SHOW paxsql.read_level", &[])
        .await
        .unwrap();
    assert_eq!(level.get::<_, String>(0), "local");
    let e = reader
        .batch_execute("SET paxsql.read_level = 'eventually'")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{e}");
    let local = connect(&c, 2, "-c paxsql.read_level=leader").await;
    let level = local
        .query_one("SHOW paxsql.read_level", &[])
        .await
        .unwrap();
    assert_eq!(level.get::<_, String>(0), "leader");
    let seen: i64 = local
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 30);
    for param in [
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "extra_float_digits",
        "application_name",
        "standard_conforming_strings",
    ] {
        local
            .query_one(&format!("SHOW {param}"), &[])
            .await
            .unwrap();
    }
    local
        .batch_execute("SET extra_float_digits = 3; SET application_name = 'tests'")
        .await
        .unwrap();
    let app = local.query_one("SHOW application_name", &[]).await.unwrap();
    assert_eq!(app.get::<_, String>(0), "tests");
    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
}

// --- raw protocol helpers ---

fn startup_packet(major: u16, minor: u16) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&major.to_be_bytes());
    body.extend_from_slice(&minor.to_be_bytes());
    for s in ["user", "tester", "database", "paxsql", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Reads backend messages until `until` (a message type) arrives or the
/// connection closes; returns (type, body) pairs.
fn read_messages(s: &mut TcpStream, until: u8) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut head = [0u8; 5];
        if s.read_exact(&mut head).is_err() {
            return out;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).unwrap();
        out.push((head[0], body));
        if head[0] == until {
            return out;
        }
    }
}

fn error_text(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter()
        .filter(|(t, _)| *t == b'E')
        .map(|(_, b)| String::from_utf8_lossy(b).replace('\0', " "))
        .collect()
}

fn raw(c: &Cluster, id: u64) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", c.pg_port(id))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Whether the server has closed the connection.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn bad_input_gets_a_protocol_error_and_the_node_keeps_serving() {
    let c = Cluster::start(3);
    psql(&c, 2, &["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]);

    // 1. Garbage bytes instead of a startup packet.
    let mut s = raw(&c, 2);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let msgs = read_messages(&mut s, b'E');
    let e = error_text(&msgs);
    assert!(e.contains("FATAL") && e.contains("08P01"), "{msgs:?}");
    assert!(closed(&mut s));

    // 2. A startup packet for protocol 9.9.
    let mut s = raw(&c, 2);
    s.write_all(&startup_packet(9, 9)).unwrap();
    let msgs = read_messages(&mut s, b'E');
    let e = error_text(&msgs);
    assert!(e.contains("unsupported frontend protocol 9.9"), "{e}");
    assert!(closed(&mut s));

    // 3. A Bind with the wrong number of parameters: an error, then the
    //    connection still works after Sync.
    let mut s = raw(&c, 2);
    s.write_all(&startup_packet(3, 0)).unwrap();
    let msgs = read_messages(&mut s, b'Z');
    assert!(msgs.iter().any(|(t, _)| *t == b'R'), "{msgs:?}");
    let mut parse = cstr("");
    parse.extend(cstr("SELECT v FROM t WHERE id = $1 AND v = $2"));
    parse.extend_from_slice(&0u16.to_be_bytes());
    let mut bind = cstr("");
    bind.extend(cstr(""));
    bind.extend_from_slice(&0u16.to_be_bytes()); // parameter formats
    bind.extend_from_slice(&1u16.to_be_bytes()); // one parameter, two needed
    bind.extend_from_slice(&1u32.to_be_bytes());
    bind.push(b'7');
    bind.extend_from_slice(&0u16.to_be_bytes()); // result formats
    let mut execute = cstr("");
    execute.extend_from_slice(&0u32.to_be_bytes());
    let mut batch = message(b'P', &parse);
    batch.extend(message(b'B', &bind));
    batch.extend(message(b'E', &execute));
    batch.extend(message(b'S', &[]));
    s.write_all(&batch).unwrap();
    let msgs = read_messages(&mut s, b'Z');
    let e = error_text(&msgs);
    assert!(
        e.contains("08P01")
            && e.contains("bind message supplies 1 parameters")
            && e.contains("requires 2"),
        "{msgs:?}"
    );
    assert!(
        !msgs.iter().any(|(t, _)| *t == b'C'),
        "the execute must be skipped: {msgs:?}"
    );
    s.write_all(&message(b'Q', &cstr("SELECT 41 + 1"))).unwrap();
    let msgs = read_messages(&mut s, b'Z');
    let data: Vec<&Vec<u8>> = msgs
        .iter()
        .filter(|(t, _)| *t == b'D')
        .map(|(_, b)| b)
        .collect();
    assert_eq!(data.len(), 1, "{msgs:?}");
    assert!(data[0].ends_with(b"42"), "{msgs:?}");

    // 4. An unknown message type after startup.
    s.write_all(&message(b'y', b"junk")).unwrap();
    let msgs = read_messages(&mut s, b'E');
    assert!(error_text(&msgs).contains("FATAL"), "{msgs:?}");
    assert!(closed(&mut s));

    // The node serves other connections, over both protocols.
    let out = psql(
        &c,
        2,
        &["INSERT INTO t (v) VALUES ('still here')", "SELECT v FROM t"],
    );
    assert_eq!(out, "INSERT 0 1\nstill here\n");
    let (code, body) = c.get(2, "/status").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["node_id"], Value::from(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_required_when_configured() {
    let c = tokio::task::spawn_blocking(|| Cluster::start_with(2, &["--pg-password", "s3cret"]))
        .await
        .unwrap();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1").port(c.pg_port(1)).user("tester");
    let e = cfg
        .connect(NoTls)
        .await
        .err()
        .expect("no password must fail");
    assert!(format!("{e:?}").contains("password"), "{e:?}");
    cfg.password("wrong");
    let e = cfg
        .connect(NoTls)
        .await
        .err()
        .expect("a wrong password must fail");
    assert_eq!(e.code(), Some(&SqlState::INVALID_PASSWORD), "{e}");
    cfg.password("s3cret");
    let (client, conn) = cfg.connect(NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 2);
    tokio::task::spawn_blocking(move || drop(c)).await.unwrap();
}

/// pg-wire's `statement_timeout` bounds a runaway read (SQLSTATE 57014), and
/// a runaway write gets the statement budget's error (54000); the session
/// and the cluster go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_and_the_budget_stop_runaways_over_pg_wire() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(3))
        .await
        .unwrap();
    let client = connect(&c, 2, "").await;
    client
        .batch_execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, a INT); INSERT INTO t VALUES (1, 1)",
        )
        .await
        .unwrap();
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let shown = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap();
    assert_eq!(shown.get::<_, String>(0), "300");
    let runaway =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
    let e = client.query(runaway, &[]).await.unwrap_err();
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(db.code().code(), "57014", "{db:?}");
    assert!(db.message().starts_with("read timeout"), "{db:?}");

    let e = client
        .batch_execute(
            "UPDATE t SET a = (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) \
             SELECT count(*) FROM c)",
        )
        .await
        .unwrap_err();
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e:?}"));
    assert_eq!(db.code().code(), "54000", "{db:?}");
    assert!(
        db.message().starts_with("statement budget exceeded"),
        "{db:?}"
    );

    // The session still works, and so does the cluster.
    client
        .batch_execute("INSERT INTO t VALUES (2, 2)")
        .await
        .unwrap();
    let n = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap();
    assert_eq!(n.get::<_, i64>(0), 2);
}
