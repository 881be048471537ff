//! [`CrashFile`]: a [`LogFile`] that remembers which bytes are durable.

use std::{
    io,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::file::LogFile;

/// An in-memory disk that keeps synced and unsynced bytes apart, so that a simulated crash
/// can drop what a real one could drop.
///
/// Clones share one disk: give a clone to [`DurableStorage`](crate::DurableStorage), keep
/// one as "the disk", and after dropping the node call [`CrashFile::crash`] on it and reopen
/// from another clone. Faults can be injected to exercise the error paths.
#[derive(Debug, Clone, Default)]
pub struct CrashFile {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug, Default)]
struct Disk {
    synced: Vec<u8>,
    unsynced: Vec<u8>,
    /// Bytes that appends may still write before failing; `None` is unlimited.
    append_budget: Option<usize>,
    fail_syncs: bool,
}

impl CrashFile {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk whose durable content is `bytes`.
    pub fn with_content(bytes: Vec<u8>) -> Self {
        let file = Self::new();
        file.disk().synced = bytes;
        file
    }

    /// Simulates a power loss: keeps the first `keep_unsynced` unsynced bytes (a torn
    /// write), forgets the rest. Pass a random `keep_unsynced` from the simulator's seed.
    pub fn crash(&self, keep_unsynced: usize) {
        let mut disk = self.disk();
        let keep = keep_unsynced.min(disk.unsynced.len());
        let kept: Vec<u8> = disk.unsynced.drain(..keep).collect();
        disk.synced.extend_from_slice(&kept);
        disk.unsynced.clear();
    }

    /// Everything a reader sees now: synced bytes then unsynced ones.
    pub fn content(&self) -> Vec<u8> {
        let disk = self.disk();
        [disk.synced.as_slice(), disk.unsynced.as_slice()].concat()
    }

    /// Replaces the whole content, durably (to plant corruption in tests).
    pub fn set_content(&self, bytes: Vec<u8>) {
        let mut disk = self.disk();
        disk.synced = bytes;
        disk.unsynced.clear();
    }

    /// Bytes that would survive a crash.
    pub fn synced_len(&self) -> usize {
        self.disk().synced.len()
    }

    /// Bytes appended since the last sync.
    pub fn unsynced_len(&self) -> usize {
        self.disk().unsynced.len()
    }

    /// Lets appends write `bytes` more bytes, then fail; the append that crosses the limit
    /// writes what fits first, like a short write. `None` removes the limit.
    pub fn fail_appends_after(&self, bytes: Option<usize>) {
        self.disk().append_budget = bytes;
    }

    /// Makes every `sync` fail (without syncing) until called with `false`.
    pub fn fail_syncs(&self, fail: bool) {
        self.disk().fail_syncs = fail;
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().expect("CrashFile lock poisoned")
    }
}

impl LogFile for CrashFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut disk = self.disk();
        let fits = disk.append_budget.unwrap_or(usize::MAX).min(bytes.len());
        disk.unsynced.extend_from_slice(&bytes[..fits]);
        if let Some(budget) = disk.append_budget.as_mut() {
            *budget -= fits;
        }
        if fits < bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "CrashFile: injected short write",
            ));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut disk = self.disk();
        if disk.fail_syncs {
            return Err(io::Error::other("CrashFile: injected sync failure"));
        }
        let unsynced = std::mem::take(&mut disk.unsynced);
        disk.synced.extend_from_slice(&unsynced);
        Ok(())
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.content())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut content = self.content();
        content.truncate(usize::try_from(len).expect("length fits in memory"));
        self.set_content(content);
        Ok(())
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.set_content(bytes.to_vec());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_bytes_and_a_prefix_of_the_rest() {
        let mut file = CrashFile::new();
        file.append(b"abc").unwrap();
        file.sync().unwrap();
        file.append(b"defgh").unwrap();
        let disk = file.clone();
        disk.crash(2);
        assert_eq!(file.content(), b"abcde");
        assert_eq!(file.unsynced_len(), 0);
    }

    #[test]
    fn a_short_write_keeps_what_fits_and_fails() {
        let mut file = CrashFile::new();
        file.fail_appends_after(Some(4));
        file.append(b"ab").unwrap();
        assert!(file.append(b"cdef").is_err());
        assert_eq!(file.content(), b"abcd");
    }
}
