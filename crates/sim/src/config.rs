//! What a run is asked to do ([`SimConfig`], from the command line) and what
//! its seed then chooses ([`Params`]: cluster size, load, fault mix).

use crate::rng::SimRng;
use crate::trace::TraceLevel;
use paxsql_replica::Broken;

/// One run: everything that, with the seed, determines it exactly.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds the whole run.
    pub seed: u64,
    /// Ticks (10 ms each in production terms) of client load with faults,
    /// after the tables are created and before the final heal.
    pub ticks: u64,
    /// Cluster size; `None` lets the seed choose (3, or 5 one time in five).
    pub nodes: Option<usize>,
    /// A deliberately broken replica mode, to prove the checks can fail.
    pub broken: Option<Broken>,
    /// Inject faults (crashes, partitions, session loss, slow links).
    pub faults: bool,
    /// Ticks the heal phase may take before the run counts as stuck.
    pub heal_ticks_max: u64,
    /// Applied entries above the trimmed prefix that make a replica persist
    /// its database and trim its log; `None` lets the seed choose (5..=40).
    pub snapshot_entries: Option<u64>,
    /// Percent of writes that are runaways (an endless statement only the
    /// statement budget ends); 0: none, and the seed's schedule is the one
    /// it had before runaways existed.
    pub runaways_percent: u8,
    /// Data groups: `None` runs one group holding everything; `Some(n)`
    /// runs a metadata group and `n` data groups, the `kv` table split and
    /// moved between them while it is written (a sharded run).
    pub groups: Option<u32>,
    /// A deliberately broken router (sharded runs): writes carry no claim
    /// of their range, to prove the checks catch a write that lands on a
    /// group that no longer owns its key.
    pub unclaimed_writes: bool,
    /// Isolate faults cut off the node group 0's replicas believe leads
    /// (otherwise a node at random): a leader deposed without noticing, as
    /// often as the seed isolates anyone.
    pub isolate_leaders: bool,
    /// `linearizable` reads by barrier entries only (the fallback path),
    /// not by read index.
    pub barrier_reads: bool,
    /// How much of the run to write down.
    pub trace: TraceLevel,
}

impl SimConfig {
    /// A run of `seed` with the defaults the CI uses.
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            ticks: 400,
            nodes: None,
            broken: None,
            faults: true,
            heal_ticks_max: 3000,
            snapshot_entries: None,
            runaways_percent: 0,
            groups: None,
            unclaimed_writes: false,
            isolate_leaders: false,
            barrier_reads: false,
            trace: TraceLevel::Off,
        }
    }

    /// The one command that replays this run with its trace.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run -p paxsql-sim --release -- --seed {} --ticks {}",
            self.seed, self.ticks
        );
        if let Some(n) = self.nodes {
            cmd.push_str(&format!(" --nodes {n}"));
        }
        if let Some(b) = self.broken {
            cmd.push_str(&format!(" --broken {}", broken_name(b)));
        }
        if !self.faults {
            cmd.push_str(" --no-faults");
        }
        if self.heal_ticks_max != SimConfig::new(0).heal_ticks_max {
            cmd.push_str(&format!(" --heal-ticks {}", self.heal_ticks_max));
        }
        if let Some(n) = self.snapshot_entries {
            cmd.push_str(&format!(" --snapshot-entries {n}"));
        }
        if self.runaways_percent > 0 {
            cmd.push_str(&format!(" --runaways {}", self.runaways_percent));
        }
        if let Some(g) = self.groups {
            cmd.push_str(&format!(" --groups {g}"));
        }
        if self.unclaimed_writes {
            cmd.push_str(" --unclaimed-writes");
        }
        if self.isolate_leaders {
            cmd.push_str(" --isolate-leaders");
        }
        if self.barrier_reads {
            cmd.push_str(" --barrier-reads");
        }
        cmd.push_str(" --trace");
        cmd
    }
}

/// The command-line name of a broken mode.
pub fn broken_name(b: Broken) -> &'static str {
    match b {
        Broken::ReadsWithoutBarrier => "reads-without-barrier",
        Broken::SendBeforeSync => "send-before-sync",
        Broken::ReadIndexWithoutQuorum => "read-index-without-quorum",
    }
}

/// Parses a broken mode's command-line name.
pub fn parse_broken(s: &str) -> Result<Broken, String> {
    match s {
        "reads-without-barrier" => Ok(Broken::ReadsWithoutBarrier),
        "send-before-sync" => Ok(Broken::SendBeforeSync),
        "read-index-without-quorum" => Ok(Broken::ReadIndexWithoutQuorum),
        other => Err(format!(
            "unknown broken mode {other:?}: use reads-without-barrier, send-before-sync or \
             read-index-without-quorum"
        )),
    }
}

