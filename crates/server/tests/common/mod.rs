//! Real clusters for tests: `paxsql node` processes on loopback ports,
//! each with its own data dir, talked to over HTTP.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_paxsql");

/// A free loopback port (bound and released; the window for a collision is tiny).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    pub id: u64,
    pub http: String,
    pub peer: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub peers: String,
    _root: tempfile::TempDir,
    client: reqwest::blocking::Client,
}

impl Cluster {
    /// Starts `n` nodes and waits until every one is ready.
    pub fn start(n: u64) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for id in 1..=n {
            nodes.push(Node {
                id,
                http: format!("127.0.0.1:{}", free_port()),
                peer: format!("127.0.0.1:{}", free_port()),
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
            _root: root,
            client,
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

    /// Starts (or restarts) node `id` from its data dir.
    pub fn spawn(&mut self, id: u64) {
        let peers = self.peers.clone();
        let node = &mut self.nodes[(id - 1) as usize];
        assert!(node.child.is_none(), "node {id} is running");
        std::fs::create_dir_all(&node.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.with_extension("log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["node", "--id", &id.to_string(), "--peers", &peers])
            .args(["--http", &node.http, "--fault-injection", "true"])
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
