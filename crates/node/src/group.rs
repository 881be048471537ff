//! The thread that owns one group's replica.
//!
//! Everything that touches the replica — OmniPaxos, the log file, SQLite —
//! happens on this thread, so none of it blocks the async runtime and
//! nothing needs a lock. Frontends and the transport talk to it through one
//! bounded queue ([`GroupInput`]); answers go back on oneshot channels.
//!
//! The loop: wait for input until the next tick is due; take everything
//! queued (bounded); tick if due; `poll` the replica; hand its messages to
//! the transport, its reads to the group's readers
//! ([`crate::readers`]) and its answers to the waiting clients.
//!
//! A replica that fails (its log or engine cannot go on) stops here, loudly,
//! but the node stays up: the group answers every request with the reason,
//! and `/status`, `/readyz` and the `paxsql_group_failed` gauge show it.

use crate::readers::{deliver, Answer, ReadJob, Readers};
use crate::transport::Links;
use paxsql_replica::{
    ClientRequest, LogStorage, Membership, Output, PeerMsg, ReadFor, Replica, ReplicaStatus,
};
use paxsql_sql::SqlEngine;
use paxsql_types::{GroupId, NodeId, RequestError, Response, Statement};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The answer channel of one client.
pub(crate) type ReplyTx = oneshot::Sender<Result<Response, RequestError>>;

/// What the group thread is asked to do.
#[derive(Debug)]
pub(crate) enum GroupInput {
    /// A client request and where to answer it.
    Client {
        /// The request.
        req: ClientRequest,
        /// The answer goes here.
        reply: ReplyTx,
        /// When the client stops waiting (a read's statements are
        /// interrupted then).
        deadline: Instant,
    },
    /// A message from a peer's replica of this group.
    Peer {
        /// The peer.
        from: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// A session with a peer (re)started.
    Connected(NodeId),
}

/// How often the group's gauges are refreshed.
const METRICS_EVERY: Duration = Duration::from_millis(250);

/// Inputs handled between two polls at most, so ticks stay on time.
const INPUTS_PER_POLL_MAX: usize = 4096;

/// How a group's thread is doing, for the node's handle: shared, and
/// written by the group thread only.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Why the replica stopped, once it has.
    failure: Mutex<Option<String>>,
    /// Milliseconds after [`Health::born`] when the loop last went round.
    last_loop_ms: AtomicU64,
    born: std::sync::OnceLock<Instant>,
}

impl Health {
    fn born(&self) -> Instant {
        *self.born.get_or_init(Instant::now)
    }

    fn beat(&self) {
        let ms = self.born().elapsed().as_millis() as u64;
        self.last_loop_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the group thread has been inside one round of its loop
    /// (applying a heavy entry, say).
    pub(crate) fn busy_for(&self) -> Duration {
        let now = self.born().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_loop_ms.load(Ordering::Relaxed)))
    }

    /// Records why the group stopped on this node.
    pub(crate) fn fail(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
    }

    /// The error every request to a stopped group gets, if it stopped.
    pub(crate) fn stopped(&self, group: GroupId) -> Option<RequestError> {
        self.failure().map(|reason| {
            RequestError::Unavailable(format!(
                "group {group} stopped on this node: {reason}; see /status, and restart the \
                 node once the cause is fixed"
            ))
        })
    }

    /// Why the replica stopped, if it has.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A client waiting on the group.
struct Waiting {
    reply: ReplyTx,
    deadline: Instant,
}

/// Runs a group's replica until its input queue closes.
pub(crate) struct GroupLoop<E: SqlEngine, S: LogStorage> {
    pub(crate) group: GroupId,
    pub(crate) replica: Replica<E, S>,
    pub(crate) inputs: Receiver<GroupInput>,
    pub(crate) links: Arc<Links>,
    pub(crate) status: Arc<Mutex<ReplicaStatus>>,
    pub(crate) health: Arc<Health>,
    /// Runs reads off this thread; `None`: the engine has no readers, and
    /// this thread serves them.
    pub(crate) readers: Option<Readers>,
    /// How long a leader read asked by a peer may run.
    pub(crate) peer_read_timeout: Duration,
    pub(crate) tick: Duration,
    /// Records a new configuration durably and opens its empty log.
    pub(crate) next_config: NextConfig<S>,
}

/// Records a configuration and opens its log (see [`GroupLoop`]).
pub(crate) type NextConfig<S> = Box<dyn FnMut(&Membership) -> Result<S, String> + Send>;

