//! Starting a node: the data dir claimed, every group's log and database
//! opened on the thread that owns them, the peer port bound, the tasks
//! started.

use crate::group::{GroupInput, GroupLoop, Health};
use crate::status::{initial_status, report_loop};
use crate::transport::{self, Inbox, Links};
use crate::*;

/// Starts a node: opens every group's log and database, binds the peer
/// port, and starts the threads and tasks. Must run inside a tokio runtime.
pub async fn start(mut cfg: NodeConfig) -> Result<NodeHandle, StartError> {
    if !cfg.peers.contains_key(&cfg.id) {
        return Err(StartError::NotAPeer(cfg.id));
    }
    let members: Vec<NodeId> = cfg.peers.keys().copied().collect();
    datadir::claim(&cfg.data_dir, cfg.id, &cfg.cluster, &members)?;
    // After a membership change (or a join) the members are the stored
    // ones, not `--peers`.
    let group0 = cfg.data_dir.join("group-0");
    let stored = membership::load(&group0).map_err(|reason| StartError::Open {
        group: GroupId(0),
        reason,
    })?;
    if let Some(m) = stored {
        for (id, addr) in m.peers {
            cfg.peers.insert(id, addr);
        }
    }
    if cfg.peers.len() < 2 {
        return Err(StartError::TooFewNodes(cfg.peers.len()));
    }
    let group_ids = group_ids(cfg.groups);
    check_groups(&cfg, &group_ids)?;
    let addr = cfg.peers[&cfg.id].clone();
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let epoch: u64 = rand::random();

    let mut senders = BTreeMap::new();
    let mut receivers = Vec::new();
    for &g in &group_ids {
        let (tx, rx) = sync_channel(cfg.queue_max);
        senders.insert(g, tx);
        receivers.push((g, rx));
    }
    let inbox = Inbox {
        groups: Arc::new(senders.clone()),
    };
    let links = transport::start_links(cfg.id, &cfg.cluster, &cfg.peers, inbox.clone());

    let mut groups = BTreeMap::new();
    for (g, rx) in receivers {
        let status = Arc::new(Mutex::new(initial_status(cfg.id, g)));
        let health = Arc::new(Health::default());
        let shared = (Arc::clone(&status), Arc::clone(&health));
        spawn_group(&cfg, g, epoch, rx, Arc::clone(&links), shared)?;
        groups.insert(
            g,
            GroupHandle {
                tx: senders[&g].clone(),
                status,
                health,
            },
        );
    }
    // Group 0 first: it is the one reported in full.
    let watched = groups
        .values()
        .map(|g| (Arc::clone(&g.status), g.tx.clone()))
        .collect();
    tokio::spawn(report_loop(Arc::clone(&links), watched));
    tokio::spawn(transport::accept_loop(
        listener,
        cfg.cluster.clone(),
        inbox,
        Arc::clone(&links),
    ));
    let cfg_reads_max = cfg.reads_max.max(1);
    let admission = Admission::open(&cfg)?;
    Ok(NodeHandle {
        inner: Arc::new(Inner {
            cfg,
            epoch,
            next_request: AtomicU64::new(0),
            groups,
            links,
            read_permits: Arc::new(tokio::sync::Semaphore::new(cfg_reads_max)),
            admission,
        }),
    })
}

/// The groups a node with `data_groups` data groups hosts: group 0 alone,
/// or the metadata group 0 and data groups 1..=N.
pub(crate) fn group_ids(data_groups: u32) -> Vec<GroupId> {
    match data_groups {
        0 | 1 => vec![GroupId(0)],
        n => (0..=n).map(GroupId).collect(),
    }
}

