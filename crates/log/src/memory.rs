//! The in-memory log: OmniPaxos storage semantics, no durability.
//!
//! It is used on its own in tests and simulations, and as the read mirror of
//! [`DurableStorage`](crate::DurableStorage). Every mutation goes through [`Op`] in two steps,
//! [`MemoryStorage::check`] (may fail, changes nothing) then [`MemoryStorage::apply`] (cannot
//! fail), so that a batch is validated as a whole before any of it is applied or written to
//! disk. That split is what makes `write_atomically` atomic here without an undo log.

use std::{collections::VecDeque, fmt};

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, Storage, StorageOp, StorageResult},
};

use crate::{error::LogError, op::Op};

/// An in-memory [`Storage`] with a compacted prefix.
///
/// Indices are absolute (as if nothing had ever been trimmed). The log holds the entries at
/// `log_start .. log_end`; `get_log_len` is `log_end - log_start`. OmniPaxos always pairs
/// `trim(i)` with `set_compacted_idx(i)`, so `log_start == compacted_idx` in practice, but they
/// are stored apart: `trim` moves the data, `set_compacted_idx` only records a number.
///
/// Beyond the upstream `omnipaxos_storage` memory storage, out-of-range requests do not
/// underflow: reads that are not fully available return an empty vector, and an
/// `append_on_prefix` that would leave a hole or rewrite a trimmed prefix is refused with an
/// error instead of silently misplacing entries.
#[derive(Clone)]
pub struct MemoryStorage<T: Entry> {
    /// Entries at absolute indices `log_start .. log_start + log.len()`.
    log: VecDeque<T>,
    /// Absolute index of `log[0]`; everything below was trimmed.
    /// Invariant: never decreases.
    log_start: usize,
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
    decided_idx: usize,
    compacted_idx: usize,
    stopsign: Option<StopSign>,
    snapshot: Option<T::Snapshot>,
}

impl<T: Entry> Default for MemoryStorage<T> {
    fn default() -> Self {
        Self {
            log: VecDeque::new(),
            log_start: 0,
            promise: None,
            accepted_round: None,
            decided_idx: 0,
            compacted_idx: 0,
            stopsign: None,
            snapshot: None,
        }
    }
}

impl<T: Entry> fmt::Debug for MemoryStorage<T> {
    // The log itself can be large: show its bounds, not its entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("log_start", &self.log_start)
            .field("log_end", &self.log_end())
            .field("promise", &self.promise)
            .field("accepted_round", &self.accepted_round)
            .field("decided_idx", &self.decided_idx)
            .field("compacted_idx", &self.compacted_idx)
            .field("stopsign", &self.stopsign)
            .field("has_snapshot", &self.snapshot.is_some())
            .finish()
    }
}

impl<T, S> PartialEq for MemoryStorage<T>
where
    T: Entry<Snapshot = S> + PartialEq,
    S: PartialEq,
{
    fn eq(&self, other: &Self) -> bool {
        self.log == other.log
            && self.log_start == other.log_start
            && self.promise == other.promise
            && self.accepted_round == other.accepted_round
            && self.decided_idx == other.decided_idx
            && self.compacted_idx == other.compacted_idx
            && self.stopsign == other.stopsign
            && self.snapshot == other.snapshot
    }
}

impl<T: Entry> MemoryStorage<T> {
    /// An empty log: nothing promised, accepted, decided or trimmed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Absolute index of the first entry still held (everything below was trimmed).
    pub fn log_start(&self) -> usize {
        self.log_start
    }

    /// One past the absolute index of the last entry held.
    pub fn log_end(&self) -> usize {
        self.log_start + self.log.len()
    }

