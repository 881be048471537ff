//! PostgreSQL clients for tests: psql/pgbench and tokio-postgres sessions
//! against a node's pg-wire port.

use super::Cluster;
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::NoTls;

/// psql or pgbench from PATH or PostgreSQL 15's directory.
pub fn pg_tool(name: &str) -> PathBuf {
    let dirs = std::env::var("PATH").unwrap_or_default();
    let candidates = dirs
        .split(':')
        .map(PathBuf::from)
        .chain([PathBuf::from("/usr/lib/postgresql/15/bin")]);
    for dir in candidates {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: install it with `apt-get install -y postgresql-client`")
}

/// A tokio-postgres session on node `id`, with startup `options` (e.g.
/// `-c paxsql.read_level=leader`) if not empty.
pub async fn connect(c: &Cluster, id: u64, options: &str) -> tokio_postgres::Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(c.pg_port(id))
        .user("tester")
        .dbname("paxsql")
        .connect_timeout(Duration::from_secs(10));
    if !options.is_empty() {
        cfg.options(options);
    }
    let (client, conn) = cfg.connect(NoTls).await.expect("connecting");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
