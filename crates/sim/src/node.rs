//! One simulated node: the real [`Replica`] over a [`CrashFile`] log and a
//! real SQLite file, and what survives it crashing.
//!
//! A crash is a process crash on a machine that loses its page cache for the
//! log: the replica (OmniPaxos, the engine's connections) is dropped without
//! any further call, the log file keeps its synced bytes plus possibly a
//! torn prefix of the unsynced ones, and the SQLite file keeps what it
//! committed (WAL, `synchronous=NORMAL`: a committed transaction survives a
//! process crash). A restart opens both exactly as `crates/node` does, with a
//! new epoch.

use paxsql_log::testing::CrashFile;
use paxsql_log::{DurableStorage, LogOptions};
use paxsql_replica::{Broken, Replica, ReplicaConfig, ReplicaStatus};
use paxsql_sql::{SqliteEngine, SqliteOptions};
use paxsql_types::{Entry, GroupId, NodeId};
use std::path::PathBuf;

/// The replica type the simulator runs: production's, over a fake disk.
pub type SimReplica = Replica<SqliteEngine, DurableStorage<Entry, CrashFile>>;

#[derive(Debug)]
pub(crate) struct SimNode {
    pub(crate) id: u64,
    /// `None` while crashed.
    pub(crate) replica: Option<SimReplica>,
    /// The log's disk; the replica's storage holds a clone.
    disk: CrashFile,
    db_path: PathBuf,
    nodes: Vec<NodeId>,
    broken: Option<Broken>,
    /// Runs started so far (1 after the first start).
    pub(crate) runs: u64,
    /// Restart at this tick (while crashed).
    pub(crate) restart_at: u64,
    /// The status at the end of the last tick of the current run.
    pub(crate) last_status: Option<ReplicaStatus>,
}

impl SimNode {
    pub(crate) fn new(
        id: u64,
        nodes: &[u64],
        dir: &std::path::Path,
        broken: Option<Broken>,
    ) -> Self {
        SimNode {
            id,
            replica: None,
            disk: CrashFile::new(),
            db_path: dir.join(format!("node-{id}.sqlite")),
            nodes: nodes.iter().map(|&n| NodeId(n)).collect(),
            broken,
            runs: 0,
            restart_at: 0,
            last_status: None,
        }
    }

    pub(crate) fn alive(&self) -> bool {
        self.replica.is_some()
    }

    /// Opens the log and the database as they are on disk, as production
    /// does at start.
    pub(crate) fn start(&mut self, epoch: u64) -> Result<(), String> {
        assert!(self.replica.is_none(), "node {} started twice", self.id);
        let mut cfg = ReplicaConfig::new(NodeId(self.id), GroupId(0), self.nodes.clone(), epoch);
        cfg.broken = self.broken;
        let storage = DurableStorage::open_with_options(self.disk.clone(), LogOptions::default())
            .map_err(|e| format!("opening the log: {e}"))?;
        let engine = SqliteEngine::open(&self.db_path, SqliteOptions::default())
            .map_err(|e| format!("opening the database: {e}"))?;
        let replica = Replica::open(cfg, storage, engine).map_err(|e| e.to_string())?;
        self.replica = Some(replica);
        self.runs += 1;
        self.last_status = None;
        Ok(())
    }

    /// Bytes written to the log and not yet synced.
    pub(crate) fn unsynced_bytes(&self) -> usize {
        self.disk.unsynced_len()
    }

    /// Kills the process: the replica is dropped, the log keeps its synced
    /// bytes and the first `keep_unsynced` of the rest.
    pub(crate) fn crash(&mut self, keep_unsynced: usize) {
        let replica = self.replica.take();
        assert!(replica.is_some(), "node {} crashed twice", self.id);
        drop(replica);
        self.disk.crash(keep_unsynced);
    }
}