impl<E: SqlEngine, S: LogStorage> GroupLoop<E, S> {
    pub(crate) fn run(mut self) {
        let mut waiting: HashMap<u64, Waiting> = HashMap::new();
        let mut next_token: u64 = 0;
        let mut next_tick = Instant::now() + self.tick;
        let mut next_metrics = Instant::now();
        loop {
            self.health.beat();
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let first = match self.inputs.recv_timeout(timeout) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if self.health.failure().is_some() {
                self.refuse_all(first);
                continue;
            }
            let more = self.inputs.try_iter().take(INPUTS_PER_POLL_MAX);
            for input in first.into_iter().chain(more) {
                match input {
                    GroupInput::Client {
                        req,
                        reply,
                        deadline,
                    } => {
                        let token = next_token;
                        next_token += 1;
                        waiting.insert(token, Waiting { reply, deadline });
                        self.replica.submit(token, req);
                    }
                    GroupInput::Peer { from, msg } => {
                        if let Err(e) = self.replica.receive(from, msg) {
                            self.fail(&e);
                        }
                    }
                    GroupInput::Connected(peer) => self.replica.connected(peer),
                }
            }
            if self.health.failure().is_some() {
                for (_, w) in waiting.drain() {
                    let _ = w.reply.send(Err(self.stopped_error()));
                }
                continue;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.replica.tick();
                next_tick += self.tick;
                // After a stall, do not replay every missed tick at once.
                if next_tick < now {
                    next_tick = now + self.tick;
                }
            }
            let outputs = match self.replica.poll() {
                Ok(o) => o,
                Err(e) => {
                    self.fail(&e);
                    for (_, w) in waiting.drain() {
                        let _ = w.reply.send(Err(self.stopped_error()));
                    }
                    continue;
                }
            };
            for output in outputs {
                self.handle(output, &mut waiting);
            }
            let status = self.replica.status();
            if now >= next_metrics {
                crate::metrics::record_group(&status);
                next_metrics = now + METRICS_EVERY;
            }
            *self.status.lock().expect("status lock") = status;
        }
    }

    fn handle(&mut self, output: Output, waiting: &mut HashMap<u64, Waiting>) {
        match output {
            Output::Send { to, msg } => self.links.send(to, self.group, msg),
            Output::Reply { token, result } => {
                if let Some(w) = waiting.remove(&token) {
                    let _ = w.reply.send(result);
                }
            }
            Output::Read { to, stmts } => self.read(to, stmts, waiting),
            Output::Reconfigured(m) => self.start_config(&m),
        }
    }

    /// Hands a read the replica let through to a reader.
    fn read(&mut self, to: ReadFor, stmts: Vec<Statement>, waiting: &mut HashMap<u64, Waiting>) {
        let Some(readers) = &self.readers else {
            let answer = self.replica.answer_read(to, &stmts);
            self.handle(answer, waiting);
            return;
        };
        let (answer, deadline) = match to {
            ReadFor::Client(token) => {
                let Some(w) = waiting.remove(&token) else {
                    return;
                };
                (Answer::Client(w.reply), w.deadline)
            }
            ReadFor::Peer { node, id } => (
                Answer::Peer { node, id },
                Instant::now() + self.peer_read_timeout,
            ),
        };
        if deadline <= Instant::now() {
            let e = RequestError::Unavailable(
                "read timeout: the read's time ran out before it could start;                  raise ?timeout= or retry"
                    .into(),
            );
            deliver(answer, Err(e), &self.links, self.group);
            return;
        }
        let job = ReadJob {
            stmts,
            deadline,
            answer,
        };
        readers.submit(job, &self.links, self.group);
    }

    /// A failed replica's group answers every request with the reason.
    fn refuse_all(&mut self, first: Option<GroupInput>) {
        let more: Vec<GroupInput> = self.inputs.try_iter().take(INPUTS_PER_POLL_MAX).collect();
        for input in first.into_iter().chain(more) {
            if let GroupInput::Client { reply, .. } = input {
                let _ = reply.send(Err(self.stopped_error()));
            }
        }
    }

    fn stopped_error(&self) -> RequestError {
        self.health
            .stopped(self.group)
            .unwrap_or_else(|| RequestError::Unavailable(format!("group {} stopped", self.group)))
    }

    /// A replica that failed cannot go on: continuing could diverge it from
    /// the others. It stops for good in this run; a restart reopens it from
    /// its files.
    fn fail(&self, e: &paxsql_replica::ReplicaError) {
        tracing::error!(group = self.group.0, error = %e, "replica failed; this group stops on this node");
        eprintln!(
            "paxsql: group {} failed: {e}; it stops on this node",
            self.group.0
        );
        crate::metrics::record_group_failed(self.group);
        self.health.fail(e.to_string());
    }
}

impl<E: SqlEngine, S: LogStorage> GroupLoop<E, S> {
    /// Moves the replica to the configuration its StopSign announced: the
    /// new members are dialled, the configuration is recorded, its log
    /// opened.
    fn start_config(&mut self, m: &Membership) {
        match crate::membership::StoredMembership::from_membership(m) {
            Ok(stored) => {
                for (&peer, addr) in &stored.peers {
                    self.links.add_peer(peer, addr.clone());
                }
            }
            Err(e) => tracing::warn!(group = self.group.0, "membership change: {e}"),
        }
        let started = (self.next_config)(m)
            .map_err(|e| e.to_string())
            .and_then(|storage| {
                self.replica
                    .start_config(m, storage)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = started {
            let reason = format!("starting configuration {} failed: {e}", m.config_id);
            tracing::error!(group = self.group.0, %reason, "this group stops on this node");
            eprintln!(
                "paxsql: group {}: {reason}; it stops on this node",
                self.group.0
            );
            crate::metrics::record_group_failed(self.group);
            self.health.fail(reason);
        }
    }
}
