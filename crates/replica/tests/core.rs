//! The replica core without sockets or threads: three replicas in one
//! thread, messages carried by hand, time advanced tick by tick. Covers the
//! apply loop, request-id deduplication and read barriers.

use paxsql_log::MemoryStorage;
use paxsql_replica::{ClientRequest, Membership, Output, PeerMsg, Replica, ReplicaConfig, Role};
use paxsql_sql::{SqlEngine, SqliteEngine, SqliteOptions};
use paxsql_types::{
    ApplyEnv, Entry, GroupId, NodeId, ReadLevel, RequestError, RequestId, Response, Statement,
    StmtResult, Value,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

type R = Replica<SqliteEngine, MemoryStorage<Entry>>;

struct Net {
    replicas: BTreeMap<u64, R>,
    /// In flight, per (from, to) link, in order.
    links: BTreeMap<(u64, u64), VecDeque<PeerMsg>>,
    answers: BTreeMap<u64, Result<Response, RequestError>>,
    /// Nodes cut off from everyone.
    isolated: BTreeSet<u64>,
    /// Drop every `Forward` (as a lost ProposalForward would be).
    drop_forwards: bool,
    next_token: u64,
    /// The last configuration each node started.
    memberships: BTreeMap<u64, Membership>,
    dir: tempfile::TempDir,
}

impl Net {
    fn new(n: u64) -> Net {
        Net::with_config(n, |_| {})
    }

    fn with_config(n: u64, tune: impl Fn(&mut ReplicaConfig)) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let replicas = (1..=n)
            .map(|id| {
                let mut cfg = ReplicaConfig::new(NodeId(id), GroupId(0), nodes.clone(), 1000 + id);
                tune(&mut cfg);
                let engine = SqliteEngine::open(
                    &dir.path().join(format!("{id}.db")),
                    SqliteOptions::default(),
                )
                .unwrap();
                (
                    id,
                    Replica::open(cfg, MemoryStorage::new(), engine).unwrap(),
                )
            })
            .collect();
        Net {
            replicas,
            links: BTreeMap::new(),
            answers: BTreeMap::new(),
            isolated: BTreeSet::new(),
            drop_forwards: false,
            next_token: 0,
            memberships: BTreeMap::new(),
            dir,
        }
    }

    /// One round: deliver everything in flight, tick everyone, poll everyone.
    fn step(&mut self) {
        let in_flight = std::mem::take(&mut self.links);
        for ((from, to), msgs) in in_flight {
            // A node not started yet loses what is sent to it.
            let Some(r) = self.replicas.get_mut(&to) else {
                continue;
            };
            for msg in msgs {
                r.receive(NodeId(from), msg).unwrap();
            }
        }
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            let r = self.replicas.get_mut(&id).unwrap();
            r.tick();
            let mut outputs: std::collections::VecDeque<Output> = r.poll().unwrap().into();
            while let Some(out) = outputs.pop_front() {
                match out {
                    Output::Read { to, stmts } => {
                        let r = self.replicas.get_mut(&id).unwrap();
                        outputs.push_front(r.answer_read(to, &stmts));
                    }
                    Output::Send { to, msg } => {
                        let cut = self.isolated.contains(&id) || self.isolated.contains(&to.0);
                        let lost = self.drop_forwards && matches!(msg, PeerMsg::Forward(_));
                        if !cut && !lost {
                            self.links.entry((id, to.0)).or_default().push_back(msg);
                        }
                    }
                    Output::Reply { token, result } => {
                        self.answers.insert(token, result);
                    }
                    Output::Reconfigured(m) => {
                        let r = self.replicas.get_mut(&id).unwrap();
                        r.start_config(&m, MemoryStorage::new()).unwrap();
                        self.memberships.insert(id, m);
                    }
                }
            }
        }
    }

    fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.step();
        }
    }

    fn leader(&mut self) -> u64 {
        for _ in 0..1000 {
            let leader = self
                .replicas
                .values()
                .map(|r| r.status())
                .find(|s| s.role == Role::Leader && !self.isolated.contains(&s.node.0));
            if let Some(s) = leader {
                return s.node.0;
            }
            self.step();
        }
        panic!("no leader elected");
    }

    fn submit(&mut self, at: u64, req: ClientRequest) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.replicas.get_mut(&at).unwrap().submit(token, req);
        token
    }

    /// Runs until `token` is answered (or `steps` pass).
    fn await_answer(&mut self, token: u64, steps: usize) -> Option<Result<Response, RequestError>> {
        for _ in 0..steps {
            if let Some(a) = self.answers.remove(&token) {
                return Some(a);
            }
            self.step();
        }
        self.answers.remove(&token)
    }

    fn write(&mut self, at: u64, id: &str, sql: &str) -> Result<Response, RequestError> {
        let token = self.submit(at, write_req(id, sql));
        self.await_answer(token, 2000).expect("answered")
    }

    fn read(
        &mut self,
        at: u64,
        sql: &str,
        level: ReadLevel,
    ) -> Option<Result<Response, RequestError>> {
        let token = self.submit(
            at,
            ClientRequest::Read {
                stmts: vec![Statement::new(sql)],
                level,
            },
        );
        self.await_answer(token, 2000)
    }
}

