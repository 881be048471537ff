//! Real clusters for tests: `paxsql node` processes on loopback ports,
//! each with its own data dir, talked to over HTTP.

#![allow(dead_code)]

pub mod pg;

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_paxsql");

/// A free loopback port, never the same twice in this process.
///
/// Ports come from 20000..32000, below Linux's ephemeral range (32768..),
/// so neither another `free_port` call nor an outgoing connection's own
/// port can take one between this check and the node's bind (asking the OS
/// for port 0 twice can hand out the same port, which once gave a node the
/// same port for two listeners).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Node {
    pub id: u64,
    pub http: String,
    pub peer: String,
    /// The PostgreSQL wire protocol's address.
    pub pg: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub peers: String,
    /// Flags every node gets besides the harness's own.
    pub extra_args: Vec<String>,
    _root: tempfile::TempDir,
    client: reqwest::blocking::Client,
    /// The engine's databases, removed after the nodes stop.
    databases: Option<PostgresDatabases>,
}

/// The SQL engine a test cluster runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// SQLite files in the data dirs.
    Sqlite,
    /// Databases on the PostgreSQL server at [`postgres_url`].
    Postgres,
}

/// The server PostgreSQL tests use: `PAXSQL_TEST_POSTGRES_URL`, by default
/// the local one (`scripts/postgres-ready` starts it). Tests that need it
/// fail without it; they never skip.
pub fn postgres_url() -> String {
    std::env::var("PAXSQL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs SQL on the PostgreSQL server as the test's admin.
pub fn postgres_admin(sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("PostgreSQL at {}: {e}", postgres_url()))?;
        tokio::spawn(conn);
        client
            .batch_execute(sql)
            .await
            .map_err(|e| format!("{e:?}"))
    })
}

/// The databases of one test cluster (`paxsql_<cluster>_*`), dropped on drop.
pub struct PostgresDatabases {
    pub cluster: String,
}

impl PostgresDatabases {
    /// A cluster name no other test uses.
    pub fn fresh() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        PostgresDatabases {
            cluster: format!("t{}_{n}_{}", std::process::id(), nanos % 1_000_000),
        }
    }
}

