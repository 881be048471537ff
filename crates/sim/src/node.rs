//! One simulated node: the real [`Replica`] of each group it hosts, each
//! over a [`CrashFile`] log and a real SQLite file, and what survives the
//! node crashing.
//!
//! A crash is a process crash on a machine that loses its page cache for the
//! log: the replica (OmniPaxos, the engine's connections) is dropped without
//! any further call, the log file keeps its synced bytes plus possibly a
//! torn prefix of the unsynced ones, and the SQLite file keeps what it
//! committed (WAL, `synchronous=NORMAL`: a committed transaction survives a
//! process crash). A restart opens both exactly as `crates/node` does, with a
//! new epoch.
//!
//! A crash may also lose the database file (the SQLite file and its `-wal`
//! and `-shm`), never the log: a log that forgot its promises could elect
//! two leaders, which no replica can guard against. The restarted replica
//! finds an empty database under a log that may be trimmed, and must catch
//! up from its log or from a peer's image.

use paxsql_log::testing::CrashFile;
use paxsql_log::{DurableStorage, LogOptions};
use paxsql_replica::{Broken, Replica, ReplicaConfig, ReplicaStatus};
use paxsql_sql::{SqliteEngine, SqliteOptions};
use paxsql_types::{Entry, GroupId, NodeId};
use std::path::PathBuf;

/// The replica type the simulator runs: production's, over a fake disk.
pub type SimReplica = Replica<SqliteEngine, DurableStorage<Entry, CrashFile>>;

/// One node: a process hosting one replica per group (one group, or a
/// metadata group and data groups), which crash and restart together.
#[derive(Debug)]
pub(crate) struct SimNode {
    pub(crate) id: u64,
    /// One per group, by group id.
    slots: Vec<Slot>,
    nodes: Vec<NodeId>,
    broken: Option<Broken>,
    /// `ReplicaConfig::read_index`.
    pub(crate) read_index: bool,
    /// `ReplicaConfig::snapshot_entries` and `snapshot_chunk_bytes`.
    snapshot_entries: u64,
    snapshot_chunk_bytes: usize,
    /// Runs started so far (1 after the first start).
    pub(crate) runs: u64,
    /// Restart at this tick (while crashed).
    pub(crate) restart_at: u64,
}

/// One group's replica on a node, with its own log and database file.
#[derive(Debug)]
pub(crate) struct Slot {
    /// `None` while crashed.
    pub(crate) replica: Option<SimReplica>,
    /// The log's disk; the replica's storage holds a clone.
    disk: CrashFile,
    db_path: PathBuf,
    /// The status at the end of the last tick of the current run.
    pub(crate) last_status: Option<ReplicaStatus>,
    /// Snapshot counters (trims, installs, images sent) of the runs before
    /// the current one; the replica counts only since its start.
    snapshots_before: SnapshotCounts,
    /// The database was lost at a crash and no image or replay has made it
    /// whole again yet (see [`SimNode::note_status`]).
    pub(crate) database_lost: bool,
}

/// How often replicas trimmed their logs, installed images and sent them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotCounts {
    pub(crate) taken: u64,
    pub(crate) installed: u64,
    pub(crate) sent: u64,
}

impl SnapshotCounts {
    fn of(s: &ReplicaStatus) -> Self {
        SnapshotCounts {
            taken: s.snapshots_taken,
            installed: s.snapshots_installed,
            sent: s.snapshots_sent,
        }
    }

    fn add(self, o: SnapshotCounts) -> Self {
        SnapshotCounts {
            taken: self.taken + o.taken,
            installed: self.installed + o.installed,
            sent: self.sent + o.sent,
        }
    }
}

impl SimNode {
    pub(crate) fn new(
        id: u64,
        nodes: &[u64],
        groups: u32,
        dir: &std::path::Path,
        broken: Option<Broken>,
        snapshot: (u64, usize),
    ) -> Self {
        let slots = (0..groups)
            .map(|g| Slot {
                replica: None,
                disk: CrashFile::new(),
                db_path: match g {
                    0 => dir.join(format!("node-{id}.sqlite")),
                    g => dir.join(format!("node-{id}-group-{g}.sqlite")),
                },
                last_status: None,
                snapshots_before: SnapshotCounts::default(),
                database_lost: false,
            })
            .collect();
        SimNode {
            id,
            slots,
            nodes: nodes.iter().map(|&n| NodeId(n)).collect(),
            broken,
            read_index: true,
            snapshot_entries: snapshot.0,
            snapshot_chunk_bytes: snapshot.1,
            runs: 0,
            restart_at: 0,
        }
    }

