//! [`DurableStorage`]: the in-memory log mirrored by an append-only record file.

use std::{fmt, io};

use omnipaxos::{
    ballot_leader_election::Ballot,
    storage::{Entry, StopSign, Storage, StorageOp, StorageResult},
};
use serde::{de::DeserializeOwned, Serialize};

use crate::{
    error::LogError,
    file::LogFile,
    format::{self, Frame, Header, FILE_HEADER_LEN},
    memory::MemoryStorage,
    op::Op,
};

/// Thresholds for rewriting the record file (file compaction, not OmniPaxos's trim).
///
/// The file is rewritten as a checkpoint of the current state, at a `sync`, once it is larger
/// than `max(compact_min_bytes, compact_ratio × checkpoint size)`. The ratio bounds the space
/// wasted by overwritten metadata and trimmed entries; the minimum keeps small logs from being
/// rewritten over and over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Never rewrite a file smaller than this.
    pub compact_min_bytes: u64,
    /// Rewrite once the file is this many times larger than its checkpoint. At least 2
    /// (opening panics otherwise: below that, every sync could rewrite the whole file).
    pub compact_ratio: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            compact_min_bytes: 64 << 20,
            compact_ratio: 4,
        }
    }
}

impl LogOptions {
    /// The file size above which a state whose checkpoint takes `live_bytes` is rewritten.
    fn compaction_threshold(&self, live_bytes: u64) -> u64 {
        self.compact_min_bytes
            .max(live_bytes.saturating_mul(self.compact_ratio))
    }
}

/// Entries per record in a checkpoint; a chunk that encodes too large is split further.
const CHECKPOINT_ENTRIES_PER_RECORD: usize = 4096;

/// A durable OmniPaxos [`Storage`]: reads come from an in-memory mirror, every mutation is
/// first appended to a [`LogFile`] as one checksummed record.
///
/// Records are not synced per call: call [`DurableStorage::sync`] after each batch of
/// OmniPaxos calls and before anything they produced leaves the node (see the crate docs).
/// OmniPaxos takes its storage by value, so wrap this in a
/// [`SharedStorage`](crate::SharedStorage) to keep a handle for `sync`.
pub struct DurableStorage<T: Entry, F: LogFile> {
    mirror: MemoryStorage<T>,
    file: F,
    options: LogOptions,
    /// Bytes handed to `file`: header plus whole records, synced or not.
    file_len: u64,
    /// Records were appended since the last sync.
    dirty: bool,
    /// An append, sync or rewrite failed: the file may end in a partial record, so nothing
    /// more may be appended after it (it would be cut at the next open). Reopening recovers.
    poisoned: bool,
    /// The file size at which compaction is next considered.
    /// Invariant: `>= options.compact_min_bytes`.
    next_compaction_check: u64,
}

impl<T: Entry, F: LogFile + fmt::Debug> fmt::Debug for DurableStorage<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableStorage")
            .field("mirror", &self.mirror)
            .field("file", &self.file)
            .field("file_len", &self.file_len)
            .field("dirty", &self.dirty)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<T, F> DurableStorage<T, F>
