//! Log compaction and catch-up by snapshot.
//!
//! # Compaction
//!
//! A replica's database *is* its snapshot: it holds the applied index and
//! the completed request ids in the same transactions as the rows. Once
//! `snapshot_entries` entries were applied above the trimmed prefix (or the
//! log outgrew `snapshot_bytes`), the replica makes its database durable
//! ([`SqlEngine::persist`]) and trims its own log below the durable point,
//! through OmniPaxos (`snapshot(idx, local_only)`, whose snapshot type is an
//! empty marker). It keeps what live peers (those whose progress report is
//! recent) still need, unless they are a whole `snapshot_entries` behind:
//! those will get an image instead. Each replica trims on its own; none
//! waits for a dead peer.
//!
//! # Keeping OmniPaxos away from trimmed entries
//!
//! OmniPaxos 0.2.4 without entry snapshots reads its log from the other
//! side's decided index when it synchronises a peer: a follower for a
//! `Prepare` (from the leader's decided index), a leader for a `Promise`
//! (from the follower's). Below its trimmed prefix that read comes back
//! short and would corrupt the peer's log. So such a `Prepare` or `Promise`
//! is never handed to OmniPaxos: the replica answers
//! [`PeerMsg::SnapshotNeeded`] instead, and the peer fetches an image.
//!
//! # Transfer and install
//!
//! The fetching replica pulls the image in chunks
//! ([`PeerMsg::SnapshotRequest`] / [`PeerMsg::SnapshotChunk`], one chunk in
//! flight, re-asked on a timer), checks its crc32c, then installs it:
//!
//! - image at or below the engine's applied index: useless to the engine,
//!   dropped — but if it is beyond the log's decided index, the log lags
//!   the engine (see below) and catches up with it;
//! - image within the decided log: the log can bring the engine there,
//!   unless the entries after the engine's index are trimmed here — then
//!   the engine alone takes the image and the log goes on from it;
//! - image beyond the decided log and at or beyond everything this replica
//!   ever accepted: the engine takes the image (one SQLite transaction,
//!   made durable), then the log is reset to an empty one trimmed at the
//!   image's index, and OmniPaxos is rebuilt from it (it recovers as after a
//!   restart). Its accepted round is reset below every real round: the log
//!   holds no accepted entries any more, so it must not outrank anyone's;
//! - image beyond the decided log but short of entries this replica
//!   accepted: the engine takes the image, and the log is trimmed and
//!   decided up to the image's index, keeping the entries accepted after it
//!   and their round. Dropping them could undo a decision this replica's
//!   vote helped make; waiting for a longer image could wait forever (no
//!   leader can be elected while this replica's promise is refused and the
//!   image's giver, a candidate, cannot append).
//!
//! # Staying live
//!
//! A replica behind a peer's trimmed prefix takes no part in OmniPaxos'
//! elections with that peer until an image brings it up. Left alone, that
//! can stall the group for good (each case was found by `paxsql-sim`):
//!
//! - The log's decided index is not forced to disk by every sync, so a
//!   restarted replica's log may have decided fewer entries than its engine
//!   applied; peers that trimmed past that point refuse it, and their image
//!   is no use to the engine. The log then catches up with the engine by
//!   itself (every entry the engine applied was decided).
//! - A replica that accepted more entries than any image holds refuses
//!   every image, and images grow only with new writes. A leader in its
//!   accept phase that refuses such a replica pads its own log with empty
//!   entries up to the replica's length (ordinary proposals).
//! - A candidate behind the others' trimmed prefixes can hold the highest
//!   ballot without any chance of a majority, and BLE keeps it as long as
//!   it hears a quorum. A replica that refuses it, and could win, runs for
//!   leader with a higher ballot.
//! - A leader whose database was lost cannot give a useful image to the
//!   followers it refuses. A follower that could win runs for leader.
//!
//! Whether a replica could win is judged from the peers' progress reports:
//! a majority must not have trimmed past its decided index.

use crate::{LogStorage, PeerMsg, Replica, ReplicaError};
use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::messages::sequence_paxos::PaxosMsg;
use omnipaxos::messages::Message;
use omnipaxos::storage::StorageOp;
use paxsql_sql::{EngineError, SqlEngine};
use paxsql_types::{Compacted, Entry, LogIndex, NodeId};
use std::collections::BTreeMap;
use std::rc::Rc;

/// What a peer last said of its progress.
#[derive(Clone, Copy, Debug)]
struct PeerProgress {
    applied: LogIndex,
    /// Entries trimmed from its log.
    compacted: LogIndex,
    /// Tick it arrived.
    at: u64,
}

