//! The unit of change shared by the in-memory log and the record file.
//!
//! OmniPaxos's [`StorageOp`] is neither serializable nor cloneable, so every mutation is first
//! converted into an [`Op`], which is what a record on disk holds and what
//! [`MemoryStorage`](crate::MemoryStorage) applies. The variant order is part of the file
//! format: append new variants at the end and never reorder.

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, StorageOp},
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// One mutation of the log state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: DeserializeOwned"))]
pub(crate) enum Op<T: Entry> {
    /// Appends at the end of the log (also used for a single `append_entry`).
    AppendEntries(Vec<T>),
    /// Truncates at absolute index `.0`, then appends `.1`.
    AppendOnPrefix(usize, Vec<T>),
    SetPromise(Ballot),
    SetDecidedIdx(usize),
    SetAcceptedRound(Ballot),
    SetCompactedIdx(usize),
    /// Drops the entries below absolute index `.0`.
    Trim(usize),
    SetStopsign(Option<StopSign>),
    SetSnapshot(Option<T::Snapshot>),
}

impl<T: Entry> From<StorageOp<T>> for Op<T> {
    fn from(op: StorageOp<T>) -> Self {
        match op {
            StorageOp::AppendEntry(e) => Op::AppendEntries(vec![e]),
            StorageOp::AppendEntries(es) => Op::AppendEntries(es),
            StorageOp::AppendOnPrefix(from, es) => Op::AppendOnPrefix(from, es),
            StorageOp::SetPromise(b) => Op::SetPromise(b),
            StorageOp::SetDecidedIndex(i) => Op::SetDecidedIdx(i),
            StorageOp::SetAcceptedRound(b) => Op::SetAcceptedRound(b),
            StorageOp::SetCompactedIdx(i) => Op::SetCompactedIdx(i),
            StorageOp::Trim(i) => Op::Trim(i),
            StorageOp::SetStopsign(s) => Op::SetStopsign(s),
            StorageOp::SetSnapshot(s) => Op::SetSnapshot(s),
        }
    }
}
