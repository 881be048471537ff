//! `linearizable` reads by read index: no log entry, no fsync.
//!
//! OmniPaxos has no read-index API; this is built beside it:
//!
//! 1. **The index.** Reads that arrive at the leader (in its accept phase)
//!    between two polls form a round. The round's index is the end of the
//!    leader's log at that poll: every write acknowledged before the reads
//!    began was decided, and a leader's log holds every decided entry.
//! 2. **The confirmation.** The leader asks every peer for its promised
//!    ballot ([`PeerMsg::ReadIndexPing`]); the round is confirmed once a
//!    majority (the leader included) answered with the leader's own ballot.
//!    A leader deposed before the pings were answered cannot get that
//!    majority: a newer leader needed a majority of promises to a higher
//!    ballot before it could decide anything, and those replicas now answer
//!    with it. Pings and answers carry the leader's run (`epoch`), so an
//!    answer to a ping sent before a restart never confirms a new round.
//! 3. **The read** runs once this replica has applied up to the index.
//!
//! A follower asks the leader for an index ([`PeerMsg::ReadIndexAsk`]); the
//! leader puts the ask in its next round and answers with the confirmed
//! index ([`PeerMsg::ReadIndexReply`]); the follower reads itself once it has
//! applied that far. Whatever does not work out at once — no leader known,
//! a round or an ask unanswered within `retry_ticks`, a leader that no
//! longer leads — falls back to the barrier path (a no-op entry through the
//! log), which needs nothing but the log.

use super::*;
use omnipaxos::ballot_leader_election::Ballot;
use std::collections::BTreeSet;

/// The read-index state of a replica.
#[derive(Default)]
pub(crate) struct ReadIndex {
    /// `linearizable` reads that arrived since the last poll.
    pub(crate) waiting: Vec<PendingRead>,
    /// Followers' asks that arrived since the last poll: (node, its run,
    /// its id for the ask).
    asks: Vec<(NodeId, u64, u64)>,
    /// Rounds being confirmed (leader), by sequence number.
    rounds: BTreeMap<u64, Round>,
    next_round: u64,
    /// Asks sent to the leader (follower), by id: the reads, and when to
    /// give up on the answer.
    asked: BTreeMap<u64, (Vec<PendingRead>, u64)>,
    next_ask: u64,
    /// Reads with a confirmed index, waiting for this replica to apply it.
    ready: Vec<(LogIndex, PendingRead)>,
}

/// One round of confirmation at the leader.
struct Round {
    /// The ballot the leader led with when the round started.
    ballot: Ballot,
    /// Entries the reads wait for.
    index: LogIndex,
    /// Who answered with `ballot` (the leader itself included).
    acks: BTreeSet<NodeId>,
    reads: Vec<PendingRead>,
    asks: Vec<(NodeId, u64, u64)>,
    give_up_at: u64,
}

impl ReadIndex {
    /// Requests waiting here.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
            + self.rounds.values().map(|r| r.reads.len()).sum::<usize>()
            + self.asked.values().map(|(r, _)| r.len()).sum::<usize>()
            + self.ready.len()
    }

    /// Every waiting client's token, the state emptied.
    pub(crate) fn take_tokens(&mut self) -> Vec<ClientToken> {
        let mut reads: Vec<PendingRead> = std::mem::take(&mut self.waiting);
        for (_, r) in std::mem::take(&mut self.rounds) {
            reads.extend(r.reads);
        }
        for (_, (r, _)) in std::mem::take(&mut self.asked) {
            reads.extend(r);
        }
        reads.extend(std::mem::take(&mut self.ready).into_iter().map(|(_, r)| r));
        reads.into_iter().map(|r| r.token).collect()
    }
}

impl<E: SqlEngine, S: LogStorage> Replica<E, S> {
    /// Whether this replica leads, in its accept phase.
    pub(crate) fn leads(&self) -> bool {
        self.op
            .get_current_leader()
            .is_some_and(|(pid, accept)| accept && NodeId(pid) == self.cfg.node)
    }