    pub(crate) fn alive(&self) -> bool {
        self.slots[0].replica.is_some()
    }

    /// Group `g`'s replica here.
    pub(crate) fn slot(&self, g: u32) -> &Slot {
        &self.slots[g as usize]
    }

    pub(crate) fn slot_mut(&mut self, g: u32) -> &mut Slot {
        &mut self.slots[g as usize]
    }

    /// Opens every group's log and database as they are on disk, as
    /// production does at start.
    pub(crate) fn start(&mut self, epoch: u64) -> Result<(), String> {
        assert!(!self.alive(), "node {} started twice", self.id);
        for (g, slot) in self.slots.iter_mut().enumerate() {
            let group = GroupId(g as u32);
            let mut cfg = ReplicaConfig::new(NodeId(self.id), group, self.nodes.clone(), epoch);
            cfg.broken = self.broken;
            cfg.read_index = self.read_index;
            cfg.snapshot_entries = self.snapshot_entries;
            cfg.snapshot_chunk_bytes = self.snapshot_chunk_bytes;
            let storage =
                DurableStorage::open_with_options(slot.disk.clone(), LogOptions::default())
                    .map_err(|e| format!("group {group}: opening the log: {e}"))?;
            let engine = SqliteEngine::open(&slot.db_path, SqliteOptions::default())
                .map_err(|e| format!("group {group}: opening the database: {e}"))?;
            let replica =
                Replica::open(cfg, storage, engine).map_err(|e| format!("group {group}: {e}"))?;
            slot.replica = Some(replica);
            slot.last_status = None;
        }
        self.runs += 1;
        Ok(())
    }

    /// Bytes written to the logs and not yet synced, per group.
    pub(crate) fn unsynced_bytes(&self) -> Vec<usize> {
        self.slots.iter().map(|s| s.disk.unsynced_len()).collect()
    }

    /// Kills the process: the replicas are dropped, each log keeps its
    /// synced bytes and the first `keep_unsynced[g]` of the rest. With
    /// `lose_database`, the database files go too (the logs never do).
    pub(crate) fn crash(&mut self, keep_unsynced: &[usize], lose_database: bool) {
        assert!(self.alive(), "node {} crashed twice", self.id);
        for (slot, &keep) in self.slots.iter_mut().zip(keep_unsynced) {
            let replica = slot.replica.take().expect("every group runs");
            let status = replica.status();
            slot.snapshots_before = slot.snapshots_before.add(SnapshotCounts::of(&status));
            slot.note_status(&status);
            // Every connection to the database is closed before its files go.
            drop(replica);
            slot.disk.crash(keep);
            if lose_database {
                for suffix in ["", "-wal", "-shm"] {
                    let mut name = slot.db_path.as_os_str().to_owned();
                    name.push(suffix);
                    match std::fs::remove_file(&name) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => panic!("removing {}: {e}", PathBuf::from(name).display()),
                    }
                }
                slot.database_lost = true;
            }
        }
    }

    /// Snapshot counters over every run and group of this node so far.
    pub(crate) fn snapshot_counts(&self) -> SnapshotCounts {
        self.slots
            .iter()
            .map(|s| {
                let current = s
                    .replica
                    .as_ref()
                    .map(|r| SnapshotCounts::of(&r.status()))
                    .unwrap_or_default();
                s.snapshots_before.add(current)
            })
            .fold(SnapshotCounts::default(), SnapshotCounts::add)
    }

    /// Whether every group's database and log together hold every entry it
    /// decided (as of its last noted status). While a node lacks its data,
    /// the entries below its trimmed prefix exist only in the other nodes'
    /// databases.
    pub(crate) fn holds_its_data(&self) -> bool {
        self.slots.iter().all(|s| !s.database_lost)
    }
}

impl Slot {
    /// Takes note of the replica's state: a replica that lost its database
    /// holds its data again once its engine is back at or above its log's
    /// trimmed prefix (by replaying its log, or from an image).
    pub(crate) fn note_status(&mut self, s: &ReplicaStatus) {
        if self.database_lost && s.applied >= s.compacted {
            self.database_lost = false;
        }
    }
}