/// Refuses a `--groups` the engine or the data dir cannot take.
pub(crate) fn check_groups(cfg: &NodeConfig, ids: &[GroupId]) -> Result<(), StartError> {
    if cfg.groups == 0 || cfg.groups > GROUPS_MAX {
        return Err(StartError::Groups(format!(
            "--groups must be between 1 and {GROUPS_MAX}, not {}",
            cfg.groups
        )));
    }
    if cfg.groups > 1 && matches!(cfg.engine, EngineChoice::Postgres { .. }) {
        return Err(StartError::Groups(
            "sharding (--groups above 1) needs the SQLite engine for now".into(),
        ));
    }
    let on_disk = (0..=GROUPS_MAX + 1)
        .take_while(|g| cfg.data_dir.join(format!("group-{g}")).is_dir())
        .count();
    if on_disk > 0 && on_disk != ids.len() {
        let had = if on_disk == 1 { 1 } else { on_disk - 1 };
        return Err(StartError::Groups(format!(
            "data dir {} holds {had} data group(s); start it with --groups {had} (the number of groups is fixed when a cluster is created)",
            cfg.data_dir.display()
        )));
    }
    Ok(())
}

/// How much slower the clocks of a sharded node's groups tick: many idle
/// groups must not keep the node busy with timers and heartbeats.
pub const SHARDED_TICK_SCALE: u32 = 5;

/// Slows a group's clock by [`SHARDED_TICK_SCALE`]: the tick is longer,
/// and every timer but the election's keeps its length in time. Elections
/// (and the heartbeats between them) come every 500 ms instead of 100 ms,
/// five times fewer messages, at the price of a slower failover.
pub(crate) fn slow_clock(rcfg: &mut ReplicaConfig, tick: Duration) -> Duration {
    let scale = u64::from(SHARDED_TICK_SCALE);
    let keep = |ticks: u64| ticks.div_ceil(scale).max(1);
    rcfg.resend_ticks = keep(rcfg.resend_ticks);
    rcfg.retry_ticks = keep(rcfg.retry_ticks);
    rcfg.request_timeout_ticks = keep(rcfg.request_timeout_ticks);
    rcfg.progress_ticks = keep(rcfg.progress_ticks);
    tick * SHARDED_TICK_SCALE
}

/// Data groups a node hosts at most.
pub const GROUPS_MAX: u32 = 64;

/// The node that should lead `group`: data group g prefers the g-th
/// member (round robin), so leaders spread over the nodes; group 0 of a
/// sharded node prefers the last member, which leads the fewest data groups.
pub(crate) fn preferred_leader(
    group: GroupId,
    members: &[NodeId],
    data_groups: u32,
) -> Option<NodeId> {
    if data_groups <= 1 || members.is_empty() {
        return None;
    }
    let n = members.len();
    let at = match group.0 {
        0 => n - 1,
        g => (g as usize - 1) % n,
    };
    Some(members[at])
}