    /// Step 1 of a poll, for `linearizable` reads: the reads (and asks)
    /// that arrived since the last poll start a round (leader), go to the
    /// leader as an ask (follower), or take the barrier path (no leader).
    pub(crate) fn start_read_index(&mut self) {
        if self.ri.waiting.is_empty() && self.ri.asks.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.ri.waiting);
        let asks = std::mem::take(&mut self.ri.asks);
        if self.leads() {
            let seq = self.ri.next_round;
            self.ri.next_round += 1;
            let ballot = self.op.get_promise();
            let round = Round {
                ballot,
                index: self.global(self.op.get_accepted_idx()),
                acks: BTreeSet::from([self.cfg.node]),
                reads,
                asks,
                give_up_at: self.now + self.cfg.retry_ticks,
            };
            self.ri.rounds.insert(seq, round);
            if self.cfg.broken == Some(Broken::ReadIndexWithoutQuorum) {
                // Deliberately wrong: confirmed without asking anyone.
                self.confirm_round(seq);
                return;
            }
            let epoch = self.cfg.epoch;
            let peers: Vec<NodeId> = self
                .cfg
                .nodes
                .iter()
                .copied()
                .filter(|&n| n != self.cfg.node)
                .collect();
            for peer in peers {
                self.send(peer, PeerMsg::ReadIndexPing { epoch, seq, ballot });
            }
            self.maybe_confirm(seq);
            return;
        }
        self.refuse_asks(asks);
        if reads.is_empty() {
            return;
        }
        match self.believed_leader() {
            Some(leader) if leader != self.cfg.node => {
                let id = self.ri.next_ask;
                self.ri.next_ask += 1;
                let give_up_at = self.now + self.cfg.retry_ticks;
                self.ri.asked.insert(id, (reads, give_up_at));
                let epoch = self.cfg.epoch;
                self.send(leader, PeerMsg::ReadIndexAsk { epoch, id });
            }
            _ => self.reads_unbarriered.extend(reads),
        }
    }

    /// Followers' asks this replica cannot answer with an index: they take
    /// the barrier path.
    fn refuse_asks(&mut self, asks: Vec<(NodeId, u64, u64)>) {
        for (node, epoch, id) in asks {
            let index = None;
            self.send(node, PeerMsg::ReadIndexReply { epoch, id, index });
        }
    }

    /// A leader asks for this replica's promise.
    pub(crate) fn on_read_index_ping(&mut self, from: NodeId, epoch: u64, seq: u64) {
        let promise = self.op.get_promise();
        self.send(
            from,
            PeerMsg::ReadIndexAck {
                epoch,
                seq,
                promise,
            },
        );
    }

    /// A peer's promise, for a round of this run.
    pub(crate) fn on_read_index_ack(
        &mut self,
        from: NodeId,
        epoch: u64,
        seq: u64,
        promise: Ballot,
    ) {
        if epoch != self.cfg.epoch {
            return;
        }
        if let Some(round) = self.ri.rounds.get_mut(&seq) {
            if promise == round.ballot {
                round.acks.insert(from);
            }
            self.maybe_confirm(seq);
        }
    }

    /// A follower asks for a read index: it joins the next round.
    pub(crate) fn on_read_index_ask(&mut self, from: NodeId, epoch: u64, id: u64) {
        self.ri.asks.push((from, epoch, id));
    }

    /// The leader's answer to an ask of this run.
    pub(crate) fn on_read_index_reply(&mut self, epoch: u64, id: u64, index: Option<LogIndex>) {
        if epoch != self.cfg.epoch {
            return;
        }
        let Some((reads, _)) = self.ri.asked.remove(&id) else {
            return;
        };
        match index {
            Some(index) => self.ri.ready.extend(reads.into_iter().map(|r| (index, r))),
            None => self.reads_unbarriered.extend(reads),
        }
    }

    fn maybe_confirm(&mut self, seq: u64) {
        let majority = self.cfg.nodes.len() / 2 + 1;
        if self
            .ri
            .rounds
            .get(&seq)
            .is_some_and(|r| r.acks.len() >= majority)
        {
            self.confirm_round(seq);
        }
    }

    fn confirm_round(&mut self, seq: u64) {
        let Some(round) = self.ri.rounds.remove(&seq) else {
            return;
        };
        let index = round.index;
        self.ri
            .ready
            .extend(round.reads.into_iter().map(|r| (index, r)));
        for (node, epoch, id) in round.asks {
            let index = Some(index);
            self.send(node, PeerMsg::ReadIndexReply { epoch, id, index });
        }
    }

    /// Step 4, after applying: reads whose index is applied here run.
    pub(crate) fn serve_read_index(&mut self) {
        if self.ri.ready.is_empty() {
            return;
        }
        let applied = self.engine.applied_index();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ri.ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ri.ready = later;
        for (_, read) in due {
            self.serve(read);
        }
    }

    /// On the timer: rounds and asks not answered in time take the barrier
    /// path; an asking follower is told no.
    pub(crate) fn retry_read_index(&mut self) {
        let now = self.now;
        let late: Vec<u64> = self
            .ri
            .rounds
            .iter()
            .filter(|(_, r)| r.give_up_at <= now)
            .map(|(&seq, _)| seq)
            .collect();
        for seq in late {
            let round = self.ri.rounds.remove(&seq).expect("listed above");
            self.reads_unbarriered.extend(round.reads);
            self.refuse_asks(round.asks);
        }
        let late: Vec<u64> = self
            .ri
            .asked
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            let (reads, _) = self.ri.asked.remove(&id).expect("listed above");
            self.reads_unbarriered.extend(reads);
        }
    }

    /// Reads whose deadline passed while they waited to be applied.
    pub(crate) fn expired_read_index(&mut self) -> Vec<ClientToken> {
        let now = self.now;
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ri.ready)
            .into_iter()
            .partition(|(_, r)| r.deadline <= now);
        self.ri.ready = kept;
        gone.into_iter().map(|(_, r)| r.token).collect()
    }
}
