//! `--local-cluster N`: a throwaway cluster on loopback for one bench run,
//! started the way `paxsql cluster` starts one ([`crate::cluster::start_nodes_with`]:
//! this same binary's `node` subcommand, one process per node), on free
//! ports, in a fresh directory that is deleted afterwards. With `--groups
//! G` each node is started with `--groups G` (a metadata group and G data
//! groups).

use crate::cluster::{start_nodes_with, NodeAddrs, Nodes};
use anyhow::Context;
use std::net::TcpListener;
use std::path::Path;

/// The running cluster. Dropping it kills the nodes, then removes their data.
pub struct LocalCluster {
    /// Declared before `dir`, so the nodes are gone before their files.
    nodes: Option<Nodes>,
    dir: tempfile::TempDir,
    http: Vec<String>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.dir.path())
            .field("http", &self.http)
            .finish()
    }
}

impl LocalCluster {
    /// Starts `n` nodes of `groups` data groups with data under a new
    /// directory in `parent` and waits until each is ready.
    pub fn start(n: u64, groups: u32, parent: &Path) -> anyhow::Result<LocalCluster> {
        anyhow::ensure!(
            n >= 2,
            "--local-cluster must be 2 or more (OmniPaxos needs a quorum of peers)"
        );
        let dir = tempfile::Builder::new()
            .prefix("paxsql-bench-cluster-")
            .tempdir_in(parent)
            .with_context(|| format!("creating a data dir in {}", parent.display()))?;
        let ports = free_ports(2 * n as usize)?;
        let addrs: Vec<NodeAddrs> = ports
            .chunks(2)
            .map(|p| NodeAddrs {
                http: format!("127.0.0.1:{}", p[0]),
                peer: format!("127.0.0.1:{}", p[1]),
            })
            .collect();
        let http = addrs.iter().map(|a| a.http.clone()).collect();
        let flags = ["--groups".to_owned(), groups.to_string()];
        let nodes = start_nodes_with(dir.path(), &addrs, false, &flags)?;
        Ok(LocalCluster {
            nodes: Some(nodes),
            dir,
            http,
        })
    }

    /// The nodes' HTTP addresses, node 1 first.
    pub fn http(&self) -> &[String] {
        &self.http
    }

    /// Where the nodes' data and logs are (`node-N/`, `node-N.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the nodes now; their data stays until the value is dropped.
    pub fn stop(&mut self) {
        self.nodes.take();
    }
}

/// `n` distinct free loopback ports from 20000..32000, below Linux's
/// ephemeral range (32768..): a port the OS hands out for port 0, or to an
/// outgoing connection, could be taken again before the node binds it.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    let ports: Vec<u16> = (0..SPAN)
        .map(|i| (FIRST + (start + i) % SPAN) as u16)
        .filter(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .take(n)
        .collect();
    anyhow::ensure!(ports.len() == n, "finding {n} free loopback ports");
    Ok(ports)
}
