//! `paxsql cluster`: N node processes on loopback, for trying paxsql out.
//! Each node is this same binary running `paxsql node`; its log goes to
//! `DIR/node-N.log`. Ctrl-C (or any node exiting) stops them all.

use anyhow::{bail, Context};
use clap::Args;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Flags of `paxsql cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// How many nodes (2 or more).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Data groups (`paxsql node --groups`): 1 keeps one group for the
    /// whole database; N above 1 shards tables over N data groups.
    #[arg(long, visible_alias = "shards", default_value_t = 1)]
    groups: u32,
    /// The SQL engine: sqlite or postgres.
    #[arg(long, default_value = "sqlite")]
    engine: String,
    /// With --engine postgres: the server the replicas live on; each node
    /// creates its database `paxsql_<cluster>_<node>_g<group>` there.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
    /// The cluster's name (also names the PostgreSQL databases).
    #[arg(long, default_value = "paxsql")]
    cluster: String,
    /// Parent of every node's data dir (created if missing; reused if present).
    #[arg(long, default_value = "paxsql-cluster")]
    data_dir: PathBuf,
    /// HTTP ports are BASE, BASE+1, ...; peer ports BASE+100, ...; PostgreSQL ports BASE+200, ...
    #[arg(long, default_value_t = 4001)]
    base_port: u16,
    /// Let tests cut nodes off through /debug/isolate.
    #[arg(long)]
    fault_injection: bool,
}

/// Running node processes; dropping this kills them.
pub(crate) struct Nodes(Vec<(u64, Child)>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the cluster and waits for Ctrl-C.
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    if args.nodes < 2 {
        bail!("--nodes must be 2 or more (OmniPaxos needs a quorum of peers)");
    }
    let mut engine = engine_flags(&args.engine, args.postgres_url.as_deref(), &args.cluster)?;
    engine.extend(["--groups".to_owned(), args.groups.to_string()]);
    let http_port = |i: u64| args.base_port as u64 + i - 1;
    let peer_port = |i: u64| args.base_port as u64 + 100 + i - 1;
    // Each node's PostgreSQL port is its default, the HTTP port + 200.
    let pg_port = |i: u64| http_port(i) + 200;
    if pg_port(args.nodes) > u16::MAX as u64 {
        bail!(
            "--base-port {} leaves no room for {} nodes",
            args.base_port,
            args.nodes
        );
    }
    let addrs: Vec<NodeAddrs> = (1..=args.nodes)
        .map(|i| NodeAddrs {
            http: format!("127.0.0.1:{}", http_port(i)),
            peer: format!("127.0.0.1:{}", peer_port(i)),
        })
        .collect();
    let mut nodes = start_nodes_with(&args.data_dir, &addrs, args.fault_injection, &engine)?;
    let http: Vec<String> = addrs.into_iter().map(|a| a.http).collect();
    let pg: Vec<u64> = (1..=args.nodes).map(pg_port).collect();
    print_banner(&http, &pg, &args.data_dir);
    supervise(&mut nodes)
}

/// Where one node of a local cluster listens.
pub(crate) struct NodeAddrs {
    /// The HTTP API.
    pub http: String,
    /// The node-to-node port.
    pub peer: String,
}

/// The `paxsql node` flags that choose the engine (and name the cluster,
/// which names the PostgreSQL databases).
pub(crate) fn engine_flags(
    engine: &str,
    postgres_url: Option<&str>,
    cluster: &str,
) -> anyhow::Result<Vec<String>> {
    let mut flags = vec!["--cluster".to_owned(), cluster.to_owned()];
    match (engine, postgres_url) {
        ("sqlite", None) => {}
        ("sqlite", Some(_)) => bail!("--postgres-url is only used with --engine postgres"),
        ("postgres", Some(url)) => flags.extend([
            "--engine".to_owned(),
            "postgres".to_owned(),
            "--postgres-url".to_owned(),
            url.to_owned(),
        ]),
        ("postgres", None) => bail!(
            "--engine postgres needs --postgres-url, e.g. postgres://postgres@127.0.0.1:5432/postgres"
        ),
        (other, _) => bail!("--engine must be sqlite or postgres, not {other:?}"),
    }
    Ok(flags)
}

/// Starts node `i` (1-based) of `addrs` as a `paxsql node` process with
/// data dir `dir/node-i` and log `dir/node-i.log`, then waits until every
/// node answers `/readyz`. Each node also gets the `extra` flags (see
/// [`engine_flags`]; `paxsql bench --local-cluster` passes `--groups`).
/// Dropping the result kills them (also `paxsql bench --local-cluster`
/// uses this).
pub(crate) fn start_nodes_with(
    dir: &std::path::Path,
    addrs: &[NodeAddrs],
    fault_injection: bool,
    extra: &[String],
) -> anyhow::Result<Nodes> {
    let peers: Vec<String> = addrs
        .iter()
        .zip(1..)
        .map(|(a, i)| format!("{i}={}", a.peer))
        .collect();
    let peers = peers.join(",");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = std::env::current_exe().context("finding the paxsql binary")?;
    let mut nodes = Nodes(Vec::new());
    for (a, i) in addrs.iter().zip(1u64..) {
        let log_path = dir.join(format!("node-{i}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("node")
            .arg("--id")
            .arg(i.to_string())
            .arg("--peers")
            .arg(&peers)
            .arg("--http")
            .arg(&a.http)
            .arg("--data-dir")
            .arg(dir.join(format!("node-{i}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if fault_injection {
            cmd.arg("--fault-injection").arg("true");
        }
        cmd.args(extra);
        let child = cmd.spawn().with_context(|| format!("starting node {i}"))?;
        nodes.0.push((i, child));
    }
    let http: Vec<String> = addrs.iter().map(|a| a.http.clone()).collect();
    wait_ready(&mut nodes, &http, dir)?;
    Ok(nodes)
}

fn wait_ready(nodes: &mut Nodes, http: &[String], dir: &std::path::Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for (addr, (id, child)) in http.iter().zip(nodes.0.iter_mut()) {
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "node {id} exited ({status}) while starting; see {}",
                    dir.join(format!("node-{id}.log")).display()
                );
            }
            let ok = rt.block_on(async {
                client
                    .get(format!("http://{addr}/readyz"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            });
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node {id} not ready after 30 s; see its log in {}",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn print_banner(http: &[String], pg: &[u64], dir: &std::path::Path) {
    println!("paxsql cluster ready: {} nodes", http.len());
    for (i, (addr, port)) in http.iter().zip(pg).enumerate() {
        let listening = std::net::TcpStream::connect(("127.0.0.1", *port as u16)).is_ok();
        let psql = if listening {
            format!("psql -h 127.0.0.1 -p {port}")
        } else {
            format!("PostgreSQL port {port} was taken, see the log")
        };
        println!(
            "  node {}: http://{addr}  {psql}  (log: {})",
            i + 1,
            dir.join(format!("node-{}.log", i + 1)).display()
        );
    }
    let a = &http[0];
    println!();
    println!("try:");
    println!("  curl -XPOST 'http://{a}/db/execute' -H 'Content-Type: application/json' -d '[\"CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)\"]'");
    println!("  curl -XPOST 'http://{a}/db/execute' -H 'Content-Type: application/json' -d '[[\"INSERT INTO t (name) VALUES (?)\", \"fiona\"]]'");
    println!("  curl -G 'http://{a}/db/query' --data-urlencode 'q=SELECT * FROM t' --data-urlencode 'level=linearizable'");
    println!("  curl 'http://{a}/status'");
    println!("  psql -h 127.0.0.1 -p {} -c 'SELECT * FROM t'", pg[0]);
    println!();
    println!("Ctrl-C stops the cluster; data stays in {}", dir.display());
}

/// Waits until Ctrl-C or until a node exits, then stops them all.
fn supervise(nodes: &mut Nodes) -> anyhow::Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(crate::shutdown_signal());
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            println!("stopping the cluster");
            return Ok(());
        }
        for (id, child) in &mut nodes.0 {
            if let Some(status) = child.try_wait()? {
                bail!("node {id} exited ({status}); stopping the others");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