/// An image being sent to one peer.
struct Outgoing {
    index: LogIndex,
    image: Rc<Vec<u8>>,
    checksum: u32,
    /// Tick of the last request for it.
    used_at: u64,
    /// Tick it was taken.
    taken_at: u64,
}

/// The image being fetched.
struct Fetch {
    from: NodeId,
    /// Known from the first chunk on.
    index: Option<LogIndex>,
    total: u64,
    checksum: u32,
    data: Vec<u8>,
    /// When to ask again if no chunk came.
    retry_at: u64,
    /// When to give up: no chunk came for a request timeout.
    deadline: u64,
}

/// The replica's compaction and transfer state.
#[derive(Default)]
pub(crate) struct SnapshotState {
    peers: BTreeMap<NodeId, PeerProgress>,
    outgoing: BTreeMap<NodeId, Outgoing>,
    fetch: Option<Fetch>,
    /// Tick from which a peer's trimmed prefix has been ahead of this
    /// replica's decided log.
    behind_since: Option<u64>,
    /// False once the engine said it cannot persist (no snapshots).
    unsupported: bool,
    next_compaction_check: u64,
    next_progress: u64,
    pub(crate) taken: u64,
    pub(crate) installed: u64,
    pub(crate) sent: u64,
}

impl<E: SqlEngine, S: LogStorage> Replica<E, S> {
    /// Entries trimmed from this replica's log.
    pub(crate) fn compacted(&self) -> LogIndex {
        self.global(self.op.get_compacted_idx())
    }

    /// Entries known decided (a StopSign counts as one).
    fn decided(&self) -> LogIndex {
        self.global(self.op.get_decided_idx())
    }

    /// Whether `m` would make OmniPaxos read this log below its trimmed
    /// prefix to synchronise `from`; if so, `from` is told to fetch a
    /// snapshot and the message is dropped.
    pub(crate) fn refuse_below_trimmed(&mut self, from: NodeId, m: &Message<Entry>) -> bool {
        let Message::SequencePaxos(pm) = m else {
            return false;
        };
        let (their_decided, their_accepted, candidate) = match &pm.msg {
            PaxosMsg::Prepare(p) => (p.decided_idx, p.accepted_idx, Some(p.n)),
            PaxosMsg::Promise(p) => (p.decided_idx, p.accepted_idx, None),
            _ => return false,
        };
        // Both sides count in this configuration's log.
        if their_decided >= self.op.get_compacted_idx() {
            return false;
        }
        let compacted = self.compacted();
        tracing::debug!(group = %self.cfg.group, peer = from.0, their_decided, %compacted, "peer is behind the trimmed log; it needs a snapshot");
        self.send(from, PeerMsg::SnapshotNeeded { compacted });
        self.pad_log_to(their_accepted);
        let outranks = candidate.is_some_and(|n| n > self.op.get_promise());
        if outranks && !self.could_win(from, self.global(their_decided)) && self.can_lead() {
            // A candidate that outranks every ballot known here, and that
            // too many replicas refuse to ever get a majority: nothing makes
            // its ballot go away (BLE keeps it as long as it hears a
            // quorum), and no other leader is elected meanwhile. A replica
            // that can lead runs with a higher ballot; the candidate, once
            // it promises, is refused too and fetches an image.
            tracing::info!(group = %self.cfg.group, peer = from.0, "a candidate behind the trimmed log cannot win and outranks this replica; running for leader");
            self.op.try_become_leader();
        }
        true
    }

    /// A peer behind this replica's trimmed prefix has accepted more entries
    /// than this replica's log holds. It refuses every image short of what
    /// it accepted (dropping accepted entries could undo a decision), and
    /// images grow only as entries are decided: with no more writes coming,
    /// it would wait forever. A leader in its accept phase fills its log up
    /// to the peer's length with empty entries — ordinary proposals, decided
    /// and applied like any other, safe as any proposal is — so that the
    /// image it gives once they are applied covers everything the peer
    /// accepted. (Those entries of the peer were never decided: a leader in
    /// its accept phase holds every decided entry.)
    fn pad_log_to(&mut self, their_accepted: usize) {
        let leading = self.leads();
        let mine = self.op.get_accepted_idx();
        if !leading || their_accepted <= mine {
            return;
        }
        tracing::info!(group = %self.cfg.group, mine, their_accepted, "a peer behind the trimmed log accepted more than this log holds; padding the log with empty entries");
        for _ in mine..their_accepted {
            self.append(Vec::new());
        }
    }

