//! Durable storage for one shard group's OmniPaxos log.
//!
//! OmniPaxos is sans-IO: it calls a [`Storage`](omnipaxos::storage::Storage) and trusts that
//! what it stored is still there after a restart. A replica that forgets a promise or an
//! accepted entry can vote twice and break consensus, so this crate's job is to make the
//! storage survive crashes without paying an fsync per call.
//!
//! # The durability contract: nothing leaves the node before `sync` returns
//!
//! Storage calls only append records (to a write buffer, then the page cache); none of them
//! waits for the disk. The replica loop makes a whole batch durable at once (group commit):
//!
//! 1. Feed OmniPaxos its inputs: `handle_incoming`, `tick`, `append`, ... Each storage call
//!    appends one record.
//! 2. Call [`DurableStorage::sync`] once (a single `fdatasync` for the whole batch).
//! 3. Only then send the outgoing messages, and only then apply newly decided entries and
//!    answer clients.
//!
//! Sending first would let a promise or an `Accepted` count at the leader while it can
//! still vanish in a crash; answering a client first could acknowledge an entry that a
//! majority does not durably hold. Reads see unsynced records, which is harmless because
//! nothing derived from them is observable before step 2. If `sync` fails the storage refuses
//! every later write ([`LogError::Poisoned`]): the node must restart and reopen its log.
//!
//! OmniPaxos takes its storage by value, so wrap the [`DurableStorage`] in a
//! [`SharedStorage`] and keep a clone of it for step 2.
//!
//! # File format
//!
//! ```text
//! file   := header record*
//! header := "PAXSQLOG" | format version: u32 LE            (12 bytes)
//! record := payload length: u32 LE | crc32c(payload): u32 LE | payload
//! payload:= postcard-encoded list of ops (append, append_on_prefix, trim, set_* ...)
//! ```
//!
//! Every mutating `Storage` call appends one record, and `write_atomically` appends one
//! record holding all its ops. A record is all-or-nothing: its checksum rejects any torn or
//! partial version, so a batch is atomic across a crash without an undo log. A payload is
//! at most [`MAX_RECORD_BYTES`]; a larger length field is garbage, not a record.
//!
//! At [`DurableStorage::open`] all records are replayed into an in-memory
//! [`MemoryStorage`], which then serves every read. Replay stops at the first damage (a
//! short header or payload, a length over the limit, a checksum mismatch): the file is cut
//! there with a warning naming the offset. That includes damage followed by intact records:
//! after a power loss a file system may keep a later page of unsynced appends and lose an
//! earlier one, and those records were never acknowledged, so dropping them is correct. Bit
//! rot inside synced data cannot be told apart cheaply and is cut the same way; replication
//! is what protects against a bad disk, and the warning is what alerts the operator. A record
//! whose checksum matches but that does not decode or apply is *not* cut: it is what was
//! written, so the reader is wrong (e.g. a changed entry type) and opening fails instead of
//! destroying a good log. A wrong magic or version also fails, leaving the file untouched.
//!
//! Overwritten metadata and trimmed entries stay in the file until it is rewritten: at a
//! `sync`, once the file exceeds `max(compact_min_bytes, compact_ratio × checkpoint size)`
//! ([`LogOptions`]), it is replaced atomically ([`LogFile::replace`]) by a checkpoint, the
//! minimal records that rebuild the current state. A checkpoint is ordinary records, so
//! replay needs no special case, and it can span several records when the log is larger
//! than one record may be.
//!
//! The file sits behind the [`LogFile`] trait: [`OsLogFile`] for real disks, and with the
//! `testing` feature, `testing::CrashFile`, which loses unsynced bytes on a simulated crash.

mod durable;
mod error;
mod file;
mod format;
mod memory;
mod op;
mod shared;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use durable::{DurableStorage, LogOptions};
pub use error::LogError;
pub use file::{LogFile, OsLogFile};
pub use format::{FILE_HEADER_LEN, FORMAT_VERSION, FRAME_HEADER_LEN, MAGIC, MAX_RECORD_BYTES};
pub use memory::MemoryStorage;
pub use shared::SharedStorage;
