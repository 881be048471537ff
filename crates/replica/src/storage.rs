//! The log storage as the replica sees it: OmniPaxos' `Storage` plus the one
//! thing OmniPaxos does not know about, `sync` (group commit).
//!
//! OmniPaxos owns its storage by value and offers no way back to it, so the
//! replica hands it a [`Shared`] view and keeps another for `sync`. Both live
//! on the replica's one owner thread, hence `Rc<RefCell<_>>`.

use omnipaxos::ballot_leader_election::Ballot;
use omnipaxos::storage::{StopSign, Storage, StorageOp, StorageResult};
use paxsql_types::Entry;
use std::cell::RefCell;
use std::rc::Rc;

/// Durable storage for a group's log.
pub trait LogStorage: Storage<Entry> {
    /// Makes every write so far durable. Called before any message the
    /// writes caused leaves the node.
    fn sync(&mut self) -> std::io::Result<()>;

    /// Bytes the log occupies on disk (0 for memory).
    fn bytes_on_disk(&self) -> u64 {
        0
    }
}

/// A second handle on the storage OmniPaxos owns.
pub(crate) struct Shared<S>(pub(crate) Rc<RefCell<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(Rc::clone(&self.0))
    }
}

type Snap = <Entry as omnipaxos::storage::Entry>::Snapshot;

impl<S: Storage<Entry>> Storage<Entry> for Shared<S> {
    fn write_atomically(&mut self, ops: Vec<StorageOp<Entry>>) -> StorageResult<()> {
        self.0.borrow_mut().write_atomically(ops)
    }
    fn append_entry(&mut self, entry: Entry) -> StorageResult<()> {
        self.0.borrow_mut().append_entry(entry)
    }
    fn append_entries(&mut self, entries: Vec<Entry>) -> StorageResult<()> {
        self.0.borrow_mut().append_entries(entries)
    }
    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<Entry>) -> StorageResult<()> {
        self.0.borrow_mut().append_on_prefix(from_idx, entries)
    }
    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        self.0.borrow_mut().set_promise(n_prom)
    }
    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        self.0.borrow_mut().set_decided_idx(ld)
    }
    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.0.borrow().get_decided_idx()
    }
    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        self.0.borrow_mut().set_accepted_round(na)
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.0.borrow().get_accepted_round()
    }
    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<Entry>> {
        self.0.borrow().get_entries(from, to)
    }
    fn get_log_len(&self) -> StorageResult<usize> {
        self.0.borrow().get_log_len()
    }
    fn get_suffix(&self, from: usize) -> StorageResult<Vec<Entry>> {
        self.0.borrow().get_suffix(from)
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.0.borrow().get_promise()
    }
    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        self.0.borrow_mut().set_stopsign(s)
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.0.borrow().get_stopsign()
    }
    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        self.0.borrow_mut().trim(idx)
    }
    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        self.0.borrow_mut().set_compacted_idx(idx)
    }
    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.0.borrow().get_compacted_idx()
    }
    fn set_snapshot(&mut self, snapshot: Option<Snap>) -> StorageResult<()> {
        self.0.borrow_mut().set_snapshot(snapshot)
    }
    fn get_snapshot(&self) -> StorageResult<Option<Snap>> {
        self.0.borrow().get_snapshot()
    }
}

impl LogStorage for paxsql_log::MemoryStorage<Entry> {
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<F: paxsql_log::LogFile> LogStorage for paxsql_log::DurableStorage<Entry, F> {
    fn sync(&mut self) -> std::io::Result<()> {
        paxsql_log::DurableStorage::sync(self)
    }

    fn bytes_on_disk(&self) -> u64 {
        paxsql_log::DurableStorage::bytes_on_disk(self)
    }
}
