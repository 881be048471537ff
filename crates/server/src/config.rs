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
    /// The PostgreSQL wire protocol's address, or `off`. Default: the HTTP
    /// host with the HTTP port + 200 (4201 for 4001), skipped with a warning
    /// if that port is taken.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg: Option<String>,
    /// A password PostgreSQL clients must give (any user name); default: none (trust).
    #[arg(long, value_name = "PASSWORD")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_password: Option<String>,
    /// How --pg-password is asked for: md5 (default) or cleartext.
    #[arg(long, value_name = "md5|cleartext")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_auth: Option<String>,
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
    /// Applied log entries after which a replica persists its database and
    /// trims its log (default 8192).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_entries: Option<u64>,
    /// Log bytes on disk after which the same happens whatever the entry
    /// count (default 67108864 = 64 MiB; 0: no byte limit).
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_bytes: Option<u64>,
    /// Reader threads per group, each with its own read-only connection
    /// (default 4): reads run there, never on the thread that applies the log.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<usize>,
    /// Reads admitted on this node at once, running or queued (default 256);
    /// more are answered 503 with Retry-After.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads_max: Option<usize>,
    /// How long a read may take when the client names no limit (default 5s;
    /// `?timeout=` on HTTP, `statement_timeout` on pg-wire).
    #[arg(long, value_name = "DURATION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_timeout: Option<String>,
    /// Rows one read statement may return (default 1000000).
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_rows_max: Option<usize>,
    /// Bytes one read statement may return, and the largest single value a
    /// read may build (default 67108864 = 64 MiB).
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_bytes_max: Option<usize>,
    /// Data groups (default 1: one group holds the whole database). With N
    /// above 1 the node hosts a metadata group and N data groups; tables
    /// are placed on data groups and split into ranges (docs/sharding.md).
    /// The same on every node, and fixed when the cluster is created.
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<u32>,
    /// Bytes of rows one cross-shard query may gather into memory (default
    /// 268435456 = 256 MiB); more is an error naming this bound.
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gather_bytes_max: Option<usize>,
    /// How `linearizable` reads are made sure of: `read-index` (default: one
    /// round of messages confirms the leader, no log entry) or `barrier` (a
    /// no-op entry through the log per batch of reads).
    #[arg(long, value_name = "read-index|barrier")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linearizable_reads: Option<String>,
    /// Join a running cluster through any member's HTTP address: the node
    /// is added as a member and receives the data by snapshot. --peers then
    /// only needs this node's own address. Ignored once the node has joined.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
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
    pub snapshot_entries: u64,
    pub snapshot_bytes: u64,
    /// Reader threads per group.
    pub readers: usize,
    /// Reads admitted at once.
    pub reads_max: usize,
    /// The default time limit of a read.
    #[serde(with = "humantime_serde_secs")]
    pub read_timeout: std::time::Duration,
    /// What one read statement may return.
    pub result_rows_max: usize,
    /// ... in bytes.
    pub result_bytes_max: usize,
    /// Data groups.
    pub groups: u32,
    /// Bytes one cross-shard query may gather.
    pub gather_bytes_max: usize,
    /// `linearizable` reads by read index (else by barrier entries).
    pub read_index: bool,
    /// A member's HTTP address to join through.
    pub join: Option<String>,
    /// The PostgreSQL listener's address; `None` when off.
    pub pg: Option<String>,
    /// Whether `pg` is the default derived from `http` (a taken port is then
    /// a warning, not an error).
    #[serde(skip)]
    pub pg_derived: bool,
    /// How PostgreSQL clients authenticate (the password is never printed).
    #[serde(skip)]
    pub pg_auth: paxsql_pgwire::Auth,
    /// The SQL engine: `sqlite` or `postgres`.
    pub engine: String,
    /// With `postgres`: the server's URL (not printed: it may hold a password).
    #[serde(skip)]
    pub postgres_url: Option<String>,
}