/// Opens a group's files and starts the thread that owns them. Opening
/// happens on that thread too, and the first error comes back here.
pub(crate) fn spawn_group(
    cfg: &NodeConfig,
    group: GroupId,
    epoch: u64,
    inputs: std::sync::mpsc::Receiver<GroupInput>,
    links: Arc<Links>,
    (status, health): (Arc<Mutex<ReplicaStatus>>, Arc<Health>),
) -> Result<(), StartError> {
    let dir = cfg.data_dir.join(format!("group-{}", group.0));
    let mut rcfg = ReplicaConfig::new(cfg.id, group, cfg.peers.keys().copied().collect(), epoch);
    rcfg.read_index = cfg.read_index;
    let stored = membership::load(&dir).map_err(|reason| StartError::Open { group, reason })?;
    if let Some(m) = &stored {
        if !m.peers.contains_key(&cfg.id) {
            let reason = format!(
                "node {} was removed from the cluster (configuration {}); to add it again, \
                 start it with an empty --data-dir and --join",
                cfg.id, m.config_id
            );
            return Err(StartError::Open { group, reason });
        }
        let m = m.to_membership();
        rcfg.nodes = m.nodes;
        rcfg.config_id = m.config_id;
        rcfg.base = m.base.0;
        rcfg.metadata = m.metadata;
    }
    if preferred_leader(group, &rcfg.nodes, cfg.groups) == Some(cfg.id) {
        rcfg.leader_priority = 1;
    }
    rcfg.snapshot_entries = cfg.snapshot_entries.max(1);
    rcfg.snapshot_bytes = cfg.snapshot_bytes;
    let log_options = LogOptions {
        // Trimmed records are dropped when the file is rewritten.
        compact_min_bytes: match cfg.snapshot_bytes {
            0 => LogOptions::default().compact_min_bytes,
            b => (b / 2).max(1 << 16),
        },
        ..LogOptions::default()
    };
    let tick = match cfg.groups {
        0 | 1 => cfg.tick,
        _ => slow_clock(&mut rcfg, cfg.tick),
    };
    let engine = cfg.engine.clone();
    let cluster = cfg.cluster.clone();
    let (readers, reads_max, read_limits) = (cfg.readers, cfg.reads_max, cfg.read_limits);
    let peer_read_timeout = cfg.read_timeout;
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("group-{}", group.0))
        .spawn(move || {
            let config_id = rcfg.config_id;
            let opened =
                open_replica(&dir, rcfg, log_options, &engine, &cluster).and_then(|mut r| {
                    let pool = readers::Readers::start(
                        r.engine_mut(),
                        readers,
                        reads_max,
                        read_limits,
                        group,
                        Arc::clone(&links),
                    )?;
                    Ok((r, pool))
                });
            let (replica, readers) = match opened {
                Ok(r) => {
                    let _ = opened_tx.send(Ok(()));
                    r
                }
                Err(reason) => {
                    let _ = opened_tx.send(Err(reason));
                    return;
                }
            };
            let mut current = config_id;
            let next_config = Box::new(move |m: &paxsql_replica::Membership| {
                let stored = membership::StoredMembership::from_membership(m)?;
                membership::save(&dir, &stored).map_err(|e| format!("{}: {e}", dir.display()))?;
                let path = membership::log_path(&dir, m.config_id);
                let _ = std::fs::remove_file(&path);
                let storage = open_log(&path, log_options)?;
                let _ = std::fs::remove_file(membership::log_path(&dir, current));
                current = m.config_id;
                Ok(storage)
            });
            let watch = Arc::clone(&health);
            let group_loop = GroupLoop {
                group,
                replica,
                inputs,
                links,
                status,
                health,
                readers,
                peer_read_timeout,
                tick,
                next_config,
            };
            // A panic is a bug, but it must not leave the group silently
            // dead: it is recorded as the group's failure, which /status,
            // /readyz and every later request report.
            let run = std::panic::AssertUnwindSafe(|| group_loop.run());
            if let Err(panic) = std::panic::catch_unwind(run) {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                tracing::error!(group = group.0, %what, "the group thread panicked; this group stops on this node");
                metrics::record_group_failed(group);
                watch.fail(format!("the group thread panicked: {what}"));
            }
        })
        .map_err(|e| StartError::Open {
            group,
            reason: e.to_string(),
        })?;
    opened_rx
        .recv()
        .unwrap_or_else(|_| Err("group thread died while opening".into()))
        .map_err(|reason| StartError::Open { group, reason })
}

type NodeLog = DurableStorage<paxsql_types::Entry, OsLogFile>;

type NodeReplica = Replica<Box<dyn SqlEngine + Send>, NodeLog>;

pub(crate) fn open_replica(
    dir: &std::path::Path,
    rcfg: ReplicaConfig,
    log_options: LogOptions,
    engine: &EngineChoice,
    cluster: &str,
) -> Result<NodeReplica, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let storage = open_log(&membership::log_path(dir, rcfg.config_id), log_options)?;
    let engine = engine.open(dir, cluster, &rcfg)?;
    Replica::open(rcfg, storage, engine).map_err(|e| e.to_string())
}

pub(crate) fn open_log(path: &std::path::Path, options: LogOptions) -> Result<NodeLog, String> {
    let file = OsLogFile::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    DurableStorage::open_with_options(file, options).map_err(|e| format!("{}: {e}", path.display()))
}