/// The kinds of fault the injector can choose from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    /// One directed session breaks; what was in flight on it is lost.
    SessionLoss,
    /// A node is cut off from every other, both ways.
    Isolate,
    /// The nodes split in two groups (a majority and a minority).
    Split,
    /// Some links carry messages one way only.
    OneWay,
    /// Two groups that only a bridge node connects.
    Bridge,
    /// A node crashes, losing unsynced log bytes, and restarts later.
    Crash,
    /// Every node crashes at once (a power loss), then all restart.
    CrashAll,
    /// A link becomes slow for a while (still in order).
    SlowLink,
    /// A node crashes and comes back without its database file (the SQLite
    /// file and its `-wal`/`-shm` are gone; the log is kept): it must catch
    /// up from its log or, below its trimmed prefix, from a peer's image.
    LoseDatabase,
}

pub(crate) const FAULT_KINDS: [FaultKind; 9] = [
    FaultKind::SessionLoss,
    FaultKind::Isolate,
    FaultKind::Split,
    FaultKind::OneWay,
    FaultKind::Bridge,
    FaultKind::Crash,
    FaultKind::CrashAll,
    FaultKind::SlowLink,
    FaultKind::LoseDatabase,
];

/// What the seed chose for this run (swarm testing: each seed gets its own
/// load and its own fault mix, which finds more than one fixed mix).
#[derive(Clone, Debug)]
pub struct Params {
    /// Cluster size.
    pub nodes: usize,
    /// Simulated clients, each with one operation at a time.
    pub clients: usize,
    /// Keys of the register table (1..=keys).
    pub keys: i64,
    /// Most ticks a client waits between two operations.
    pub think_ticks_max: u64,
    /// Share of operations that are writes.
    pub write_ratio: f64,
    /// Ticks a client waits for one attempt before giving up on it.
    pub client_timeout_ticks: u64,
    /// Attempts per write (retries carry the same request id).
    pub write_attempts_max: u32,
    /// One-way message delay is 1..=delay_ticks_max ticks.
    pub delay_ticks_max: u64,
    /// Mean ticks between two injected faults.
    pub fault_every_ticks: u64,
    /// Fault kinds this seed may inject, with their weights.
    pub(crate) fault_weights: Vec<(FaultKind, u64)>,
    /// `ReplicaConfig::snapshot_entries`: small, so that logs are trimmed
    /// many times a run and replicas cut off for a while come back behind a
    /// peer's trimmed prefix and catch up by snapshot.
    pub snapshot_entries: u64,
    /// `ReplicaConfig::snapshot_chunk_bytes`: small, so that an image takes
    /// several chunks (and a transfer can be cut in the middle).
    pub snapshot_chunk_bytes: usize,
    /// Sharded runs: mean ticks between two shard map changes (a split or
    /// a relocation starts when none is in flight).
    pub map_change_every_ticks: u64,
}

impl Params {
    pub(crate) fn draw(cfg: &SimConfig, rng: &mut SimRng) -> Params {
        let nodes = cfg.nodes.unwrap_or(if rng.chance(0.2) { 5 } else { 3 });
        let clients = rng.between(2, 5) as usize;
        let keys = rng.between(1, 4) as i64;
        let think_ticks_max = rng.between(0, 8);
        let write_ratio = 0.3 + rng.below(5) as f64 * 0.1;
        let client_timeout_ticks = rng.between(60, 400);
        let write_attempts_max = rng.between(1, 4) as u32;
        let delay_ticks_max = rng.between(1, 4);
        let fault_every_ticks = rng.between(10, 60);
        let mut fault_weights = Vec::new();
        for kind in FAULT_KINDS {
            if rng.chance(0.75) {
                let weight = match kind {
                    FaultKind::CrashAll | FaultKind::Bridge => 1,
                    FaultKind::Crash | FaultKind::SessionLoss => 4,
                    _ => 2,
                };
                fault_weights.push((kind, weight));
            }
        }
        if fault_weights.is_empty() {
            fault_weights.push((FaultKind::Crash, 1));
        }
        let snapshot_entries = rng.between(5, 40);
        let snapshot_entries = cfg.snapshot_entries.unwrap_or(snapshot_entries);
        let snapshot_chunk_bytes = rng.between(1, 4) as usize * 1024;
        // Drawn after everything else, so that a seed's other choices are
        // the same whether or not the run is sharded.
        let (keys, map_change_every_ticks) = match cfg.groups {
            None => (keys, 0),
            Some(_) => (rng.between(4, 10) as i64, rng.between(10, 60)),
        };
        Params {
            nodes,
            clients,
            keys,
            think_ticks_max,
            write_ratio,
            client_timeout_ticks,
            write_attempts_max,
            delay_ticks_max,
            fault_every_ticks,
            fault_weights,
            snapshot_entries,
            snapshot_chunk_bytes,
            map_change_every_ticks,
        }
    }

    pub(crate) fn pick_fault(&self, rng: &mut SimRng) -> FaultKind {
        let total: u64 = self.fault_weights.iter().map(|(_, w)| w).sum();
        let mut x = rng.below(total);
        for (kind, w) in &self.fault_weights {
            if x < *w {
                return *kind;
            }
            x -= w;
        }
        unreachable!("weights sum to total")
    }
}
