//! The one error type of this crate.

use std::io;

/// Why a log operation failed.
///
/// Through the OmniPaxos [`Storage`](omnipaxos::storage::Storage) trait these arrive boxed as
/// `Box<dyn Error>`; OmniPaxos panics on them, so the node restarts and reopens its log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading, writing or syncing the log file failed.
    #[error("log file I/O failed: {0}")]
    Io(#[from] io::Error),

    /// The file does not start with the paxsql log magic bytes.
    #[error(
        "this file is not a paxsql log (it starts with {found:02x?}, expected {expected:02x?}); \
         check the data directory path, the file was left untouched"
    )]
    NotAPaxsqlLog {
        /// The first bytes of the file (at most the magic's length).
        found: Vec<u8>,
        /// The magic bytes every paxsql log starts with.
        expected: Vec<u8>,
    },

    /// The file is a paxsql log written in a format this build cannot read.
    #[error(
        "paxsql log format version {found} is not supported by this build (it reads version \
         {supported}); run the paxsql release that wrote this log"
    )]
    UnsupportedVersion {
        /// The version in the file header.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// A single write would produce a record larger than the format allows.
    #[error(
        "a log record of {len} bytes exceeds the {max}-byte limit; propose smaller batches \
         or smaller snapshots"
    )]
    RecordTooLarge {
        /// Encoded payload size.
        len: usize,
        /// [`MAX_RECORD_BYTES`](crate::MAX_RECORD_BYTES).
        max: usize,
    },

    /// postcard could not encode a record (an entry type whose `Serialize` fails).
    #[error("could not encode a log record: {0}")]
    Encode(#[source] postcard::Error),

    /// `append_on_prefix` asked to start below the trimmed prefix, where the log no longer
    /// knows what to truncate.
    #[error(
        "append_on_prefix from index {from_idx} is below the trimmed prefix ending at {log_start}"
    )]
    PrefixTrimmed {
        /// The requested start index.
        from_idx: usize,
        /// The first index still held.
        log_start: usize,
    },

    /// `append_on_prefix` asked to append entries beyond the end of the log, which would leave
    /// a hole in it.
    #[error(
        "append_on_prefix from index {from_idx} would leave a gap after the log end {log_end}"
    )]
    Gap {
        /// The requested start index.
        from_idx: usize,
        /// One past the last index held.
        log_end: usize,
    },

    /// A record passed its checksum at open but cannot be applied: the file was written by a
    /// buggy or foreign writer. Opening stops rather than guess.
    #[error("log record at byte offset {offset} is intact but cannot be applied ({reason}); the log needs inspection")]
    InvalidRecord {
        /// Where the record starts in the file.
        offset: u64,
        /// What was wrong with it.
        reason: String,
    },

    /// An earlier write or sync failed; the file may now end in a partial record, so further
    /// writes could land after garbage and be lost at the next open.
    #[error("log storage refused the write: an earlier I/O error left the file in an unknown state; reopen the log to recover")]
    Poisoned,
}

impl From<LogError> for io::Error {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}