    /// Whether a candidate whose log has decided `decided` entries could
    /// collect a majority of promises: every replica whose trimmed prefix is
    /// beyond that refuses its `Prepare`. Replicas whose progress is not
    /// known (or not recently) are counted as willing.
    fn could_win(&self, candidate: NodeId, decided: LogIndex) -> bool {
        let willing = self
            .cfg
            .nodes
            .iter()
            .filter(|&&n| {
                if n == candidate {
                    true
                } else if n == self.cfg.node {
                    self.compacted() <= decided
                } else {
                    self.snap
                        .peers
                        .get(&n)
                        .filter(|p| self.is_live(p))
                        .is_none_or(|p| p.compacted <= decided)
                }
            })
            .count();
        2 * willing > self.cfg.nodes.len()
    }

    /// Whether this replica should run for leader to unblock the others:
    /// it holds its data and could win.
    fn can_lead(&self) -> bool {
        self.holds_its_data() && self.could_win(self.cfg.node, self.decided())
    }

    /// Whether this replica's database holds everything its log trimmed:
    /// false after its database file was lost, until an image brings it
    /// back. Such a replica can serve no useful image, nor sync a peer
    /// behind its trimmed prefix: it should not lead.
    fn holds_its_data(&self) -> bool {
        self.engine.applied_index() >= self.compacted()
    }

    /// Every tick: progress reports, transfer retries, idle images dropped.
    pub(crate) fn snapshot_tick(&mut self) {
        if self.now >= self.snap.next_progress {
            self.snap.next_progress = self.now + self.cfg.progress_ticks.max(1);
            let applied = self.engine.applied_index();
            let compacted = self.compacted();
            for peer in self.cfg.nodes.clone() {
                if peer != self.cfg.node {
                    self.send(peer, PeerMsg::Progress { applied, compacted });
                }
            }
        }
        let now = self.now;
        let idle = self.cfg.request_timeout_ticks;
        self.snap.outgoing.retain(|_, o| o.used_at + idle > now);
        let Some(fetch) = &mut self.snap.fetch else {
            return;
        };
        if fetch.deadline <= now {
            tracing::info!(group = %self.cfg.group, from = fetch.from.0, "snapshot transfer stalled; giving up for now");
            self.snap.fetch = None;
        } else if fetch.retry_at <= now {
            fetch.retry_at = now + self.cfg.retry_ticks;
            let (to, offset) = (fetch.from, fetch.data.len() as u64);
            let offset = if fetch.index.is_some() { offset } else { 0 };
            self.send(to, PeerMsg::SnapshotRequest { offset });
        }
    }

    pub(crate) fn on_progress(&mut self, from: NodeId, applied: LogIndex, compacted: LogIndex) {
        self.snap.peers.insert(
            from,
            PeerProgress {
                applied,
                compacted,
                at: self.now,
            },
        );
        if compacted <= self.decided() || applied <= self.engine.applied_index() {
            self.snap.behind_since = None;
            return;
        }
        // Behind a peer's trimmed prefix: usually OmniPaxos' own sync says
        // so at once (`SnapshotNeeded`); this catches the rest, after two
        // reports in a row.
        let since = *self.snap.behind_since.get_or_insert(self.now);
        if self.now >= since + self.cfg.progress_ticks {
            self.start_fetch(from);
        }
    }

    pub(crate) fn on_snapshot_needed(&mut self, from: NodeId, compacted: LogIndex) {
        if compacted <= self.decided() {
            return;
        }
        self.start_fetch(from);
        // The image `from` gives is as far as it has applied. If that is
        // short of what it trimmed (its database was lost) or of what this
        // replica accepted, the image will not do (see `install`); and
        // while `from` is the leader (or candidate) this replica promised,
        // no other leader syncs it either. If this replica could win, it
        // runs for leader; `from` refuses its `Prepare` but does not run
        // against it (see `refuse_below_trimmed`).
        let accepted = self.global(self.op.get_accepted_idx());
        let short = self
            .snap
            .peers
            .get(&from)
            .is_some_and(|p| p.applied < compacted || p.applied < accepted);
        if short && self.op.get_promise().pid == from.0 && self.can_lead() {
            tracing::info!(group = %self.cfg.group, peer = from.0, "the leader's image cannot bring this replica up; running for leader");
            self.op.try_become_leader();
        }
    }

