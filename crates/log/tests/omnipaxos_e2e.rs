//! Three OmniPaxos replicas over `DurableStorage` on real files decide 100 entries, and the
//! decided entries are all there after reopening the files.

mod common;

use std::path::{Path, PathBuf};

use common::TestEntry;
use omnipaxos::{
    messages::Message, storage::Storage, util::LogEntry, ClusterConfig, OmniPaxos, OmniPaxosConfig,
    ServerConfig,
};
use paxsql_log::{DurableStorage, OsLogFile, SharedStorage};

type Store = SharedStorage<DurableStorage<TestEntry, OsLogFile>>;

const PIDS: [u64; 3] = [1, 2, 3];
const ENTRIES: u64 = 100;
/// Rounds of tick-and-deliver after which the test gives up.
const MAX_ROUNDS: usize = 10_000;

struct Replica {
    paxos: OmniPaxos<TestEntry, Store>,
    /// The same storage OmniPaxos owns, kept to `sync` it.
    storage: Store,
}

fn log_path(dir: &Path, pid: u64) -> PathBuf {
    dir.join(format!("replica-{pid}.log"))
}

fn open_storage(dir: &Path, pid: u64) -> DurableStorage<TestEntry, OsLogFile> {
    DurableStorage::open(OsLogFile::open(log_path(dir, pid)).unwrap()).unwrap()
}

fn start(dir: &Path, pid: u64) -> Replica {
    let config = OmniPaxosConfig {
        cluster_config: ClusterConfig {
            configuration_id: 1,
            nodes: PIDS.to_vec(),
            flexible_quorum: None,
        },
        server_config: ServerConfig {
            pid,
            batch_size: 1,
            ..Default::default()
        },
    };
    let storage = SharedStorage::new(open_storage(dir, pid));
    let paxos = config.build(storage.clone()).unwrap();
    Replica { paxos, storage }
}

/// One round of the replica loop for every replica: tick, sync, only then send. Messages
/// produced in this round are delivered (and handled) before the next round's ticks.
fn round(replicas: &mut [Replica], tick: bool) {
    let mut outbox: Vec<Message<TestEntry>> = Vec::new();
    for r in replicas.iter_mut() {
        if tick {
            r.paxos.tick();
        }
        let mut produced = Vec::new();
        r.paxos.take_outgoing_messages(&mut produced);
        r.storage.lock().sync().unwrap();
        outbox.extend(produced);
    }
    for msg in outbox {
        let to = msg.get_receiver();
        let r = replicas
            .iter_mut()
            .find(|r| r.paxos.get_pid() == to)
            .unwrap();
        r.paxos.handle_incoming(msg);
    }
}

fn run_until(replicas: &mut [Replica], what: &str, done: impl Fn(&[Replica]) -> bool) {
    for _ in 0..MAX_ROUNDS {
        if done(replicas) {
            return;
        }
        round(replicas, true);
    }
    panic!("gave up waiting for {what}");
}

fn leader(replicas: &[Replica]) -> Option<u64> {
    let views: Vec<_> = replicas
        .iter()
        .map(|r| r.paxos.get_current_leader())
        .collect();
    match views[0] {
        Some((pid, _)) if views.iter().all(|v| v.map(|(p, _)| p) == Some(pid)) => {
            let l = replicas.iter().find(|r| r.paxos.get_pid() == pid)?;
            matches!(l.paxos.get_current_leader(), Some((_, true))).then_some(pid)
        }
        _ => None,
    }
}

fn decided_ids(paxos: &OmniPaxos<TestEntry, Store>) -> Vec<u64> {
    paxos
        .read_decided_suffix(0)
        .unwrap_or_default()
        .into_iter()
        .map(|e| match e {
            LogEntry::Decided(e) => e.id,
            other => panic!("unexpected log entry {other:?}"),
        })
        .collect()
}

#[test]
fn three_replicas_decide_100_entries_that_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut replicas: Vec<Replica> = PIDS.iter().map(|&pid| start(dir.path(), pid)).collect();

    run_until(&mut replicas, "a leader", |rs| leader(rs).is_some());
    let leader_pid = leader(&replicas).unwrap();
    let leader_at = replicas
        .iter()
        .position(|r| r.paxos.get_pid() == leader_pid)
        .unwrap();
    for id in 0..ENTRIES {
        replicas[leader_at]
            .paxos
            .append(TestEntry::new(id))
            .unwrap_or_else(|_| panic!("leader refused entry {id}"));
        round(&mut replicas, false);
    }
    run_until(&mut replicas, "all entries decided everywhere", |rs| {
        rs.iter()
            .all(|r| r.paxos.get_decided_idx() == ENTRIES as usize)
    });
    let expected: Vec<u64> = (0..ENTRIES).collect();
    for r in &replicas {
        assert_eq!(
            decided_ids(&r.paxos),
            expected,
            "replica {}",
            r.paxos.get_pid()
        );
    }

    drop(replicas);
    for pid in PIDS {
        let storage = open_storage(dir.path(), pid);
        assert_eq!(
            storage.get_decided_idx().unwrap(),
            ENTRIES as usize,
            "replica {pid}"
        );
        let ids: Vec<u64> = storage
            .get_entries(0, ENTRIES as usize)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, expected, "replica {pid} after reopen");
        assert!(storage.get_promise().unwrap().is_some());
    }
    // OmniPaxos itself recovers the decided log from the reopened files.
    let restarted = start(dir.path(), 1);
    assert_eq!(decided_ids(&restarted.paxos), expected);
}
