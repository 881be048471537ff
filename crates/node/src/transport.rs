//! Node-to-node links over TCP.
//!
//! Each node dials every peer once and keeps that connection for its own
//! outgoing frames; frames from a peer arrive on the connection the peer
//! dialled. A connection is a session: frames on it arrive in order or not
//! at all. When it breaks, frames queued for it are dropped and it is
//! dialled again with backoff, forever; when a session (re)starts, in either
//! direction, every group is told, so OmniPaxos resynchronises with that
//! peer (`reconnected`).
//!
//! Frames are length-delimited postcard messages ([`Wire`]). The first frame
//! on a connection is a `Hello` naming the sender; frames from a node that is
//! not a known peer are refused. Peers are added at run time when a
//! membership change brings a new node ([`Links::add_peer`]).
//!
//! For tests, a fault switch cuts this node off from all its peers while it
//! keeps running (every connection is closed and none is accepted or made).

use crate::group::GroupInput;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use paxsql_replica::PeerMsg;
use paxsql_types::{GroupId, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Frames larger than this are refused (and break the session).
pub(crate) const FRAME_BYTES_MAX: usize = 64 << 20;
/// Frames queued for one peer at most; past that the session is reset.
const QUEUE_FRAMES_MAX: usize = 8192;
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// What travels on a peer connection.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Wire {
    /// First frame of a connection.
    Hello {
        /// The dialling node.
        from: NodeId,
        /// Its cluster's name; a mismatch is refused.
        cluster: String,
    },
    /// A message for one group's replica.
    Group {
        /// The group.
        group: GroupId,
        /// The message.
        msg: PeerMsg,
    },
    /// How the sender's replicas stand (sent twice a second), so every
    /// node can show every node's progress and notice it fell behind.
    Report(PeerReport),
}

/// What a peer last said of its replicas: group 0 in full, every group's
/// decided index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PeerReport {
    /// leader, follower or candidate (in group 0).
    pub(crate) role: String,
    /// Entries it knows decided (in group 0).
    pub(crate) decided: u64,
    /// Entries it has applied (in group 0).
    pub(crate) applied: u64,
    /// Entries it knows decided, per group (every group it hosts).
    pub(crate) groups: Vec<(u32, u64)>,
}

impl PeerReport {
    /// Entries the peer knows decided in `group`, if it said.
    pub(crate) fn decided_in(&self, group: GroupId) -> Option<u64> {
        match group.0 {
            0 => Some(self.decided),
            g => self.groups.iter().find(|(x, _)| *x == g).map(|(_, d)| *d),
        }
    }
}

/// The sending side of every outgoing link, shared by the group threads.
#[derive(Debug)]
pub(crate) struct Links {
    me: NodeId,
    cluster: String,
    inbox: Inbox,
    /// The runtime the dialling tasks run on (group threads add peers).
    runtime: tokio::runtime::Handle,
    out: std::sync::RwLock<HashMap<NodeId, Link>>,
    /// Every known node's peer address, this one's included.
    addrs: std::sync::RwLock<BTreeMap<NodeId, String>>,
    pub(crate) isolated: AtomicBool,
    /// The last report of each peer, and when it came.
    pub(crate) reports: std::sync::Mutex<BTreeMap<NodeId, (PeerReport, std::time::Instant)>>,
}

#[derive(Debug)]
struct Link {
    tx: mpsc::Sender<Bytes>,
    /// Set when a frame had to be dropped: the session must restart.
    reset: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
}

impl Links {
    /// Sends a message to a peer's replica of `group`, or drops it if the
    /// link is down (OmniPaxos resends or resyncs when it comes back).
    pub(crate) fn send(&self, to: NodeId, group: GroupId, msg: PeerMsg) {
        self.send_wire(to, &Wire::Group { group, msg });
    }

    /// Sends this node's report to every connected peer.
    pub(crate) fn broadcast_report(&self, report: PeerReport) {
        let wire = Wire::Report(report);
        let peers: Vec<NodeId> = self
            .out
            .read()
            .expect("links lock")
            .keys()
            .copied()
            .collect();
        for peer in peers {
            self.send_wire(peer, &wire);
        }
    }

