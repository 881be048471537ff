//! `paxsql node` settings: flags, a TOML file and `PAXSQL_*` environment
//! variables, merged with this precedence: flag > environment > file.

use anyhow::{bail, Context};
use clap::Args;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use paxsql_types::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Flags of `paxsql node`; each is also a key of the TOML file.
#[derive(Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct NodeArgs {
    /// A TOML file with any of these settings as keys (flags win).
    #[arg(long, value_name = "FILE.toml")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id, 1..
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Every node's peer address, this one's included: 1=HOST:PORT,2=HOST:PORT,...
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// The HTTP API's address.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The PostgreSQL wire protocol's address (not available yet).
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg: Option<String>,
    /// Where the log and the database files live; created if missing.
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The SQL engine: sqlite (default) or postgres.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// With --engine postgres: the server this node's database lives on.
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres_url: Option<String>,
    /// The cluster's name; nodes of different clusters refuse each other.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Serve /debug/isolate, which cuts this node off from its peers (tests only).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_injection: Option<bool>,
    /// Check the settings (flags, file, environment), print them, and exit.
    #[arg(long)]
    #[serde(skip)]
    pub check: bool,
}

/// Settings after merging, checked.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSettings {
    pub id: NodeId,
    pub peers: BTreeMap<NodeId, String>,
    pub http: String,
    pub data_dir: PathBuf,
    pub cluster: String,
    pub fault_injection: bool,
}

impl NodeArgs {
    /// Merges file, environment and flags, and checks the result.
    pub fn resolve(&self) -> anyhow::Result<NodeSettings> {
        let mut fig = Figment::new();
        if let Some(path) = &self.config {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        let merged: NodeArgs = fig
            .merge(Env::prefixed("PAXSQL_"))
            .merge(Serialized::defaults(self))
            .extract()
            .context("reading the node settings")?;
        merged.check()
    }

    fn check(self) -> anyhow::Result<NodeSettings> {
        let id = self.id.context("--id is required")?;
        if id == 0 {
            bail!("--id must be 1 or more");
        }
        let peers = parse_peers(self.peers.as_deref().context("--peers is required")?)?;
        if let Some(engine) = self.engine.as_deref() {
            match engine {
                "sqlite" => {}
                "postgres" => bail!("--engine postgres is not available in this build yet"),
                other => bail!("--engine must be sqlite or postgres, not {other:?}"),
            }
        }
        if self.pg.is_some() {
            bail!("--pg: the PostgreSQL wire protocol is not available in this build yet");
        }
        Ok(NodeSettings {
            id: NodeId(id),
            peers,
            http: self.http.unwrap_or_else(|| "127.0.0.1:4001".into()),
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(format!("paxsql-data/node-{id}"))),
            cluster: self.cluster.unwrap_or_else(|| "paxsql".into()),
            fault_injection: self.fault_injection.unwrap_or(false),
        })
    }
}

/// Parses `1=HOST:PORT,2=HOST:PORT`.
pub fn parse_peers(s: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut peers = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("--peers: {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--peers: {id:?} is not a node id"))?;
        if id == 0 {
            bail!("--peers: node ids start at 1");
        }
        let addr = addr.trim();
        if !addr.contains(':') {
            bail!("--peers: {addr:?} is not HOST:PORT");
        }
        if peers.insert(NodeId(id), addr.to_owned()).is_some() {
            bail!("--peers: node {id} is listed twice");
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_reject_garbage() {
        let p = parse_peers("1=127.0.0.1:1,2=127.0.0.1:2").unwrap();
        assert_eq!(p[&NodeId(2)], "127.0.0.1:2");
        assert!(parse_peers("1=a:1,1=b:2").is_err());
        assert!(parse_peers("x=a:1").is_err());
        assert!(parse_peers("1=nohostport").is_err());
        assert!(parse_peers("0=a:1").is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n.toml");
        std::fs::write(
            &file,
            "id = 2\npeers = \"1=127.0.0.1:1,2=127.0.0.1:2\"\nhttp = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let args = NodeArgs {
            config: Some(file),
            http: Some("127.0.0.1:7".into()),
            ..NodeArgs::default()
        };
        let s = args.resolve().unwrap();
        assert_eq!(s.id, NodeId(2));
        assert_eq!(s.http, "127.0.0.1:7");
    }
}
