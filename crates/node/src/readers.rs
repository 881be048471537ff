//! The threads that run a group's reads, beside the group thread.
//!
//! The replica decides *when* a read may run (at once for `local`, at the
//! leader for `leader`, after its barrier is applied for `linearizable`)
//! and hands it out as [`paxsql_replica::Output::Read`]; the group thread
//! passes it here, to a small pool of threads each owning one read-only
//! connection of the engine. So a slow read never stops the group from
//! applying the log, and every read runs under a wall-clock timeout and a
//! bound on its result's bytes.
//!
//! The pool's queue is bounded; the node admits reads with a semaphore of
//! the same size ([`crate::NodeHandle::read`]), so the queue is never full
//! for this node's own clients and memory stays bounded under load.

use crate::group::ReplyTx;
use crate::transport::Links;
use paxsql_replica::PeerMsg;
use paxsql_sql::{ReadLimits, SqlEngine, SqlReader};
use paxsql_types::{GroupId, NodeId, RequestError, Response, Statement};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a read's answer goes.
pub(crate) enum Answer {
    /// A client of this node.
    Client(ReplyTx),
    /// A peer that asked for a leader read.
    Peer {
        /// The asking node.
        node: NodeId,
        /// Its id for the read.
        id: u64,
    },
}

/// One read to run.
pub(crate) struct ReadJob {
    pub(crate) stmts: Vec<Statement>,
    /// When its statements must have finished (waiting for a free reader
    /// counts too).
    pub(crate) deadline: Instant,
    pub(crate) answer: Answer,
}

/// The read pool of one group.
pub(crate) struct Readers {
    jobs: SyncSender<ReadJob>,
}

impl Readers {
    /// Opens `count` reader connections of `engine` and starts a thread for
    /// each. `None` when the engine has no readers (the group thread then
    /// serves reads itself).
    pub(crate) fn start(
        engine: &dyn SqlEngine,
        count: usize,
        queue: usize,
        limits: ReadLimits,
        group: GroupId,
        links: Arc<Links>,
    ) -> Result<Option<Readers>, String> {
        let mut readers = Vec::with_capacity(count);
        for _ in 0..count.max(1) {
            match engine.reader(limits) {
                Ok(r) => readers.push(r),
                Err(paxsql_sql::EngineError::Unsupported(_)) => return Ok(None),
                Err(e) => return Err(format!("opening a reader: {e}")),
            }
        }
        let (jobs, rx) = sync_channel(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for (i, reader) in readers.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            let links = Arc::clone(&links);
            std::thread::Builder::new()
                .name(format!("group-{}-read-{i}", group.0))
                .spawn(move || serve(reader, &rx, group, &links))
                .map_err(|e| format!("starting a reader thread: {e}"))?;
        }
        Ok(Some(Readers { jobs }))
    }

    /// Queues a read; a full queue answers it "overloaded" at once.
    pub(crate) fn submit(&self, job: ReadJob, links: &Links, group: GroupId) {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => deliver(
                job.answer,
                Err(RequestError::Overloaded(format!(
                    "group {group}: every reader is busy and the read queue is full; \
                     retry after a moment"
                ))),
                links,
                group,
            ),
        }
    }
}

/// A reader thread: runs jobs until the pool is dropped.
fn serve(
    mut reader: Box<dyn SqlReader>,
    jobs: &Mutex<Receiver<ReadJob>>,
    group: GroupId,
    links: &Links,
) {
    loop {
        let job = {
            let rx = jobs.lock().expect("read queue lock");
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let left = job.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let e = RequestError::Unavailable(
                "read timeout: every reader was busy until the read's time limit ran out; \
                 retry, or raise ?timeout= / statement_timeout"
                    .into(),
            );
            deliver(job.answer, Err(e), links, group);
            continue;
        }
        let result = match reader.query(&job.stmts, left) {
            Ok((index, results)) => Ok(Response { results, index }),
            Err(e) => {
                tracing::warn!(group = group.0, error = %e, "a reader connection failed");
                Err(RequestError::Unavailable(format!("the read failed: {e}")))
            }
        };
        deliver(job.answer, result, links, group);
    }
}

/// Sends a read's answer where it belongs.
pub(crate) fn deliver(
    answer: Answer,
    result: Result<Response, RequestError>,
    links: &Links,
    group: GroupId,
) {
    match answer {
        Answer::Client(tx) => {
            let _ = tx.send(result);
        }
        Answer::Peer { node, id } => {
            links.send(node, group, PeerMsg::LeaderReadReply { id, result })
        }
    }
}