    fn send_wire(&self, to: NodeId, wire: &Wire) {
        if to == self.me {
            return;
        }
        let out = self.out.read().expect("links lock");
        let Some(link) = out.get(&to) else {
            tracing::warn!(to = to.0, "message for an unknown peer dropped");
            return;
        };
        if self.isolated.load(Ordering::Relaxed) || !link.connected.load(Ordering::Relaxed) {
            return;
        }
        let frame = match postcard::to_stdvec(wire) {
            Ok(f) => Bytes::from(f),
            Err(e) => {
                tracing::error!(error = %e, "encoding a peer message failed");
                return;
            }
        };
        match link.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Dropping one frame of a session would break its in-order,
                // no-gaps promise: restart the session instead.
                link.reset.store(true, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Whether the outgoing link to `peer` is up.
    pub(crate) fn connected(&self, peer: NodeId) -> bool {
        peer == self.me
            || self
                .out
                .read()
                .expect("links lock")
                .get(&peer)
                .is_some_and(|l| l.connected.load(Ordering::Relaxed))
    }

    /// Every known node's peer address, this one's included.
    pub(crate) fn peers(&self) -> BTreeMap<NodeId, String> {
        self.addrs.read().expect("links lock").clone()
    }

    /// Starts dialling a node not known before (a member added by a
    /// membership change). Known nodes keep their link.
    pub(crate) fn add_peer(self: &Arc<Self>, peer: NodeId, addr: String) {
        if peer == self.me {
            return;
        }
        let mut out = self.out.write().expect("links lock");
        if out.contains_key(&peer) {
            return;
        }
        self.addrs
            .write()
            .expect("links lock")
            .insert(peer, addr.clone());
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES_MAX);
        let link = Link {
            tx,
            reset: Arc::new(AtomicBool::new(false)),
            connected: Arc::new(AtomicBool::new(false)),
        };
        let dial = Dialer {
            me: self.me,
            cluster: self.cluster.clone(),
            peer,
            addr,
            reset: link.reset.clone(),
            connected: link.connected.clone(),
            inbox: self.inbox.clone(),
            links: Arc::clone(self),
        };
        out.insert(peer, link);
        self.runtime.spawn(dial.run(rx));
    }
}

/// Where incoming frames go.
#[derive(Clone, Debug)]
pub(crate) struct Inbox {
    pub(crate) groups: Arc<BTreeMap<GroupId, SyncSender<GroupInput>>>,
}

impl Inbox {
    fn session_started(&self, peer: NodeId) {
        for tx in self.groups.values() {
            // A full queue loses only the hint; the next session start or
            // OmniPaxos' own resend covers it.
            let _ = tx.try_send(GroupInput::Connected(peer));
        }
    }

    /// Delivers a frame; false if the group's queue is full (the session
    /// must then restart, since a gap is not allowed).
    fn deliver(&self, from: NodeId, group: GroupId, msg: PeerMsg) -> bool {
        let Some(tx) = self.groups.get(&group) else {
            tracing::debug!(
                group = group.0,
                "message for a group not hosted here dropped"
            );
            return true;
        };
        match tx.try_send(GroupInput::Peer { from, msg }) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true,
        }
    }
}

/// Starts the dialling tasks for every peer and returns the sending side.
/// Must run inside the tokio runtime.
pub(crate) fn start_links(
    me: NodeId,
    cluster: &str,
    peers: &BTreeMap<NodeId, String>,
    inbox: Inbox,
) -> Arc<Links> {
    let links = Arc::new(Links {
        me,
        cluster: cluster.to_owned(),
        inbox,
        runtime: tokio::runtime::Handle::current(),
        out: std::sync::RwLock::new(HashMap::new()),
        addrs: std::sync::RwLock::new(peers.clone()),
        isolated: AtomicBool::new(false),
        reports: std::sync::Mutex::new(BTreeMap::new()),
    });
    for (&peer, addr) in peers {
        links.add_peer(peer, addr.clone());
    }
    links
}

struct Dialer {
    me: NodeId,
    cluster: String,
    peer: NodeId,
    addr: String,
    reset: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    inbox: Inbox,
    links: Arc<Links>,
}

