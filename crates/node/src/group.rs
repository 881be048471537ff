//! The thread that owns one group's replica.
//!
//! Everything that touches the replica — OmniPaxos, the log file, SQLite —
//! happens on this thread, so none of it blocks the async runtime and
//! nothing needs a lock. Frontends and the transport talk to it through one
//! bounded queue ([`GroupInput`]); answers go back on oneshot channels.
//!
//! The loop: wait for input until the next tick is due; take everything
//! queued (bounded); tick if due; `poll` the replica; hand its messages to
//! the transport and its answers to the waiting clients.

use crate::transport::Links;
use paxsql_replica::{
    ClientRequest, LogStorage, Membership, Output, PeerMsg, Replica, ReplicaStatus,
};
use paxsql_sql::SqlEngine;
use paxsql_types::{GroupId, NodeId, RequestError, Response};
use std::collections::HashMap;
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

/// Runs a group's replica until its input queue closes.
pub(crate) struct GroupLoop<E: SqlEngine, S: LogStorage> {
    pub(crate) group: GroupId,
    pub(crate) replica: Replica<E, S>,
    pub(crate) inputs: Receiver<GroupInput>,
    pub(crate) links: Arc<Links>,
    pub(crate) status: Arc<Mutex<ReplicaStatus>>,
    pub(crate) tick: Duration,
    /// Records a new configuration durably and opens its empty log.
    pub(crate) next_config: NextConfig<S>,
}

/// Records a configuration and opens its log (see [`GroupLoop`]).
pub(crate) type NextConfig<S> = Box<dyn FnMut(&Membership) -> Result<S, String> + Send>;

impl<E: SqlEngine, S: LogStorage> GroupLoop<E, S> {
    pub(crate) fn run(mut self) {
        let mut waiting: HashMap<u64, ReplyTx> = HashMap::new();
        let mut next_token: u64 = 0;
        let mut next_tick = Instant::now() + self.tick;
        let mut next_metrics = Instant::now();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            let first = match self.inputs.recv_timeout(timeout) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let more = self.inputs.try_iter().take(INPUTS_PER_POLL_MAX);
            for input in first.into_iter().chain(more) {
                match input {
                    GroupInput::Client { req, reply } => {
                        let token = next_token;
                        next_token += 1;
                        waiting.insert(token, reply);
                        self.replica.submit(token, req);
                    }
                    GroupInput::Peer { from, msg } => {
                        if let Err(e) = self.replica.receive(from, msg) {
                            fail(self.group, &e);
                        }
                    }
                    GroupInput::Connected(peer) => self.replica.connected(peer),
                }
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
                Err(e) => fail(self.group, &e),
            };
            for output in outputs {
                match output {
                    Output::Send { to, msg } => self.links.send(to, self.group, msg),
                    Output::Reply { token, result } => {
                        if let Some(tx) = waiting.remove(&token) {
                            let _ = tx.send(result);
                        }
                    }
                    Output::Reconfigured(m) => self.start_config(&m),
                }
            }
            let status = self.replica.status();
            if now >= next_metrics {
                crate::metrics::record_group(&status);
                next_metrics = now + METRICS_EVERY;
            }
            *self.status.lock().expect("status lock") = status;
        }
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
            tracing::error!(group = self.group.0, error = %e, "starting the new configuration failed; stopping the node");
            eprintln!(
                "paxsql: group {}: starting configuration {} failed: {e}; stopping",
                self.group.0, m.config_id
            );
            std::process::exit(70);
        }
    }
}

/// A replica that failed cannot go on: continuing could diverge it from the
/// others. The node stops; a restart reopens it from its files.
fn fail(group: GroupId, e: &paxsql_replica::ReplicaError) -> ! {
    tracing::error!(group = group.0, error = %e, "replica failed; stopping the node");
    eprintln!("paxsql: group {} failed: {e}; stopping", group.0);
    std::process::exit(70);
}
