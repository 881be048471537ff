//! [`SharedStorage`]: a storage OmniPaxos can own while the replica loop keeps a handle.
//!
//! `OmniPaxosConfig::build` takes the storage by value and never gives it back, yet the loop
//! must call [`DurableStorage::sync`](crate::DurableStorage::sync) after each batch. Both
//! sides therefore hold a clone of one `Arc<Mutex<_>>`. The lock is never contended (one
//! thread owns the replica); it only makes the handle `Send`.

use std::sync::{Arc, Mutex, MutexGuard};

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, Storage, StorageOp, StorageResult},
};

/// A cloneable handle to one storage; every clone sees the same state.
#[derive(Debug, Default)]
pub struct SharedStorage<S>(Arc<Mutex<S>>);

impl<S> Clone for SharedStorage<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S> SharedStorage<S> {
    /// Wraps `storage`; clone the result to get more handles.
    pub fn new(storage: S) -> Self {
        Self(Arc::new(Mutex::new(storage)))
    }

    /// Locks the storage, e.g. to `sync` it or read its metrics.
    ///
    /// Panics if an earlier holder panicked: the storage may be half-updated.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.0
            .lock()
            .expect("log storage lock poisoned by an earlier panic")
    }

    /// The storage itself, if this is the last handle (OmniPaxos was dropped).
    pub fn into_inner(self) -> Result<S, Self> {
        match Arc::try_unwrap(self.0) {
            Ok(mutex) => Ok(mutex
                .into_inner()
                .expect("log storage lock poisoned by an earlier panic")),
            Err(arc) => Err(Self(arc)),
        }
    }
}

impl<T: Entry, S: Storage<T>> Storage<T> for SharedStorage<S> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        self.lock().write_atomically(ops)
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        self.lock().append_entry(entry)
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        self.lock().append_entries(entries)
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        self.lock().append_on_prefix(from_idx, entries)
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.lock().set_promise(n_prom)
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.lock().set_decided_idx(ld)
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.lock().get_decided_idx()
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.lock().set_accepted_round(na)
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.lock().get_accepted_round()
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        self.lock().get_entries(from, to)
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        self.lock().get_log_len()
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        self.lock().get_suffix(from)
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.lock().get_promise()
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.lock().set_stopsign(s)
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.lock().get_stopsign()
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.lock().trim(idx)
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.lock().set_compacted_idx(idx)
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.lock().get_compacted_idx()
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        self.lock().set_snapshot(snapshot)
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        self.lock().get_snapshot()
    }
}