where
    T: Entry + Serialize + DeserializeOwned,
    F: LogFile,
{
    /// Opens the log in `file` with default [`LogOptions`]; see [`Self::open_with_options`].
    pub fn open(file: F) -> Result<Self, LogError> {
        Self::open_with_options(file, LogOptions::default())
    }

    /// Replays every record of `file` into memory, cuts a torn or corrupt tail, and syncs.
    ///
    /// An empty file (or one holding only part of a header) becomes a new log. A file that
    /// is not a paxsql log, or is one of another format version, is refused untouched.
    pub fn open_with_options(mut file: F, options: LogOptions) -> Result<Self, LogError> {
        assert!(
            options.compact_ratio >= 2,
            "compact_ratio must be at least 2"
        );
        let bytes = file.read_all()?;
        let mut mirror = MemoryStorage::new();
        let file_len = match format::read_file_header(&bytes)? {
            Header::Missing => start_new_file(&mut file, bytes.len())?,
            Header::Valid => {
                let valid_len = replay(&bytes, &mut mirror)?;
                cut_tail(&mut file, &bytes, valid_len)?;
                valid_len
            }
        };
        // What we just read may exist only in the page cache (the process died, the machine
        // did not); it must be durable before anything derived from it leaves the node.
        file.sync()?;
        Ok(Self {
            mirror,
            file,
            options,
            file_len: file_len as u64,
            dirty: false,
            poisoned: false,
            next_compaction_check: options.compaction_threshold(0),
        })
    }

    /// Makes every record appended so far durable, then rewrites the file if it outgrew its
    /// [`LogOptions`]. Without records that need an fsync, it only hands buffered ones (a decided index) to the OS.
    ///
    /// After an error the storage refuses all further writes: whether the failed fsync kept
    /// the data is unknowable (its retry may "succeed" without writing anything), so the only
    /// safe continuation is to reopen from the file.
    pub fn sync(&mut self) -> io::Result<()> {
        self.ensure_usable()?;
        if !self.dirty {
            // Records that need no fsync (a decided index) still leave the
            // process's buffer, so a restart after the process ends —
            // however it ends — finds them.
            if let Err(e) = self.file.flush() {
                self.poisoned = true;
                return Err(e);
            }
            return Ok(());
        }
        // Poisoned until this sync and any rewrite succeed: every `?` below leaves it set.
        self.poisoned = true;
        self.file.sync()?;
        self.dirty = false;
        self.maybe_compact()?;
        self.poisoned = false;
        Ok(())
    }

    /// Bytes in the record file, including records appended but not yet synced.
    pub fn bytes_on_disk(&self) -> u64 {
        self.file_len
    }

    /// Whether records were appended since the last [`Self::sync`].
    pub fn needs_sync(&self) -> bool {
        self.dirty
    }

    /// The in-memory state, which includes records not yet synced.
    pub fn memory(&self) -> &MemoryStorage<T> {
        &self.mirror
    }

    /// The underlying file.
    pub fn file(&self) -> &F {
        &self.file
    }

    /// Gives the file back, e.g. to simulate a crash on it and reopen. Unsynced records stay
    /// wherever the file keeps them.
    pub fn into_file(self) -> F {
        self.file
    }

    fn ensure_usable(&self) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        Ok(())
    }

    /// Validates `ops`, appends them as one record, then applies them to the mirror. On any
    /// error the mirror is unchanged.
    fn log(&mut self, ops: Vec<Op<T>>) -> Result<(), LogError> {
        self.ensure_usable()?;
        self.mirror.check(&ops)?;
        let record = format::encode_record(&ops)?;
        if let Err(e) = self.file.append(&record) {
            self.poisoned = true;
            return Err(e.into());
        }
        self.file_len += record.len() as u64;
        // The decided index is knowledge the leader can always give back, not
        // a promise: it rides along with the next sync instead of forcing
        // one (saves an fsync per write on every follower).
        if !ops.iter().all(|op| matches!(op, Op::SetDecidedIdx(_))) {
            self.dirty = true;
        }
        self.mirror.apply_all(ops);
        Ok(())
    }

    /// Rewrites the file as a checkpoint once it is `compact_ratio` times larger than one.
    ///
    /// Measuring the checkpoint means building it, so that only happens when the file passes
    /// `next_compaction_check`, which then moves to `compact_ratio ×` the checkpoint size:
    /// the cost is amortized over at least as many appended bytes as it spends.
    fn maybe_compact(&mut self) -> Result<(), LogError> {
        if self.file_len <= self.next_compaction_check {
            return Ok(());
        }
        let image = self.checkpoint_image()?;
        let live = image.len() as u64;
        if self.file_len > self.options.compaction_threshold(live) {
            self.file.replace(&image)?;
            tracing::debug!(before = self.file_len, after = live, "rewrote log file");
            self.file_len = live;
        }
        self.next_compaction_check = self.options.compaction_threshold(live);
        assert!(self.file_len <= self.next_compaction_check);
        Ok(())
    }

    /// A whole file (header and records) that replays to the current state.
    fn checkpoint_image(&self) -> Result<Vec<u8>, LogError> {
        let mut image = format::file_header().to_vec();
        for ops in self.mirror.checkpoint_ops(CHECKPOINT_ENTRIES_PER_RECORD) {
            encode_splitting(&mut image, ops)?;
        }
        Ok(image)
    }
}

/// Writes the header of a new log over an empty or header-torn file; returns its length.
fn start_new_file<F: LogFile>(file: &mut F, old_len: usize) -> Result<usize, LogError> {
    if old_len > 0 {
        tracing::warn!(old_len, "log file holds a partial header; starting it anew");
        file.truncate(0)?;
    }
    file.append(&format::file_header())?;
    Ok(FILE_HEADER_LEN)
}

/// Applies every intact record after the header to `mirror`; returns where they end.
fn replay<T>(bytes: &[u8], mirror: &mut MemoryStorage<T>) -> Result<usize, LogError>
where
    T: Entry + DeserializeOwned,
{
    let mut offset = FILE_HEADER_LEN;
    loop {
        let (payload, next) = match format::read_record(bytes, offset) {
            Frame::End => return Ok(offset),
            Frame::Damaged(reason) => return Ok(damaged_tail(bytes, offset, reason)),
            Frame::Record { payload, next } => (payload, next),
        };
        // The checksum matched, so these are the bytes that were written: if they do not
        // decode or apply, the reader (say, a changed entry type) is wrong, not the disk.
        // Cutting here would destroy a good log, so refuse to open instead.
        let invalid = |reason: String| LogError::InvalidRecord {
            offset: offset as u64,
            reason,
        };
        let ops = decode_ops::<T>(payload).map_err(invalid)?;
        mirror.check(&ops).map_err(|e| invalid(e.to_string()))?;
        mirror.apply_all(ops);
        offset = next;
    }
}

/// The ops of one record, if the payload is exactly one postcard-encoded op list.
fn decode_ops<T: Entry + DeserializeOwned>(payload: &[u8]) -> Result<Vec<Op<T>>, String> {
    match postcard::take_from_bytes::<Vec<Op<T>>>(payload) {
        Ok((ops, [])) => Ok(ops),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the ops", rest.len())),
        Err(e) => Err(format!("undecodable payload: {e}")),
    }
}