impl NodeSettings {
    /// The engine the node's replicas run on.
    pub fn engine_choice(&self) -> paxsql_node::EngineChoice {
        match &self.postgres_url {
            Some(url) if self.engine == "postgres" => {
                paxsql_node::EngineChoice::Postgres { url: url.clone() }
            }
            _ => paxsql_node::EngineChoice::Sqlite,
        }
    }
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
        let engine = self.engine.unwrap_or_else(|| "sqlite".into());
        match (engine.as_str(), &self.postgres_url) {
            ("sqlite", None) | ("postgres", Some(_)) => {}
            ("sqlite", Some(_)) => {
                bail!("--postgres-url is only used with --engine postgres")
            }
            ("postgres", None) => bail!(
                "--engine postgres needs --postgres-url (e.g. postgres://USER@HOST:5432/postgres; \
                 the node creates its own database there)"
            ),
            (other, _) => bail!("--engine must be sqlite or postgres, not {other:?}"),
        }
        let snapshot_entries = self.snapshot_entries.unwrap_or(8192);
        if snapshot_entries == 0 {
            bail!("--snapshot-entries must be 1 or more");
        }
        let read_timeout = match self.read_timeout.as_deref() {
            None => std::time::Duration::from_secs(5),
            Some(raw) => humantime::parse_duration(raw)
                .with_context(|| format!("--read-timeout {raw:?}: use e.g. 500ms, 5s, 1m"))?,
        };
        if read_timeout.is_zero() {
            bail!("--read-timeout must be more than 0");
        }
        let positive = |v: Option<usize>, default: usize, flag: &str| match v {
            Some(0) => bail!("{flag} must be 1 or more"),
            v => Ok(v.unwrap_or(default)),
        };
        let readers = positive(self.readers, 4, "--readers")?;
        let reads_max = positive(self.reads_max, 256, "--reads-max")?;
        let result_rows_max = positive(self.result_rows_max, 1_000_000, "--result-rows-max")?;
        let result_bytes_max = positive(self.result_bytes_max, 64 << 20, "--result-bytes-max")?;
        let groups = self.groups.unwrap_or(1);
        if groups == 0 || groups > paxsql_node::GROUPS_MAX {
            bail!(
                "--groups must be between 1 and {}, not {groups}",
                paxsql_node::GROUPS_MAX
            );
        }
        let gather_bytes_max = positive(
            self.gather_bytes_max,
            paxsql_router::GATHER_BYTES_MAX_DEFAULT,
            "--gather-bytes-max",
        )?;
        let read_index = match self.linearizable_reads.as_deref() {
            None | Some("read-index") => true,
            Some("barrier") => false,
            Some(other) => {
                bail!("--linearizable-reads must be read-index or barrier, not {other:?}")
            }
        };
        let http = self.http.unwrap_or_else(|| "127.0.0.1:4001".into());
        let (pg, pg_derived) = match self.pg.as_deref() {
            Some("off") => (None, false),
            Some(addr) if !addr.contains(':') => bail!("--pg: {addr:?} is not HOST:PORT or off"),
            Some(addr) => (Some(addr.to_owned()), false),
            None => (default_pg(&http), true),
        };
        let pg_auth = match (self.pg_password, self.pg_auth.as_deref()) {
            (None, None) => paxsql_pgwire::Auth::Trust,
            (None, Some(_)) => bail!("--pg-auth needs --pg-password"),
            (Some(p), None | Some("md5")) => paxsql_pgwire::Auth::Md5(p),
            (Some(p), Some("cleartext")) => paxsql_pgwire::Auth::Cleartext(p),
            (Some(_), Some(other)) => bail!("--pg-auth must be md5 or cleartext, not {other:?}"),
        };
        Ok(NodeSettings {
            id: NodeId(id),
            peers,
            pg,
            pg_derived,
            pg_auth,
            http,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(format!("paxsql-data/node-{id}"))),
            cluster: self.cluster.unwrap_or_else(|| "paxsql".into()),
            fault_injection: self.fault_injection.unwrap_or(false),
            snapshot_entries,
            snapshot_bytes: self.snapshot_bytes.unwrap_or(64 << 20),
            readers,
            reads_max,
            read_timeout,
            result_rows_max,
            result_bytes_max,
            groups,
            gather_bytes_max,
            read_index,
            join: self.join,
            engine,
            postgres_url: self.postgres_url,
        })
    }
}

/// Durations shown by `--check` as humantime text (`5s`).
mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// The PostgreSQL address when `--pg` is not given: the HTTP port + 200.
fn default_pg(http: &str) -> Option<String> {
    let (host, port) = http.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{host}:{}", port.checked_add(200)?))
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
    fn pg_defaults_to_the_http_port_plus_200_and_can_be_turned_off() {
        let args = |pg: Option<&str>, password: Option<&str>| NodeArgs {
            id: Some(1),
            peers: Some("1=127.0.0.1:1,2=127.0.0.1:2".into()),
            http: Some("127.0.0.1:4001".into()),
            pg: pg.map(Into::into),
            pg_password: password.map(Into::into),
            ..NodeArgs::default()
        };
        let s = args(None, None).check().unwrap();
        assert_eq!(s.pg.as_deref(), Some("127.0.0.1:4201"));
        assert!(s.pg_derived);
        assert_eq!(s.pg_auth, paxsql_pgwire::Auth::Trust);
        let s = args(Some("off"), None).check().unwrap();
        assert_eq!(s.pg, None);
        let s = args(Some("0.0.0.0:5433"), Some("pw")).check().unwrap();
        assert_eq!(s.pg.as_deref(), Some("0.0.0.0:5433"));
        assert!(!s.pg_derived);
        assert_eq!(s.pg_auth, paxsql_pgwire::Auth::Md5("pw".into()));
        assert!(args(Some("5433"), None).check().is_err());
    }

    #[test]
    fn linearizable_reads_go_by_read_index_unless_told_barrier() {
        let args = |mode: Option<&str>| NodeArgs {
            id: Some(1),
            peers: Some("1=127.0.0.1:1".into()),
            linearizable_reads: mode.map(Into::into),
            ..NodeArgs::default()
        };
        assert!(args(None).check().unwrap().read_index);
        assert!(args(Some("read-index")).check().unwrap().read_index);
        assert!(!args(Some("barrier")).check().unwrap().read_index);
        let e = args(Some("fast")).check().unwrap_err().to_string();
        assert!(
            e.contains("--linearizable-reads must be read-index or barrier"),
            "{e}"
        );
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
