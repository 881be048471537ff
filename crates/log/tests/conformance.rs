//! Every storage in this crate passes the same conformance suite.

mod common;

use std::cell::Cell;

use common::{SnapEntry, TestEntry};
use paxsql_log::{
    testing::{conformance, CrashFile},
    DurableStorage, MemoryStorage, OsLogFile, SharedStorage,
};

#[test]
fn memory_storage_conforms() {
    conformance::run_all(MemoryStorage::<TestEntry>::new);
    conformance::run_all(MemoryStorage::<SnapEntry>::new);
}

#[test]
fn shared_memory_storage_conforms() {
    conformance::run_all(|| SharedStorage::new(MemoryStorage::<SnapEntry>::new()));
}

#[test]
fn durable_storage_on_crash_file_conforms() {
    conformance::run_all(|| DurableStorage::<TestEntry, _>::open(CrashFile::new()).unwrap());
    conformance::run_all(|| DurableStorage::<SnapEntry, _>::open(CrashFile::new()).unwrap());
}

#[test]
fn durable_storage_on_os_file_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let files = Cell::new(0);
    let open = || {
        files.set(files.get() + 1);
        let file = OsLogFile::open(dir.path().join(format!("log-{}", files.get()))).unwrap();
        DurableStorage::<SnapEntry, _>::open(file).unwrap()
    };
    conformance::run_all(open);
}
