//! The file underneath a [`DurableStorage`](crate::DurableStorage), behind a trait so that a
//! simulator can swap in a disk that forgets unsynced bytes on a crash
//! ([`CrashFile`](crate::testing::CrashFile) with the `testing` feature).

use std::{
    ffi::OsString,
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

/// An append-only file with explicit durability points.
///
/// The contract mirrors what POSIX gives after a power loss: bytes passed to `append` may be
/// lost, or partially kept, until `sync` returns; `truncate` and `replace` are durable when
/// they return.
pub trait LogFile {
    /// Appends bytes at the end (buffered; not durable until sync).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// Hands everything appended so far to the operating system without
    /// waiting for the disk: it then survives the process (a `kill -9`, an
    /// exit) but not a power loss. Files with no buffer of their own do
    /// nothing.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The whole current content (used once, at open).
    fn read_all(&mut self) -> io::Result<Vec<u8>>;
    /// Cuts the file to `len` bytes, durably (used to drop a torn tail at open).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Atomically and durably replaces the whole content (used by compaction): after a crash,
    /// either the old or the new content is there.
    fn replace(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl<F: LogFile + ?Sized> LogFile for Box<F> {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).append(bytes)
    }

    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }

    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        (**self).read_all()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        (**self).truncate(len)
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).replace(bytes)
    }
}

/// Appends are gathered in memory up to this size before reaching the kernel; a group commit
/// of small records then costs one `write` and one `fdatasync`.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// A [`LogFile`] on the real file system.
///
/// `replace` writes `<path>.tmp`, syncs it, renames it over `<path>` and syncs the directory,
/// so a crash leaves either file whole; a leftover `.tmp` from such a crash is deleted at open.
#[derive(Debug)]
pub struct OsLogFile {
    path: PathBuf,
    writer: BufWriter<File>,
    /// Bytes in the file plus bytes still in `writer`'s buffer.
    len: u64,
}

impl OsLogFile {
    /// Opens `path`, creating it (and making its directory entry durable) if needed.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        remove_if_exists(&tmp_path(&path))?;
        let file = open_append(&path, true)?;
        // A file just created exists durably only once its directory is synced.
        sync_parent_dir(&path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path,
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            len,
        })
    }

    /// The path this file was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current length in bytes, including appended bytes not yet synced.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl LogFile for OsLogFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.writer.flush()?;
        self.writer.get_ref().sync_data()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }

    fn read_all(&mut self) -> io::Result<Vec<u8>> {
        self.writer.flush()?;
        let file = self.writer.get_mut();
        file.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.writer.flush()?;
        let file = self.writer.get_ref();
        file.set_len(len)?;
        // The new size is metadata: sync_all, not sync_data.
        file.sync_all()?;
        self.len = len;
        Ok(())
    }

    fn replace(&mut self, bytes: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(&self.path);
        write_synced(&tmp, bytes)?;
        fs::rename(&tmp, &self.path)?;
        let file = open_append(&self.path, false)?;
        let old = std::mem::replace(
            &mut self.writer,
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
        );
        // Bytes still buffered for the old file are superseded by `bytes`: drop, don't flush.
        drop(old.into_parts());
        self.len = bytes.len() as u64;
        sync_parent_dir(&self.path)
    }
}

fn open_append(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".tmp");
    PathBuf::from(name)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = OsLogFile::open(&path).unwrap();
        assert!(file.is_empty());
        file.append(b"hello ").unwrap();
        file.append(b"world").unwrap();
        assert_eq!(file.len(), 11);
        assert_eq!(file.read_all().unwrap(), b"hello world");
        file.sync().unwrap();
        drop(file);
        let mut file = OsLogFile::open(&path).unwrap();
        assert_eq!(file.len(), 11);
        assert_eq!(file.read_all().unwrap(), b"hello world");
    }

    #[test]
    fn truncate_then_append_continues_at_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = OsLogFile::open(dir.path().join("log")).unwrap();
        file.append(b"abcdef").unwrap();
        file.truncate(3).unwrap();
        file.append(b"XY").unwrap();
        assert_eq!(file.read_all().unwrap(), b"abcXY");
        assert_eq!(file.len(), 5);
    }

    #[test]
    fn replace_swaps_content_and_later_appends_go_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut file = OsLogFile::open(&path).unwrap();
        file.append(b"old content").unwrap();
        file.replace(b"new").unwrap();
        file.append(b"+more").unwrap();
        file.sync().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new+more");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn open_removes_a_leftover_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        fs::write(tmp_path(&path), b"half a checkpoint").unwrap();
        let _file = OsLogFile::open(&path).unwrap();
        assert!(!tmp_path(&path).exists());
    }
}