fn write_req(id: &str, sql: &str) -> ClientRequest {
    ClientRequest::Write {
        id: RequestId(id.into()),
        stmts: vec![Statement::new(sql)],
        transaction: false,
        env: ApplyEnv {
            unix_ms: 1_700_000_000_000,
            seed: 7,
        },
    }
}

fn scalar(r: &Result<Response, RequestError>) -> Value {
    match &r.as_ref().expect("ok").results[0] {
        StmtResult::Rows { values, .. } => values[0][0].clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_write_at_a_follower_is_applied_everywhere_and_answered_there() {
    let mut net = Net::new(3);
    let leader = net.leader();
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    net.write(follower, "c", "CREATE TABLE t (v)").unwrap();
    let r = net
        .write(follower, "w", "INSERT INTO t VALUES (1)")
        .unwrap();
    assert_eq!(
        r.results,
        vec![StmtResult::Exec {
            last_insert_id: 1,
            rows_affected: 1
        }]
    );
    net.run(20);
    let hashes: BTreeSet<u64> = net
        .replicas
        .values_mut()
        .map(|r| r.engine_mut().state_hash().unwrap())
        .collect();
    assert_eq!(hashes.len(), 1, "replicas differ");
    let applied: BTreeSet<_> = net.replicas.values().map(|r| r.status().applied).collect();
    assert_eq!(applied.len(), 1, "replicas applied different prefixes");
}

#[test]
fn a_request_id_is_applied_once_even_when_sent_to_every_node() {
    let mut net = Net::new(3);
    net.leader();
    net.write(1, "c", "CREATE TABLE t (v)").unwrap();
    let tokens: Vec<u64> = (1..=3)
        .map(|at| net.submit(at, write_req("same", "INSERT INTO t VALUES (1)")))
        .collect();
    let answers: Vec<_> = tokens
        .iter()
        .map(|&t| net.await_answer(t, 2000).unwrap().unwrap().results)
        .collect();
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    let n = net
        .read(2, "SELECT count(*) FROM t", ReadLevel::Linearizable)
        .unwrap();
    assert_eq!(scalar(&n), Value::Integer(1));
    // Submitted again after completion: answered from the table, not applied.
    net.write(3, "same", "INSERT INTO t VALUES (1)").unwrap();
    let n = net
        .read(1, "SELECT count(*) FROM t", ReadLevel::Linearizable)
        .unwrap();
    assert_eq!(scalar(&n), Value::Integer(1));
}

#[test]
fn lost_forwards_are_retried_until_applied() {
    let mut net = Net::new(3);
    let leader = net.leader();
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    net.write(leader, "c", "CREATE TABLE t (v)").unwrap();
    net.drop_forwards = true;
    let token = net.submit(follower, write_req("w", "INSERT INTO t VALUES (1)"));
    assert!(
        net.await_answer(token, 100).is_none(),
        "answered without its forward"
    );
    net.drop_forwards = false;
    let r = net
        .await_answer(token, 2000)
        .expect("answered after the retry");
    assert!(r.is_ok(), "{r:?}");
    let n = net
        .read(follower, "SELECT count(*) FROM t", ReadLevel::Linearizable)
        .unwrap();
    assert_eq!(scalar(&n), Value::Integer(1), "applied exactly once");
}

#[test]
fn a_linearizable_read_at_a_follower_sees_the_latest_acknowledged_write() {
    let mut net = Net::new(3);
    let leader = net.leader();
    net.write(leader, "c", "CREATE TABLE t (v)").unwrap();
    for i in 0..10 {
        net.write(
            leader,
            &format!("w{i}"),
            &format!("INSERT INTO t VALUES ({i})"),
        )
        .unwrap();
        // Asked at once, with no steps in between to let followers catch up.
        for at in (1..=3).filter(|&n| n != leader) {
            let r = net
                .read(at, "SELECT count(*) FROM t", ReadLevel::Linearizable)
                .unwrap();
            assert_eq!(scalar(&r), Value::Integer(i + 1), "node {at}");
        }
    }
}

#[test]
fn a_cut_off_leader_answers_linearizable_reads_with_unavailable_not_stale_data() {
    let mut net = Net::new(3);
    let old = net.leader();
    net.write(old, "c", "CREATE TABLE t (v)").unwrap();
    net.isolated.insert(old);
    let new = net.leader();
    assert_ne!(new, old);
    net.write(new, "w", "INSERT INTO t VALUES (1)").unwrap();
    // The old leader still believes it leads ...
    assert_eq!(net.replicas[&old].status().leader, Some(NodeId(old)));
    // ... and its local copy is stale ...
    let local = net
        .read(old, "SELECT count(*) FROM t", ReadLevel::Local)
        .unwrap();
    assert_eq!(scalar(&local), Value::Integer(0));
    // ... but a linearizable read there times out instead of answering 0.
    let r = net
        .read(old, "SELECT count(*) FROM t", ReadLevel::Linearizable)
        .unwrap();
    assert!(matches!(r, Err(RequestError::Unavailable(_))), "{r:?}");
    // Healed, it catches up and answers correctly.
    net.isolated.clear();
    for peer in 1..=3u64 {
        for other in (1..=3u64).filter(|&o| o != peer) {
            net.replicas
                .get_mut(&peer)
                .unwrap()
                .connected(NodeId(other));
        }
    }
    let r = net
        .read(old, "SELECT count(*) FROM t", ReadLevel::Linearizable)
        .unwrap();
    assert_eq!(scalar(&r), Value::Integer(1));
}

#[test]
fn leader_reads_are_forwarded_and_answered_through_the_asking_node() {
    let mut net = Net::new(3);
    let leader = net.leader();
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    net.write(follower, "c", "CREATE TABLE t (v)").unwrap();
    net.write(follower, "w", "INSERT INTO t VALUES (5)")
        .unwrap();
    let r = net
        .read(follower, "SELECT v FROM t", ReadLevel::Leader)
        .unwrap();
    assert_eq!(scalar(&r), Value::Integer(5));
}

/// Submits 50 linearizable reads at `node`, waits for every answer, and
/// returns how many entries the group decided meanwhile.
fn entries_for_fifty_reads(net: &mut Net, node: u64) -> u64 {
    let leader = net.leader();
    net.write(leader, "c", "CREATE TABLE t (v)").unwrap();
    net.run(5);
    let before = net.replicas[&leader].status().decided;
    let tokens: Vec<u64> = (0..50)
        .map(|_| {
            net.submit(
                node,
                ClientRequest::Read {
                    stmts: vec![Statement::new("SELECT count(*) FROM t")],
                    level: ReadLevel::Linearizable,
                },
            )
        })
        .collect();
    for t in tokens {
        assert!(net.await_answer(t, 2000).unwrap().is_ok());
    }
    net.replicas[&leader].status().decided.0 - before.0
}

#[test]
fn many_reads_share_one_barrier() {
    let mut net = Net::with_config(3, |c| c.read_index = false);
    let leader = net.leader();
    let n = entries_for_fifty_reads(&mut net, leader);
    assert_eq!(n, 1, "50 reads, one barrier entry");
}

#[test]
fn reads_by_read_index_put_nothing_in_the_log() {
    let mut net = Net::new(3);
    let leader = net.leader();
    assert_eq!(
        entries_for_fifty_reads(&mut net, leader),
        0,
        "at the leader"
    );
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    assert_eq!(
        entries_for_fifty_reads(&mut net, follower),
        0,
        "at a follower"
    );
}

#[test]
fn a_follower_read_by_read_index_sees_a_write_acknowledged_elsewhere() {
    let mut net = Net::new(3);
    let leader = net.leader();
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    net.write(leader, "c", "CREATE TABLE t (v)").unwrap();
    for i in 0..5 {
        net.write(
            leader,
            &format!("w{i}"),
            &format!("INSERT INTO t VALUES ({i})"),
        )
        .unwrap();
        let r = net
            .read(follower, "SELECT count(*) FROM t", ReadLevel::Linearizable)
            .unwrap();
        assert_eq!(scalar(&r), Value::Integer(i + 1));
    }
}

#[test]
fn non_deterministic_sql_is_fixed_before_the_log_and_forbidden_sql_is_refused() {
    let mut net = Net::new(3);
    net.leader();
    net.write(1, "c", "CREATE TABLE t (r INTEGER, at TEXT)")
        .unwrap();
    net.write(2, "w", "INSERT INTO t VALUES (random(), CURRENT_TIMESTAMP)")
        .unwrap();
    net.run(20);
    let hashes: BTreeSet<u64> = net
        .replicas
        .values_mut()
        .map(|r| r.engine_mut().state_hash().unwrap())
        .collect();
    assert_eq!(hashes.len(), 1, "replicas differ");
    let r = net.write(1, "tx", "BEGIN");
    assert!(matches!(r, Err(RequestError::BadRequest(m)) if m.contains("transaction")));
}

fn hashes(net: &mut Net) -> BTreeSet<u64> {
    net.replicas
        .values_mut()
        .map(|r| r.engine_mut().state_hash().unwrap())
        .collect()
}

#[test]
fn a_replica_cut_off_past_the_trimmed_log_catches_up_by_snapshot() {
    let mut net = Net::with_config(3, |c| {
        c.snapshot_entries = 10;
        c.snapshot_chunk_bytes = 4096;
    });
    let leader = net.leader();
    let lagging = (1..=3).find(|&n| n != leader).unwrap();
    net.write(leader, "c", "CREATE TABLE t (v)").unwrap();
    net.isolated.insert(lagging);
    for i in 0..200 {
        net.write(
            leader,
            &format!("w{i}"),
            &format!("INSERT INTO t VALUES ({i}), (randomblob(100))"),
        )
        .unwrap();
    }
    net.run(100);
    let trimmed = net.replicas[&leader].status().compacted;
    assert!(
        trimmed.0 > 150,
        "the leader trimmed its log only to {trimmed}"
    );
    assert_eq!(net.replicas[&lagging].status().snapshots_installed, 0);

    net.isolated.clear();
    for peer in [leader, lagging] {
        for other in 1..=3 {
            if other != peer {
                net.replicas
                    .get_mut(&peer)
                    .unwrap()
                    .connected(NodeId(other));
            }
        }
    }
    net.run(600);
    let s = net.replicas[&lagging].status();
    assert!(s.snapshots_installed >= 1, "no snapshot installed: {s:?}");
    // The snapshot carries the request ids: a retry of an old write is
    // answered from it, not applied again.
    let again = net
        .write(lagging, "w5", "INSERT INTO t VALUES (5), (randomblob(100))")
        .unwrap();
    assert_eq!(
        again.results,
        vec![StmtResult::Exec {
            last_insert_id: 12,
            rows_affected: 2
        }]
    );
    net.write(lagging, "after", "INSERT INTO t VALUES (-1)")
        .unwrap();
    net.run(50);
    assert_eq!(hashes(&mut net).len(), 1, "replicas differ after catch-up");
    let count = net
        .read(lagging, "SELECT count(*) FROM t", ReadLevel::Local)
        .unwrap();
    assert_eq!(scalar(&count), Value::Integer(401));
}

#[test]
fn members_are_added_and_removed_through_the_log() {
    let mut net = Net::with_config(3, |c| c.snapshot_entries = 20);
    let leader = net.leader();
    net.write(leader, "c", "CREATE TABLE t (v)").unwrap();
    for i in 0..60 {
        net.write(
            leader,
            &format!("w{i}"),
            &format!("INSERT INTO t VALUES ({i})"),
        )
        .unwrap();
    }
    // Add node 4, asking a follower: the StopSign goes through the log.
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    let all: Vec<NodeId> = (1..=4).map(NodeId).collect();
    let token = net.submit(
        follower,
        ClientRequest::Reconfigure {
            nodes: all.clone(),
            metadata: b"addresses".to_vec(),
        },
    );
    let answer = net.await_answer(token, 2000).expect("answered");
    let base = answer.expect("reconfigured").index;
    assert_eq!(base.0, 61, "the StopSign follows the 61 writes");
    net.run(5);
    let m = net.memberships[&leader].clone();
    assert_eq!(
        (m.config_id, m.nodes.clone(), m.base),
        (2, all.clone(), base)
    );
    assert_eq!(m.metadata, b"addresses");

    // The new node starts in configuration 2 with an empty database: it
    // gets the state by snapshot, then follows the log.
    let mut cfg = ReplicaConfig::new(NodeId(4), GroupId(0), all.clone(), 1004);
    cfg.config_id = 2;
    cfg.base = base.0;
    let engine =
        SqliteEngine::open(&net.dir.path().join("4.db"), SqliteOptions::default()).unwrap();
    let r = Replica::open(cfg, MemoryStorage::new(), engine).unwrap();
    net.replicas.insert(4, r);
    for id in 1..=3 {
        net.replicas.get_mut(&id).unwrap().connected(NodeId(4));
    }
    let leader = net.leader();
    net.write(leader, "after-join", "INSERT INTO t VALUES (100)")
        .unwrap();
    let count = net
        .read(4, "SELECT count(*) FROM t", ReadLevel::Linearizable)
        .unwrap();
    assert_eq!(scalar(&count), Value::Integer(61));
    assert!(net.replicas[&4].status().snapshots_installed >= 1);

    // Remove node 1; the other three go on.
    let rest: Vec<NodeId> = (2..=4).map(NodeId).collect();
    let token = net.submit(
        2,
        ClientRequest::Reconfigure {
            nodes: rest.clone(),
            metadata: Vec::new(),
        },
    );
    net.await_answer(token, 2000)
        .expect("answered")
        .expect("removed");
    net.run(20);
    assert!(net.replicas[&1].removed());
    let refused = net.write(1, "on-removed", "INSERT INTO t VALUES (-1)");
    assert!(
        matches!(refused, Err(RequestError::Unavailable(_))),
        "{refused:?}"
    );
    net.isolated.insert(1);
    let leader = net.leader();
    assert_ne!(leader, 1);
    net.write(leader, "after-remove", "INSERT INTO t VALUES (200)")
        .unwrap();
    net.run(50);
    let mut hashes = BTreeSet::new();
    for id in 2..=4 {
        let r = net.replicas.get_mut(&id).unwrap();
        hashes.insert(r.engine_mut().state_hash().unwrap());
        assert_eq!(r.membership().0, 3);
    }
    assert_eq!(hashes.len(), 1, "members differ");
}

#[test]
fn a_node_that_missed_a_membership_change_follows_it() {
    let mut net = Net::with_config(3, |c| c.snapshot_entries = 10);
    let leader = net.leader();
    let missing = (1..=3).find(|&n| n != leader).unwrap();
    net.write(leader, "c", "CREATE TABLE t (v)").unwrap();
    net.isolated.insert(missing);
    // Add node 4 while `missing` is cut off; the StopSign is decided by the
    // other two.
    let all: Vec<NodeId> = (1..=4).map(NodeId).collect();
    let token = net.submit(
        leader,
        ClientRequest::Reconfigure {
            nodes: all.clone(),
            metadata: Vec::new(),
        },
    );
    let base = net
        .await_answer(token, 2000)
        .expect("answered")
        .unwrap()
        .index;
    let mut cfg = ReplicaConfig::new(NodeId(4), GroupId(0), all, 1004);
    cfg.config_id = 2;
    cfg.base = base.0;
    cfg.snapshot_entries = 10;
    let engine =
        SqliteEngine::open(&net.dir.path().join("4.db"), SqliteOptions::default()).unwrap();
    net.replicas
        .insert(4, Replica::open(cfg, MemoryStorage::new(), engine).unwrap());
    let leader = net.leader();
    for i in 0..50 {
        net.write(
            leader,
            &format!("w{i}"),
            &format!("INSERT INTO t VALUES ({i})"),
        )
        .unwrap();
    }
    assert_eq!(net.replicas[&missing].membership().0, 1);

    // Back: it speaks configuration 1, is told of configuration 2, moves
    // there and catches up by snapshot.
    net.isolated.clear();
    for id in 1..=4 {
        for other in 1..=4 {
            if id != other {
                net.replicas.get_mut(&id).unwrap().connected(NodeId(other));
            }
        }
    }
    net.run(600);
    assert_eq!(net.replicas[&missing].membership().0, 2);
    let count = net
        .read(missing, "SELECT count(*) FROM t", ReadLevel::Linearizable)
        .unwrap();
    assert_eq!(scalar(&count), Value::Integer(50));
    assert_eq!(hashes(&mut net).len(), 1, "replicas differ");
}