    /// Verifies that `ops`, applied in order, are all valid; changes nothing.
    pub(crate) fn check(&self, ops: &[Op<T>]) -> Result<(), LogError> {
        let (mut start, mut end) = (self.log_start, self.log_end());
        for op in ops {
            match op {
                Op::AppendEntries(es) => end += es.len(),
                Op::AppendOnPrefix(from, es) => {
                    check_prefix(*from, es.len(), start, end)?;
                    if *from <= end {
                        end = from + es.len();
                    }
                }
                Op::Trim(idx) if *idx > start => {
                    start = *idx;
                    end = end.max(start);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies ops that [`Self::check`] accepted.
    pub(crate) fn apply_all(&mut self, ops: Vec<Op<T>>) {
        for op in ops {
            self.apply(op);
        }
    }

    /// Applies one op. Panics on an op that [`Self::check`] would refuse: that is a bug here.
    pub(crate) fn apply(&mut self, op: Op<T>) {
        match op {
            Op::AppendEntries(es) => self.log.extend(es),
            Op::AppendOnPrefix(from, es) => self.apply_append_on_prefix(from, es),
            Op::SetPromise(b) => self.promise = Some(b),
            Op::SetDecidedIdx(i) => self.decided_idx = i,
            Op::SetAcceptedRound(b) => self.accepted_round = Some(b),
            Op::SetCompactedIdx(i) => self.compacted_idx = i,
            Op::Trim(idx) => self.apply_trim(idx),
            Op::SetStopsign(s) => self.stopsign = s,
            Op::SetSnapshot(s) => self.snapshot = s,
        }
    }

    fn apply_append_on_prefix(&mut self, from: usize, entries: Vec<T>) {
        let (start, end) = (self.log_start, self.log_end());
        assert!(check_prefix(from, entries.len(), start, end).is_ok());
        if from <= end {
            self.log.truncate(from - start);
            self.log.extend(entries);
        }
        // Otherwise `entries` is empty and truncating past the end changes nothing.
    }

    fn apply_trim(&mut self, idx: usize) {
        if idx <= self.log_start {
            return;
        }
        let drop = (idx - self.log_start).min(self.log.len());
        self.log.drain(..drop);
        // Trimming past the end (a follower installing a snapshot) leaves an empty log that
        // starts at `idx`, where the following `append_on_prefix(idx, ..)` continues it.
        self.log_start = idx;
    }

    /// The ops that rebuild this state from an empty log, metadata first, then the entries
    /// in chunks of at most `chunk_len`. Used to checkpoint the record file.
    pub(crate) fn checkpoint_ops(&self, chunk_len: usize) -> Vec<Vec<Op<T>>> {
        assert!(chunk_len > 0);
        let mut records = vec![self.metadata_ops()];
        let mut entries = self.log.iter();
        loop {
            let chunk: Vec<T> = entries.by_ref().take(chunk_len).cloned().collect();
            if chunk.is_empty() {
                return records;
            }
            records.push(vec![Op::AppendEntries(chunk)]);
        }
    }

    fn metadata_ops(&self) -> Vec<Op<T>> {
        let mut ops = vec![
            Op::Trim(self.log_start),
            Op::SetCompactedIdx(self.compacted_idx),
            Op::SetDecidedIdx(self.decided_idx),
            Op::SetStopsign(self.stopsign.clone()),
            Op::SetSnapshot(self.snapshot.clone()),
        ];
        ops.extend(self.promise.map(Op::SetPromise));
        ops.extend(self.accepted_round.map(Op::SetAcceptedRound));
        ops
    }

    /// Checks then applies a whole batch: all of it or none of it.
    fn write(&mut self, ops: Vec<Op<T>>) -> StorageResult<()> {
        self.check(&ops)?;
        self.apply_all(ops);
        Ok(())
    }

    /// `log[from - log_start .. to - log_start]` when it is fully held.
    fn range(&self, from: usize, to: usize) -> Option<std::collections::vec_deque::Iter<'_, T>> {
        if from < self.log_start || to > self.log_end() || from > to {
            return None;
        }
        Some(self.log.range(from - self.log_start..to - self.log_start))
    }
}

/// Refuses an `append_on_prefix(from, ..)` that would rewrite trimmed entries or leave a hole.
/// Starting past the end with nothing to append is a no-op, not an error: OmniPaxos does that
/// when a follower's accepted index counts a stopsign that is not a log entry.
fn check_prefix(from: usize, len: usize, start: usize, end: usize) -> Result<(), LogError> {
    if from < start {
        return Err(LogError::PrefixTrimmed {
            from_idx: from,
            log_start: start,
        });
    }
    if from > end && len > 0 {
        return Err(LogError::Gap {
            from_idx: from,
            log_end: end,
        });
    }
    Ok(())
}

impl<T: Entry> Storage<T> for MemoryStorage<T> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        self.write(ops.into_iter().map(Op::from).collect())
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        self.write(vec![Op::AppendEntries(vec![entry])])
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        self.write(vec![Op::AppendEntries(entries)])
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        self.write(vec![Op::AppendOnPrefix(from_idx, entries)])
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.write(vec![Op::SetPromise(n_prom)])
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.write(vec![Op::SetDecidedIdx(ld)])
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        Ok(self.decided_idx)
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.write(vec![Op::SetAcceptedRound(na)])
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.accepted_round)
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        Ok(self
            .range(from, to)
            .map(|r| r.cloned().collect())
            .unwrap_or_default())
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        Ok(self.log.len())
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        if from < self.log_start {
            // OmniPaxos asks for a suffix below the trimmed prefix when a lagging replica needs
            // entries that were trimmed without a snapshot (see PITFALLS). The trait demands an
            // empty answer; make the situation visible.
            tracing::warn!(
                from,
                log_start = self.log_start,
                "get_suffix below the trimmed prefix: a replica needs entries that are gone"
            );
        }
        self.get_entries(from, self.log_end().max(from))
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.promise)
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.write(vec![Op::SetStopsign(s)])
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.stopsign.clone())
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.write(vec![Op::Trim(idx)])
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.write(vec![Op::SetCompactedIdx(idx)])
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        Ok(self.compacted_idx)
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        self.write(vec![Op::SetSnapshot(snapshot)])
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use omnipaxos::storage::NoSnapshot;

    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct E(u64);

    impl Entry for E {
        type Snapshot = NoSnapshot;
    }

    fn log_of(n: u64) -> MemoryStorage<E> {
        let mut s = MemoryStorage::new();
        s.append_entries((0..n).map(E).collect()).unwrap();
        s
    }

    #[test]
    fn append_on_prefix_past_the_end_with_entries_is_a_gap() {
        let mut s = log_of(3);
        let err = s.append_on_prefix(5, vec![E(9)]).unwrap_err();
        assert!(err.to_string().contains("gap"), "{err}");
        assert_eq!(s, log_of(3));
        s.append_on_prefix(5, vec![]).unwrap();
        assert_eq!(s, log_of(3), "nothing to append past the end is a no-op");
    }

    #[test]
    fn append_on_prefix_below_the_trimmed_prefix_is_refused() {
        let mut s = log_of(5);
        s.trim(3).unwrap();
        let before = s.clone();
        assert!(s.append_on_prefix(2, vec![E(9)]).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn an_invalid_op_rejects_the_whole_batch() {
        let mut s = log_of(3);
        let batch = vec![
            StorageOp::SetDecidedIndex(2),
            StorageOp::AppendEntry(E(3)),
            StorageOp::AppendOnPrefix(9, vec![E(9)]),
        ];
        assert!(s.write_atomically(batch).is_err());
        assert_eq!(s, log_of(3));
    }

    #[test]
    fn check_follows_earlier_ops_in_the_batch() {
        let mut s = log_of(3);
        // Valid only because the append before it extends the log to 5.
        s.write_atomically(vec![
            StorageOp::AppendEntries(vec![E(3), E(4)]),
            StorageOp::AppendOnPrefix(5, vec![E(5)]),
        ])
        .unwrap();
        assert_eq!(s.log_end(), 6);
    }

    #[test]
    fn trim_never_moves_the_start_back() {
        let mut s = log_of(6);
        s.trim(4).unwrap();
        s.trim(2).unwrap();
        assert_eq!(s.log_start(), 4);
        assert_eq!(s.get_entries(4, 6).unwrap(), vec![E(4), E(5)]);
    }

    #[test]
    fn checkpoint_ops_rebuild_the_same_state() {
        let mut s = log_of(10);
        s.write_atomically(vec![
            StorageOp::Trim(3),
            StorageOp::SetCompactedIdx(3),
            StorageOp::SetDecidedIndex(7),
            StorageOp::SetPromise(Ballot::with(1, 4, 0, 2)),
            StorageOp::SetSnapshot(Some(NoSnapshot)),
        ])
        .unwrap();
        for chunk_len in [1, 3, 100] {
            let mut rebuilt = MemoryStorage::new();
            for ops in s.checkpoint_ops(chunk_len) {
                rebuilt.check(&ops).unwrap();
                rebuilt.apply_all(ops);
            }
            assert_eq!(rebuilt, s, "chunk_len {chunk_len}");
        }
    }

    #[test]
    fn checkpoint_of_a_log_trimmed_past_its_end_keeps_the_start() {
        let mut s = log_of(2);
        s.trim(10).unwrap();
        let mut rebuilt = MemoryStorage::new();
        for ops in s.checkpoint_ops(4) {
            rebuilt.apply_all(ops);
        }
        assert_eq!(rebuilt.log_start(), 10);
        assert_eq!(rebuilt, s);
    }
}