impl Dialer {
    async fn run(self, mut rx: mpsc::Receiver<Bytes>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.links.isolated.load(Ordering::Relaxed) {
                drain(&mut rx);
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
            match self.connect().await {
                Ok(framed) => {
                    backoff = BACKOFF_MIN;
                    drain(&mut rx);
                    self.reset.store(false, Ordering::Relaxed);
                    self.connected.store(true, Ordering::Relaxed);
                    crate::metrics::record_peer(self.peer, true);
                    tracing::info!(peer = self.peer.0, addr = %self.addr, "peer link up");
                    self.inbox.session_started(self.peer);
                    let why = self.pump(framed, &mut rx).await;
                    self.connected.store(false, Ordering::Relaxed);
                    crate::metrics::record_peer(self.peer, false);
                    tracing::info!(peer = self.peer.0, reason = %why, "peer link down");
                }
                Err(e) => {
                    tracing::debug!(peer = self.peer.0, error = %e, "dialling peer failed");
                    drain(&mut rx);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn connect(&self) -> std::io::Result<Framed<TcpStream, LengthDelimitedCodec>> {
        let stream =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&self.addr)).await??;
        stream.set_nodelay(true)?;
        let mut framed = Framed::new(stream, codec());
        let hello = Wire::Hello {
            from: self.me,
            cluster: self.cluster.clone(),
        };
        let bytes = postcard::to_stdvec(&hello).map_err(std::io::Error::other)?;
        framed.send(Bytes::from(bytes)).await?;
        Ok(framed)
    }

    /// Moves frames to the socket until the session ends; says why.
    async fn pump(
        &self,
        mut framed: Framed<TcpStream, LengthDelimitedCodec>,
        rx: &mut mpsc::Receiver<Bytes>,
    ) -> String {
        let mut check = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some(frame) = frame else { return "node stopping".into() };
                    if let Err(e) = SinkExt::<Bytes>::feed(&mut framed, frame).await {
                        return e.to_string();
                    }
                    // Send whatever else is already queued in the same flush.
                    while let Ok(frame) = rx.try_recv() {
                        if let Err(e) = SinkExt::<Bytes>::feed(&mut framed, frame).await {
                            return e.to_string();
                        }
                    }
                    if let Err(e) = SinkExt::<Bytes>::flush(&mut framed).await {
                        return e.to_string();
                    }
                }
                // The peer closes its side when it goes away.
                incoming = framed.next() => {
                    if incoming.is_none() {
                        return "peer closed the connection".into();
                    }
                }
                _ = check.tick() => {
                    if self.reset.load(Ordering::Relaxed) {
                        return "send queue overflowed; restarting the session".into();
                    }
                    if self.links.isolated.load(Ordering::Relaxed) {
                        return "isolated by the fault switch".into();
                    }
                }
            }
        }
    }
}

fn drain(rx: &mut mpsc::Receiver<Bytes>) {
    while rx.try_recv().is_ok() {}
}

pub(crate) fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Accepts peer connections and feeds their frames to the groups.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    cluster: String,
    inbox: Inbox,
    links: Arc<Links>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            }
        };
        if links.isolated.load(Ordering::Relaxed) {
            continue;
        }
        let _ = stream.set_nodelay(true);
        let session = Session {
            cluster: cluster.clone(),
            inbox: inbox.clone(),
            links: Arc::clone(&links),
        };
        tokio::spawn(async move {
            if let Err(why) = session.serve(stream).await {
                tracing::debug!(%addr, reason = %why, "peer session ended");
            }
        });
    }
}

struct Session {
    cluster: String,
    inbox: Inbox,
    links: Arc<Links>,
}

impl Session {
    async fn serve(self, stream: TcpStream) -> Result<(), String> {
        let mut framed = Framed::new(stream, codec());
        let first = tokio::time::timeout(Duration::from_secs(5), framed.next())
            .await
            .map_err(|_| "no hello within 5 s".to_string())?
            .ok_or("closed before hello")?
            .map_err(|e| e.to_string())?;
        let from = match postcard::from_bytes::<Wire>(&first) {
            Ok(Wire::Hello { from, cluster }) if cluster == self.cluster => from,
            Ok(Wire::Hello { cluster, .. }) => {
                return Err(format!(
                    "peer belongs to cluster {cluster:?}, not {:?}",
                    self.cluster
                ))
            }
            _ => return Err("first frame is not a hello".into()),
        };
        if !self
            .links
            .addrs
            .read()
            .expect("links lock")
            .contains_key(&from)
        {
            return Err(format!("node {from} is not a known peer"));
        }
        self.inbox.session_started(from);
        let mut check = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                frame = framed.next() => {
                    let frame = match frame {
                        None => return Err("peer closed the connection".into()),
                        Some(f) => f.map_err(|e| e.to_string())?,
                    };
                    if self.links.isolated.load(Ordering::Relaxed) {
                        return Err("isolated by the fault switch".into());
                    }
                    match postcard::from_bytes::<Wire>(&frame) {
                        Ok(Wire::Group { group, msg }) => {
                            if !self.inbox.deliver(from, group, msg) {
                                return Err("group queue full; restarting the session".into());
                            }
                        }
                        Ok(Wire::Report(report)) => {
                            let now = std::time::Instant::now();
                            self.links.reports.lock().expect("reports lock").insert(from, (report, now));
                        }
                        Ok(Wire::Hello { .. }) => return Err("unexpected second hello".into()),
                        Err(e) => return Err(format!("undecodable frame: {e}")),
                    }
                }
                _ = check.tick() => {
                    if self.links.isolated.load(Ordering::Relaxed) {
                        return Err("isolated by the fault switch".into());
                    }
                }
            }
        }
    }
}