impl Drop for PostgresDatabases {
    fn drop(&mut self) {
        // DROP DATABASE cannot run inside a function or transaction: list
        // the databases, then drop each on its own.
        let prefix = format!("paxsql_{}_", self.cluster);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result: Result<(), String> = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let rows = client
                .query(
                    "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1)",
                    &[&prefix],
                )
                .await
                .map_err(|e| e.to_string())?;
            for row in rows {
                let name: String = row.get(0);
                client
                    .batch_execute(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
        if let Err(e) = result {
            eprintln!("leaving the databases of cluster {}: {e}", self.cluster);
        }
    }
}

impl Cluster {
    /// Starts `n` nodes and waits until every one is ready.
    pub fn start(n: u64) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts `n` nodes on `engine` and waits until every one is ready.
    /// With PostgreSQL, the cluster has a name of its own, and its
    /// databases are dropped when it is.
    pub fn start_engine(n: u64, engine: Engine) -> Cluster {
        match engine {
            Engine::Sqlite => Cluster::start(n),
            Engine::Postgres => {
                // Created first, so a cluster that fails to start is cleaned up too.
                let databases = PostgresDatabases::fresh();
                let url = postgres_url();
                let mut c = Cluster::start_with(
                    n,
                    &[
                        "--cluster",
                        &databases.cluster,
                        "--engine",
                        "postgres",
                        "--postgres-url",
                        &url,
                    ],
                );
                c.databases = Some(databases);
                c
            }
        }
    }

    /// Starts `n` nodes, each also given `extra_args`, and waits until every
    /// one is ready.
    pub fn start_with(n: u64, extra_args: &[&str]) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Node {
                id,
                http: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
                pg: format!("127.0.0.1:{}", free_port()),
                dir: root.path().join(format!("node-{id}")),
                child: None,
            });
        }
        let peers = nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.peer))
            .collect::<Vec<_>>()
            .join(",");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let mut c = Cluster {
            nodes,
            peers,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            _root: root,
            client,
            databases: None,
        };
        for id in 1..=n {
            c.spawn(id);
        }
        c.wait_ready();
        c
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// The cluster's name, when it has one of its own (PostgreSQL).
    pub fn cluster_name(&self) -> Option<&str> {
        self.databases.as_ref().map(|d| d.cluster.as_str())
    }

    /// Node `id`'s process id.
    pub fn pid(&self, id: u64) -> u32 {
        self.node(id).child.as_ref().expect("node running").id()
    }

    /// Node `id`'s PostgreSQL port.
    pub fn pg_port(&self, id: u64) -> u16 {
        let pg = &self.node(id).pg;
        pg.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// Adds a node that joins the running cluster through node `via`
    /// (`--join`) and starts it; returns its id.
    pub fn add_joining_node(&mut self, via: u64) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let dir = self.nodes[0].dir.with_file_name(format!("node-{id}"));
        self.nodes.push(Node {
            id,
            http: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            pg: format!("127.0.0.1:{}", free_port()),
            dir,
            child: None,
        });
        let own = format!("{id}={}", self.nodes[(id - 1) as usize].peer);
        let join = self.node(via).http.clone();
        self.spawn_with(id, &own, &["--join", &join]);
        id
    }

    /// Starts (or restarts) node `id` from its data dir.
    pub fn spawn(&mut self, id: u64) {
        let peers = self.peers.clone();
        self.spawn_with(id, &peers, &[]);
    }

    fn spawn_with(&mut self, id: u64, peers: &str, more: &[&str]) {
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "node {id} is running");
        std::fs::create_dir_all(&node.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["node", "--id", &id.to_string(), "--peers", peers])
            .args(["--http", &node.http, "--fault-injection", "true"])
            .args(["--pg", &node.pg])
            .args(&self.extra_args)
            .args(more)
            .arg("--data-dir")
            .arg(&node.dir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        node.child = Some(child);
    }

    /// `kill -9`.
    pub fn kill(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        let mut child = node.child.take().expect("node running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Graceful stop (SIGTERM), waiting for the exit.
    pub fn stop(&mut self, id: u64) {
        let node = &mut self.nodes[(id - 1) as usize];
        let mut child = node.child.take().expect("node running");
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub fn wait_ready(&self) {
        for id in self.running() {
            self.wait_ready_node(id);
        }
    }

    pub fn wait_ready_node(&self, id: u64) {
        let url = format!("http://{}/readyz", self.node(id).http);
        wait_until(Duration::from_secs(30), &format!("node {id} ready"), || {
            self.client
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
    }

    /// The node currently leading, as the running nodes agree.
    pub fn leader(&self) -> u64 {
        let mut found = 0;
        wait_until(Duration::from_secs(30), "an agreed leader", || {
            let leaders: Vec<Option<u64>> = self
                .running()
                .iter()
                .map(|&id| {
                    self.status(id).ok().and_then(|s| {
                        let g = &s["groups"][0];
                        (g["role"] == "leader")
                            .then(|| g["leader"].as_u64())
                            .flatten()
                    })
                })
                .collect();
            let l = leaders.iter().flatten().next().copied();
            if let Some(l) = l {
                found = l;
                return true;
            }
            false
        });
        found
    }

    pub fn status(&self, id: u64) -> Result<Value, String> {
        self.get(id, "/status").map(|(_, v)| v)
    }

    pub fn get(&self, id: u64, path: &str) -> Result<(u16, Value), String> {
        let url = format!("http://{}{path}", self.node(id).http);
        let r = self.client.get(url).send().map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        let text = r.text().map_err(|e| e.to_string())?;
        Ok((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub fn post(&self, id: u64, path: &str, body: &str) -> Result<(u16, Value), String> {
        let url = format!("http://{}{path}", self.node(id).http);
        let r = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        let text = r.text().map_err(|e| e.to_string())?;
        Ok((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Executes statements at node `id`; panics unless it is a 200 without
    /// statement errors.
    pub fn execute(&self, id: u64, stmts: Value) -> Value {
        let (code, body) = self
            .post(id, "/db/execute", &stmts.to_string())
            .unwrap_or_else(|e| panic!("execute at {id}: {e}"));
        assert_eq!(code, 200, "execute at {id}: {body}");
        for r in body["results"].as_array().unwrap() {
            assert!(r.get("error").is_none(), "execute at {id}: {body}");
        }
        body
    }

    /// A read at a level; returns (status code, body).
    pub fn query(&self, id: u64, sql: &str, level: &str) -> Result<(u16, Value), String> {
        let body = json!([sql]).to_string();
        self.post(id, &format!("/db/query?level={level}"), &body)
    }

    /// The rows of a successful read.
    pub fn rows(&self, id: u64, sql: &str, level: &str) -> Vec<Value> {
        let (code, body) = self
            .query(id, sql, level)
            .unwrap_or_else(|e| panic!("query at {id}: {e}"));
        assert_eq!(code, 200, "query at {id}: {body}");
        let r = &body["results"][0];
        assert!(r.get("error").is_none(), "query at {id}: {body}");
        r.get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    pub fn isolate(&self, id: u64, isolated: bool) {
        let (code, body) = self
            .post(
                id,
                "/debug/isolate",
                &json!({ "isolated": isolated }).to_string(),
            )
            .unwrap();
        assert_eq!(code, 200, "{body}");
    }

    /// Waits until every running node's local copy of `sql` equals `want`.
    pub fn wait_converged(&self, sql: &str, want: &[Value]) {
        for id in self.running() {
            wait_until(
                Duration::from_secs(30),
                &format!("node {id} converged"),
                || {
                    self.query(id, sql, "local")
                        .ok()
                        .filter(|(c, _)| *c == 200)
                        .map(|(_, b)| {
                            b["results"][0]
                                .get("values")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default()
                        })
                        .is_some_and(|rows| rows == want)
                },
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // The nodes are gone: their databases can go too.
        self.databases.take();
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = std::fs::read_to_string(n.dir.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- node {} log (last lines) ---", n.id);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Polls `f` until it holds; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One range of a table as `SHOW RANGES FROM TABLE` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeSpan {
    pub id: u64,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub group: u64,
    pub rows: i64,
}

/// Sharded clusters (`--groups N`): waiting for every group, and spreading
/// a table's ranges over the data groups.
impl Cluster {
    /// Waits until every running node knows a leader for each of `groups`
    /// groups (the metadata group counts).
    pub fn wait_groups_led(&self, groups: usize) {
        for id in self.running() {
            wait_until(
                Duration::from_secs(30),
                &format!("node {id} knows a leader for each of {groups} groups"),
                || {
                    self.get(id, "/shards").is_ok_and(|(code, s)| {
                        let gs = s["groups"].as_array().cloned().unwrap_or_default();
                        code == 200 && gs.len() == groups && gs.iter().all(|g| g["leader"].is_u64())
                    })
                },
            );
        }
    }

    /// Executes at node `id`, retried while the node answers 503 (a leader
    /// being elected, the map changing); panics on any other failure.
    pub fn execute_retrying(&self, id: u64, stmts: Value) -> Value {
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.post(id, "/db/execute", &stmts.to_string()) {
                Ok((200, body)) => {
                    let results = body["results"].as_array().cloned().unwrap_or_default();
                    assert!(
                        results.iter().all(|r| r.get("error").is_none()),
                        "{stmts} at {id}: {body}"
                    );
                    return body;
                }
                Ok((503, body)) => last = body.to_string(),
                Ok((code, body)) => panic!("{stmts} at {id}: {code} {body}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{stmts} at {id} kept failing: {last}");
    }

    /// `SHOW RANGES FROM TABLE table` at node `id`, in key order.
    pub fn table_ranges(&self, id: u64, table: &str) -> Vec<RangeSpan> {
        let sql = format!("SHOW RANGES FROM TABLE {table}");
        let mut ranges: Vec<RangeSpan> = self
            .rows(id, &sql, "linearizable")
            .iter()
            .map(|r| RangeSpan {
                id: r[0].as_u64().expect("range_id"),
                start: r[2].as_i64(),
                end: r[3].as_i64(),
                group: r[4].as_u64().expect("group_id"),
                rows: r[7].as_i64().expect("rows"),
            })
            .collect();
        ranges.sort_by_key(|r| r.start.unwrap_or(i64::MIN));
        ranges
    }

    /// Splits `table` at `keys` (none: it stays one range), then relocates
    /// its ranges so that, in key order, they lie on data groups
    /// `first_group`, `first_group + 1`, ... counted round 1..=`groups`.
    /// Commands go to node `via`; returns the ranges as they end up.
    pub fn spread_table(
        &self,
        via: u64,
        table: &str,
        keys: &[i64],
        groups: u64,
        first_group: u64,
    ) -> Vec<RangeSpan> {
        assert!((1..=groups).contains(&first_group), "group {first_group}");
        if !keys.is_empty() {
            let list: Vec<String> = keys.iter().map(|k| format!("({k})")).collect();
            let split = format!("ALTER TABLE {table} SPLIT AT VALUES {}", list.join(", "));
            self.execute_retrying(via, json!([split]));
        }
        let ranges = self.table_ranges(via, table);
        for (i, r) in ranges.iter().enumerate() {
            let group = (first_group - 1 + i as u64) % groups + 1;
            if r.group != group {
                let relocate = format!("ALTER RANGE {} RELOCATE TO GROUP {group}", r.id);
                self.execute_retrying(via, json!([relocate]));
            }
        }
        let ranges = self.table_ranges(via, table);
        for (i, r) in ranges.iter().enumerate() {
            let group = (first_group - 1 + i as u64) % groups + 1;
            assert_eq!(
                r.group, group,
                "{table}'s ranges after spreading: {ranges:?}"
            );
        }
        ranges
    }
}