    /// The engine needs entries that were trimmed here.
    pub(crate) fn fetch_from_most_advanced_peer(&mut self) {
        let mine = self.engine.applied_index();
        let best = self
            .live_peers()
            .filter(|(_, p)| p.applied > mine)
            .max_by_key(|(_, p)| p.applied)
            .map(|(n, _)| n);
        if let Some(peer) = best {
            self.start_fetch(peer);
        }
    }

    pub(crate) fn start_fetch(&mut self, from: NodeId) {
        if self.snap.fetch.is_some() || from == self.cfg.node {
            return;
        }
        tracing::info!(group = %self.cfg.group, from = from.0, "fetching a snapshot");
        self.snap.fetch = Some(Fetch {
            from,
            index: None,
            total: 0,
            checksum: 0,
            data: Vec::new(),
            retry_at: self.now + self.cfg.retry_ticks,
            deadline: self.now + self.cfg.request_timeout_ticks,
        });
        self.send(from, PeerMsg::SnapshotRequest { offset: 0 });
    }

    pub(crate) fn on_snapshot_request(&mut self, from: NodeId, offset: u64) {
        // A fresh image for a new transfer, but not for every repeat of the
        // first request: building a large one takes long enough for the
        // requester to ask again meanwhile.
        let fresh = self
            .snap
            .outgoing
            .get(&from)
            .is_some_and(|o| o.taken_at + self.cfg.request_timeout_ticks > self.now);
        if (offset == 0 && !fresh) || !self.snap.outgoing.contains_key(&from) {
            match self.engine.snapshot() {
                Ok((index, image)) => {
                    let checksum = crc32c::crc32c(&image);
                    self.snap.sent += 1;
                    tracing::info!(group = %self.cfg.group, to = from.0, %index, bytes = image.len(), "sending a snapshot");
                    self.snap.outgoing.insert(
                        from,
                        Outgoing {
                            index,
                            image: Rc::new(image),
                            checksum,
                            used_at: self.now,
                            taken_at: self.now,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(group = %self.cfg.group, to = from.0, "cannot take a snapshot: {e}");
                    return;
                }
            }
        }
        let chunk = self.cfg.snapshot_chunk_bytes.max(1);
        let Some(out) = self.snap.outgoing.get_mut(&from) else {
            return;
        };
        out.used_at = self.now;
        let total = out.image.len() as u64;
        let start = offset.min(total) as usize;
        let end = (start + chunk).min(out.image.len());
        let msg = PeerMsg::SnapshotChunk {
            index: out.index,
            total,
            checksum: out.checksum,
            offset: start as u64,
            data: out.image[start..end].to_vec(),
        };
        if end == out.image.len() {
            // The last piece: the peer asks for a fresh image if it needs
            // this one again.
            self.snap.outgoing.remove(&from);
        }
        self.send(from, msg);
    }

    pub(crate) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        index: LogIndex,
        total: u64,
        checksum: u32,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<(), ReplicaError> {
        let now = self.now;
        let retry = self.cfg.retry_ticks;
        let Some(fetch) = self.snap.fetch.as_mut().filter(|f| f.from == from) else {
            return Ok(());
        };
        if offset == 0 && fetch.data.is_empty() {
            fetch.index = Some(index);
            fetch.total = total;
            fetch.checksum = checksum;
        }
        let expected = (
            fetch.index,
            fetch.total,
            fetch.checksum,
            fetch.data.len() as u64,
        );
        if expected != (Some(index), total, checksum, offset) {
            // A stale answer (a retry crossed it): the timer asks again.
            return Ok(());
        }
        fetch.data.extend_from_slice(&data);
        fetch.retry_at = now + retry;
        // A transfer gives up when it stalls, not when it is long.
        fetch.deadline = now + self.cfg.request_timeout_ticks;
        if (fetch.data.len() as u64) < total {
            if data.is_empty() {
                self.snap.fetch = None;
                return Ok(());
            }
            let offset = fetch.data.len() as u64;
            self.send(from, PeerMsg::SnapshotRequest { offset });
            return Ok(());
        }
        let fetch = self.snap.fetch.take().expect("matched above");
        if crc32c::crc32c(&fetch.data) != checksum {
            tracing::warn!(group = %self.cfg.group, from = from.0, "snapshot image failed its checksum; fetching again later");
            return Ok(());
        }
        self.install(index, &fetch.data)
    }

    /// Installs an image of the database at `index` (see the module docs
    /// for when it is taken, used for the engine alone, or refused).
    fn install(&mut self, index: LogIndex, image: &[u8]) -> Result<(), ReplicaError> {
        let applied = self.engine.applied_index();
        let decided = self.decided();
        let compacted = self.compacted();
        let accepted = self.global(self.op.get_accepted_idx());
        if index <= applied && index > decided {
            // Useless to the engine, but a sign that the log lags it.
            return self.catch_log_up_with_engine();
        }
        if index <= applied || index.0 < self.cfg.base {
            return Ok(());
        }
        if index <= decided {
            if applied >= compacted || index < compacted {
                // The log brings the engine there (or the image does not
                // reach what is trimmed here).
                return Ok(());
            }
            self.engine.install(index, image)?;
        } else if index >= accepted {
            self.engine.install(index, image)?;
            self.reset_log(index)?;
        } else {
            // Short of entries this replica accepted: they stay. The engine
            // takes the image, and the log is trimmed at the image's index
            // and decided up to it (the image is of decided entries); what
            // was accepted after it, and its round, are kept.
            self.engine.install(index, image)?;
            self.keep_accepted_after(index)?;
        }
        self.snap.installed += 1;
        self.snap.behind_since = None;
        tracing::info!(group = %self.cfg.group, %index, bytes = image.len(), "installed a snapshot");
        self.answer_completed_writes();
        Ok(())
    }

    /// The log's decided index is behind the engine's applied index, and a
    /// peer's trimmed prefix is beyond it: the log must catch up by itself.
    ///
    /// The decided index is not forced to disk by every sync (the log lets
    /// it ride along with the next one: the leader can always tell it
    /// again), so a restarted replica's log may have decided fewer entries
    /// than its engine applied. Before compaction the leader did tell it
    /// again; but a peer that has trimmed past that decided index refuses
    /// this replica's `Prepare` and `Promise` (`SnapshotNeeded`), and the
    /// image it then sends is no use to the engine, which is already there.
    /// Without this, such a replica stays out until new writes make a
    /// longer image, and can keep a majority from forming meanwhile.
    ///
    /// Every entry below the engine's applied index was decided (only
    /// decided entries are applied, and the log holds the same ones), so the
    /// log may say so: if it holds nothing beyond the engine it is reset to
    /// an empty log trimmed there, as after an image install; otherwise only
    /// its decided index moves up, and the entries accepted beyond are kept.
    fn catch_log_up_with_engine(&mut self) -> Result<(), ReplicaError> {
        if self.stopped.is_some() {
            // The configuration is over: its log is left alone (as in
            // `maybe_compact`).
            return Ok(());
        }
        let applied = self.engine.applied_index();
        let accepted = self.global(self.op.get_accepted_idx());
        tracing::info!(group = %self.cfg.group, %applied, decided = %self.decided(), %accepted, "the log's decided index lags the engine; moving it up");
        if applied >= accepted {
            self.reset_log(applied)
        } else {
            let at = (applied.0 - self.cfg.base) as usize;
            self.rebuild_log(vec![StorageOp::SetDecidedIndex(at)])
        }
    }

    /// Replaces the log by an empty one trimmed at `index` and rebuilds
    /// OmniPaxos on it, as a restart would.
    /// The log after an image at `index` that is short of what this
    /// replica accepted: trimmed and decided up to `index`, the accepted
    /// entries after it (and the round they were accepted in) kept.
    fn keep_accepted_after(&mut self, index: LogIndex) -> Result<(), ReplicaError> {
        let at = (index.0 - self.cfg.base) as usize;
        tracing::info!(group = %self.cfg.group, %index, accepted = %self.global(self.op.get_accepted_idx()), "installed an image short of the accepted log; keeping the entries accepted after it");
        self.rebuild_log(vec![
            StorageOp::Trim(at),
            StorageOp::SetCompactedIdx(at),
            StorageOp::SetDecidedIndex(at),
            StorageOp::SetSnapshot(Some(Compacted)),
        ])
    }

    fn reset_log(&mut self, index: LogIndex) -> Result<(), ReplicaError> {
        let at = (index.0 - self.cfg.base) as usize;
        self.rebuild_log(vec![
            StorageOp::Trim(at),
            StorageOp::SetCompactedIdx(at),
            StorageOp::SetDecidedIndex(at),
            StorageOp::SetAcceptedRound(self.installed_round()),
            StorageOp::SetStopsign(None),
            StorageOp::SetSnapshot(Some(Compacted)),
        ])
    }

    /// Writes `ops` to the log storage and syncs (a decided index alone is
    /// not forced to disk, see `catch_log_up_with_engine`), then rebuilds
    /// OmniPaxos on the result, as a restart would.
    fn rebuild_log(&mut self, ops: Vec<StorageOp<Entry>>) -> Result<(), ReplicaError> {
        {
            let mut storage = self.storage.0.borrow_mut();
            storage
                .write_atomically(ops)
                .map_err(|e| ReplicaError::Log(std::io::Error::other(e.to_string())))?;
            storage.sync()?;
        }
        self.op = self
            .cluster
            .clone()
            .build_for_server(self.server.clone(), self.storage.clone())
            .map_err(|e| ReplicaError::Config(e.to_string()))?;
        for peer in self.cfg.nodes.clone() {
            if peer != self.cfg.node {
                self.op.reconnected(peer.0);
            }
        }
        Ok(())
    }

    /// The accepted round a log reset to an image claims. It must rank
    /// below every round entries were really accepted in (the log holds no
    /// accepted entries, so it must not outrank anyone's), and it must not
    /// equal the lowest ballot either: a leader elected when nobody had
    /// accepted anything takes a follower that claims that ballot for one
    /// of its own round's voters and syncs it from index 0. Real rounds
    /// have `n >= 1`; this one has `n = 0` and this node's id.
    fn installed_round(&self) -> Ballot {
        Ballot {
            config_id: self.cluster.configuration_id,
            n: 0,
            priority: 0,
            pid: self.cfg.node.0,
        }
    }

    /// Writers waiting on requests the installed image already holds get
    /// their answers now: their entries will never be applied here.
    fn answer_completed_writes(&mut self) {
        let index = self.engine.applied_index();
        let ids: Vec<_> = self.writes.keys().cloned().collect();
        for id in ids {
            if let Ok(Some(results)) = self.engine.completed(&id) {
                let p = self.writes.remove(&id).expect("listed above");
                for token in p.tokens {
                    let r = paxsql_types::Response {
                        results: results.clone(),
                        index,
                    };
                    self.reply(token, Ok(r));
                }
            }
        }
    }

    /// Step 5 of the loop: persist the database and trim the log below it.
    pub(crate) fn maybe_compact(&mut self) -> Result<(), ReplicaError> {
        if self.snap.unsupported
            || self.stopped.is_some()
            || self.now < self.snap.next_compaction_check
        {
            return Ok(());
        }
        self.snap.next_compaction_check = self.now + self.cfg.election_ticks.max(1);
        let applied = self.engine.applied_index().0;
        let compacted = self.compacted().0;
        if applied <= compacted {
            return Ok(());
        }
        let over_entries = applied - compacted >= self.cfg.snapshot_entries;
        let over_bytes = self.cfg.snapshot_bytes > 0 && self.log_bytes() >= self.cfg.snapshot_bytes;
        if !over_entries && !over_bytes {
            return Ok(());
        }
        let mut target = applied;
        if !over_bytes {
            // Keep what live peers still need to catch up entry by entry,
            // unless they are a whole interval behind.
            let floor = applied.saturating_sub(self.cfg.snapshot_entries);
            for (_, p) in self.live_peers() {
                target = target.min(p.applied.0.max(floor));
            }
        }
        if target <= compacted {
            return Ok(());
        }
        let durable = match self.engine.persist() {
            Ok(i) => i.0,
            Err(EngineError::Unsupported(what)) => {
                tracing::info!(group = %self.cfg.group, "the engine has no {what}: the log is never trimmed");
                self.snap.unsupported = true;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let target = target.min(durable);
        if target <= compacted {
            return Ok(());
        }
        match self
            .op
            .snapshot(Some((target - self.cfg.base) as usize), true)
        {
            Ok(()) => {
                self.snap.taken += 1;
                tracing::debug!(group = %self.cfg.group, trimmed_to = target, "log trimmed");
            }
            Err(e) => tracing::warn!(group = %self.cfg.group, "log trim refused: {e:?}"),
        }
        Ok(())
    }

    /// Whether a peer's last progress report is recent (four report periods).
    fn is_live(&self, p: &PeerProgress) -> bool {
        p.at + self.cfg.progress_ticks.max(1) * 4 >= self.now
    }

    /// Peers whose last progress report is recent.
    fn live_peers(&self) -> impl Iterator<Item = (NodeId, PeerProgress)> + '_ {
        self.snap
            .peers
            .iter()
            .filter(|(_, p)| self.is_live(p))
            .map(|(n, p)| (*n, *p))
    }
}
