//! The `paxsql` binary: `node` runs one node, `cluster` a local cluster.

mod backend;
mod bench;
mod cluster;
mod config;
mod panics;
mod shell;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "paxsql",
    version,
    about = "A distributed SQL database on OmniPaxos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one node (foreground; logs to stderr; RUST_LOG sets the level).
    Node(config::NodeArgs),
    /// Start a local cluster of node processes on loopback; Ctrl-C stops it.
    Cluster(cluster::ClusterArgs),
    /// Interactive SQL shell on a node's HTTP API (runs a script from stdin if not a terminal).
    Shell(shell::ShellArgs),
    /// Benchmark a cluster (or a local one it starts) against a SQLite baseline.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    panics::install();
    let result = match cli.command {
        Command::Node(args) => run_node(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Shell(args) => shell::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paxsql: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_node(args: config::NodeArgs) -> anyhow::Result<()> {
    let settings = args.resolve()?;
    if args.check {
        println!("{}", serde_json::to_string_pretty(&settings)?);
        return Ok(());
    }
    runtime()?.block_on(async move {
        let http = tokio::net::TcpListener::bind(&settings.http)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", settings.http))?;
        let pg = pg_listener(&settings).await?;
        let mut cfg = paxsql_node::NodeConfig::new(
            settings.id,
            settings.peers.clone(),
            settings.data_dir.clone(),
        );
        cfg.cluster = settings.cluster.clone();
        cfg.engine = settings.engine_choice();
        cfg.snapshot_entries = settings.snapshot_entries;
        cfg.snapshot_bytes = settings.snapshot_bytes;
        cfg.readers = settings.readers;
        cfg.reads_max = settings.reads_max;
        cfg.read_timeout = settings.read_timeout;
        cfg.read_limits = paxsql_node::ReadLimits {
            rows_max: settings.result_rows_max,
            bytes_max: settings.result_bytes_max,
        };
        cfg.groups = settings.groups;
        cfg.read_index = settings.read_index;
        if let Some(member) = &settings.join {
            join_cluster(member, &settings).await?;
        }
        let metrics = backend::install_metrics()?;
        panics::describe();
        let node = paxsql_node::start(cfg).await?;
        tracing::info!(
            id = settings.id.0,
            http = %settings.http,
            peer = %settings.peers[&settings.id],
            data_dir = %settings.data_dir.display(),
            "node started"
        );
        let options = paxsql_router::RouterOptions {
            gather_bytes_max: settings.gather_bytes_max,
            result_rows_max: settings.result_rows_max,
        };
        let router = paxsql_router::Router::new(node, options);
        if let Some(listener) = pg {
            let cfg = paxsql_pgwire::PgConfig {
                auth: settings.pg_auth.clone(),
                ..Default::default()
            };
            let db = backend::Backend(router.clone());
            let serve = paxsql_pgwire::serve(listener, db, cfg, std::future::pending());
            tokio::spawn(serve);
        }
        let app = backend::app(router, settings.fault_injection, metrics);
        axum::serve(http, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving HTTP")?;
        tracing::info!("node stopped");
        Ok(())
    })
}

/// Asks a member to add this node, and records the configuration it joins
/// so the node starts in it. Done once: a node that has joined (or has a
/// log already) starts from its data dir.
async fn join_cluster(member: &str, settings: &config::NodeSettings) -> anyhow::Result<()> {
    let group0 = settings.data_dir.join("group-0");
    if paxsql_node::membership::load(&group0)
        .map_err(|e| anyhow::anyhow!(e))?
        .is_some()
        || group0.join("paxos.log").exists()
    {
        tracing::info!("--join ignored: this node is already a member");
        return Ok(());
    }
    let url = format!("http://{member}/join");
    let body = serde_json::json!({
        "id": settings.id.0,
        "addr": settings.peers[&settings.id],
    });
    let client = reqwest::Client::new();
    let mut last = String::new();
    for attempt in 0..10 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let response = match client.post(&url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => {
                last = format!("cannot reach {member}: {e}");
                continue;
            }
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let m: paxsql_node::membership::StoredMembership =
                serde_json::from_str(&text).with_context(|| format!("{url} answered {text:?}"))?;
            paxsql_node::membership::save(&group0, &m)
                .with_context(|| format!("recording the membership in {}", group0.display()))?;
            tracing::info!(config = m.config_id, members = ?m.peers.keys().collect::<Vec<_>>(), "joined the cluster");
            return Ok(());
        }
        last = format!("{url}: {status}: {text}");
        if status.is_client_error() {
            break;
        }
    }
    anyhow::bail!("joining through {member} failed: {last}")
}

/// Binds the PostgreSQL port; a taken default port is only a warning.
async fn pg_listener(
    settings: &config::NodeSettings,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = &settings.pg else {
        return Ok(None);
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            tracing::info!(pg = %addr, "PostgreSQL protocol: psql -h HOST -p PORT");
            Ok(Some(l))
        }
        Err(e) if settings.pg_derived => {
            tracing::warn!(pg = %addr, error = %e, "PostgreSQL protocol off: default port taken; pass --pg");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen for PostgreSQL on {addr}")),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