/// Reports damage found at `offset` and returns it as the end of the valid log.
///
/// Damage followed by intact records is treated the same way: after a power loss a file
/// system may keep a later page of unsynced appends and lose an earlier one, so such
/// records were never acknowledged and dropping them is correct. Bit rot inside synced data
/// looks the same and is cut too; the warning is what an operator gets to notice it.
fn damaged_tail(bytes: &[u8], offset: usize, reason: &'static str) -> usize {
    tracing::warn!(
        offset,
        cut_bytes = bytes.len() - offset,
        reason,
        "log file ends in a torn or corrupt record; cutting the file at that offset"
    );
    offset
}

fn cut_tail<F: LogFile>(file: &mut F, bytes: &[u8], valid_len: usize) -> Result<(), LogError> {
    assert!(valid_len <= bytes.len());
    if valid_len < bytes.len() {
        file.truncate(valid_len as u64)?;
    }
    Ok(())
}

/// Encodes `ops` as one record into `out`, splitting an over-large batch of entries in two
/// records, recursively. Only used for checkpoints, where any split replays the same.
fn encode_splitting<T>(out: &mut Vec<u8>, ops: Vec<Op<T>>) -> Result<(), LogError>
where
    T: Entry + Serialize,
{
    match format::encode_record(&ops) {
        Ok(record) => {
            out.extend_from_slice(&record);
            Ok(())
        }
        Err(LogError::RecordTooLarge { .. }) if splittable(&ops) => {
            let Some(Op::AppendEntries(mut first)) = ops.into_iter().next() else {
                unreachable!("splittable checked the shape");
            };
            let second = first.split_off(first.len() / 2);
            encode_splitting(out, vec![Op::AppendEntries(first)])?;
            encode_splitting(out, vec![Op::AppendEntries(second)])
        }
        Err(e) => Err(e),
    }
}

fn splittable<T: Entry>(ops: &[Op<T>]) -> bool {
    matches!(ops, [Op::AppendEntries(es)] if es.len() > 1)
}

impl<T, F> Storage<T> for DurableStorage<T, F>
where
    T: Entry + Serialize + DeserializeOwned,
    F: LogFile,
{
    fn write_atomically(&mut self, ops: Vec<StorageOp<T>>) -> StorageResult<()> {
        Ok(self.log(ops.into_iter().map(Op::from).collect())?)
    }

    fn append_entry(&mut self, entry: T) -> StorageResult<()> {
        Ok(self.log(vec![Op::AppendEntries(vec![entry])])?)
    }

    fn append_entries(&mut self, entries: Vec<T>) -> StorageResult<()> {
        Ok(self.log(vec![Op::AppendEntries(entries)])?)
    }

    fn append_on_prefix(&mut self, from_idx: usize, entries: Vec<T>) -> StorageResult<()> {
        Ok(self.log(vec![Op::AppendOnPrefix(from_idx, entries)])?)
    }

    fn set_promise(&mut self, n_prom: Ballot) -> StorageResult<()> {
        Ok(self.log(vec![Op::SetPromise(n_prom)])?)
    }

    fn set_decided_idx(&mut self, ld: usize) -> StorageResult<()> {
        Ok(self.log(vec![Op::SetDecidedIdx(ld)])?)
    }

    fn get_decided_idx(&self) -> StorageResult<usize> {
        self.mirror.get_decided_idx()
    }

    fn set_accepted_round(&mut self, na: Ballot) -> StorageResult<()> {
        Ok(self.log(vec![Op::SetAcceptedRound(na)])?)
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.mirror.get_accepted_round()
    }

    fn get_entries(&self, from: usize, to: usize) -> StorageResult<Vec<T>> {
        self.mirror.get_entries(from, to)
    }

    fn get_log_len(&self) -> StorageResult<usize> {
        self.mirror.get_log_len()
    }

    fn get_suffix(&self, from: usize) -> StorageResult<Vec<T>> {
        self.mirror.get_suffix(from)
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.mirror.get_promise()
    }

    fn set_stopsign(&mut self, s: Option<StopSign>) -> StorageResult<()> {
        Ok(self.log(vec![Op::SetStopsign(s)])?)
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.mirror.get_stopsign()
    }

    fn trim(&mut self, idx: usize) -> StorageResult<()> {
        Ok(self.log(vec![Op::Trim(idx)])?)
    }

    fn set_compacted_idx(&mut self, idx: usize) -> StorageResult<()> {
        Ok(self.log(vec![Op::SetCompactedIdx(idx)])?)
    }

    fn get_compacted_idx(&self) -> StorageResult<usize> {
        self.mirror.get_compacted_idx()
    }

    fn set_snapshot(&mut self, snapshot: Option<T::Snapshot>) -> StorageResult<()> {
        Ok(self.log(vec![Op::SetSnapshot(snapshot)])?)
    }

    fn get_snapshot(&self) -> StorageResult<Option<T::Snapshot>> {
        self.mirror.get_snapshot()
    }
}
