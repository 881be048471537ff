//! Durability of `DurableStorage`: reopen, torn tails, corruption, crashes, compaction,
//! I/O errors.

mod common;

use std::fs;

use common::{SnapEntry, TestEntry};
use omnipaxos::{ballot_leader_election::Ballot, storage::Storage};
use paxsql_log::{
    testing::{
        conformance::{entries, observe, Workload},
        CrashFile, TestRng,
    },
    DurableStorage, LogError, LogOptions, MemoryStorage, OsLogFile, FILE_HEADER_LEN,
    FORMAT_VERSION, MAGIC,
};

type Log<T = TestEntry> = DurableStorage<T, CrashFile>;

fn open<T>(disk: &CrashFile) -> Log<T>
where
    T: omnipaxos::storage::Entry + serde::Serialize + serde::de::DeserializeOwned,
{
    DurableStorage::open(disk.clone()).unwrap()
}

/// Small thresholds, so that tests exercise file compaction.
fn eager_compaction() -> LogOptions {
    LogOptions {
        compact_min_bytes: 2 << 10,
        compact_ratio: 2,
    }
}

fn log_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> &'a LogError {
    e.downcast_ref::<LogError>()
        .unwrap_or_else(|| panic!("not a LogError: {e}"))
}

/// A log with a few synced records (`good`), then one more synced record (`full`).
struct TwoStates {
    good: Vec<u8>,
    before: MemoryStorage<TestEntry>,
    full: Vec<u8>,
    after: MemoryStorage<TestEntry>,
}

fn two_states() -> TwoStates {
    let disk = CrashFile::new();
    let mut log: Log = open(&disk);
    log.append_entries(entries(0..3)).unwrap();
    log.set_promise(Ballot::with(1, 2, 0, 3)).unwrap();
    log.sync().unwrap();
    let (good, before) = (disk.content(), log.memory().clone());
    let last = TestEntry {
        id: 9,
        payload: vec![7; 20],
    };
    log.append_entries(vec![last]).unwrap();
    log.sync().unwrap();
    TwoStates {
        good,
        before,
        full: disk.content(),
        after: log.memory().clone(),
    }
}

/// Opens `bytes` and checks that the last record was cut and the rest is intact.
fn assert_cut_to_good(bytes: Vec<u8>, t: &TwoStates, what: &str) {
    let disk = CrashFile::with_content(bytes);
    let log: Log = open(&disk);
    assert_eq!(log.memory(), &t.before, "{what}: state");
    assert_eq!(disk.content(), t.good, "{what}: file not cut back");
    assert_eq!(log.bytes_on_disk(), t.good.len() as u64, "{what}");
}

#[test]
fn reopen_gives_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut rng = TestRng::new(1);
    let mut workload = Workload::<SnapEntry>::new(1);
    let mut log = DurableStorage::open(OsLogFile::open(&path).unwrap()).unwrap();
    for _ in 0..400 {
        workload.step(&mut log, |_| {});
        if rng.chance(10) {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    let (memory, seen) = (log.memory().clone(), observe(&log));
    assert_eq!(seen, workload.expected());
    drop(log);
    let log = DurableStorage::<SnapEntry, _>::open(OsLogFile::open(&path).unwrap()).unwrap();
    assert_eq!(log.memory(), &memory);
    assert_eq!(observe(&log), seen);
}

#[test]
fn reopen_after_every_step_matches_the_model() {
    let disk = CrashFile::new();
    let mut workload = Workload::<SnapEntry>::new(2);
    for step in 0..200 {
        let mut log = DurableStorage::open_with_options(disk.clone(), eager_compaction()).unwrap();
        workload.step(&mut log, |_| {});
        log.sync().unwrap();
        drop(log);
        let log: Log<SnapEntry> = open(&disk);
        assert_eq!(observe(&log), workload.expected(), "step {step}");
    }
}

#[test]
fn a_torn_last_record_is_cut_at_every_offset() {
    let t = two_states();
    for cut in t.good.len()..t.full.len() {
        assert_cut_to_good(t.full[..cut].to_vec(), &t, &format!("cut at {cut}"));
    }
    let whole = CrashFile::with_content(t.full.clone());
    assert_eq!(open::<TestEntry>(&whole).memory(), &t.after);
}

#[test]
fn writes_after_cutting_a_torn_tail_survive_the_next_reopen() {
    let t = two_states();
    let disk = CrashFile::with_content(t.full[..t.full.len() - 3].to_vec());
    let mut log: Log = open(&disk);
    log.set_decided_idx(2).unwrap();
    log.sync().unwrap();
    let expected = log.memory().clone();
    drop(log);
    assert_eq!(open::<TestEntry>(&disk).memory(), &expected);
    assert_eq!(expected.get_decided_idx().unwrap(), 2);
}

#[test]
fn a_bit_flip_anywhere_in_the_last_record_is_detected() {
    let t = two_states();
    for at in t.good.len()..t.full.len() {
        for bit in 0..8 {
            let mut bytes = t.full.clone();
            bytes[at] ^= 1 << bit;
            assert_cut_to_good(bytes, &t, &format!("bit {bit} of byte {at}"));
        }
    }
}

#[test]
fn garbage_after_valid_records_is_cut() {
    let t = two_states();
    let mut tails: Vec<Vec<u8>> = (1..40).map(|n| vec![0; n]).collect();
    tails.push(vec![0xff; 20]);
    // A plausible header (length 5) whose checksum does not match.
    tails.push([5u32.to_le_bytes(), 0xdead_beefu32.to_le_bytes()].concat());
    let mut rng = TestRng::new(3);
    for _ in 0..200 {
        let len = rng.between(1, 100);
        tails.push((0..len).map(|_| rng.below(256) as u8).collect());
    }
    for tail in tails {
        let bytes = [t.full.as_slice(), &tail].concat();
        let disk = CrashFile::with_content(bytes);
        let log: Log = open(&disk);
        assert_eq!(log.memory(), &t.after, "tail {tail:02x?}");
        assert_eq!(disk.content(), t.full, "tail {tail:02x?}");
    }
}

#[test]
fn damage_followed_by_intact_records_is_cut_there_too() {
    // Documented policy: indistinguishable from unsynced pages written out of order.
    let t = two_states();
    let last_record = &t.full[t.good.len()..];
    let bytes = [t.good.as_slice(), &[1, 2, 3], last_record].concat();
    assert_cut_to_good(bytes, &t, "garbage before a valid record");
}

#[test]
fn an_intact_record_that_does_not_decode_refuses_to_open() {
    let t = two_states();
    let payload = [0xffu8; 10];
    let frame = [
        (payload.len() as u32).to_le_bytes(),
        crc32c::crc32c(&payload).to_le_bytes(),
    ]
    .concat();
    let bytes = [t.good.as_slice(), &frame, &payload].concat();
    let disk = CrashFile::with_content(bytes.clone());
    let err = DurableStorage::<TestEntry, _>::open(disk.clone()).unwrap_err();
    assert!(
        matches!(err, LogError::InvalidRecord { offset, .. } if offset == t.good.len() as u64),
        "{err}"
    );
    assert_eq!(disk.content(), bytes, "a good log must not be cut");
}

#[test]
fn a_file_that_is_not_a_paxsql_log_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.db");
    let content = b"SQLite format 3\0 and then some pages".to_vec();
    fs::write(&path, &content).unwrap();
    let err = DurableStorage::<TestEntry, _>::open(OsLogFile::open(&path).unwrap()).unwrap_err();
    assert!(matches!(err, LogError::NotAPaxsqlLog { .. }), "{err}");
    assert!(err.to_string().contains("not a paxsql log"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), content);
}

#[test]
fn another_format_version_is_refused() {
    let header = [MAGIC.as_slice(), &(FORMAT_VERSION + 1).to_le_bytes()].concat();
    let err = DurableStorage::<TestEntry, _>::open(CrashFile::with_content(header)).unwrap_err();
    assert!(
        matches!(err, LogError::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1),
        "{err}"
    );
}

#[test]
fn a_partial_header_starts_a_new_log() {
    let disk = CrashFile::with_content(MAGIC[..5].to_vec());
    let log: Log = open(&disk);
    assert_eq!(log.memory(), &MemoryStorage::new());
    assert_eq!(disk.content().len(), FILE_HEADER_LEN);
    assert_eq!(
        disk.synced_len(),
        FILE_HEADER_LEN,
        "the new header is synced at open"
    );
}

#[test]
fn records_are_not_durable_until_sync() {
    let disk = CrashFile::new();
    let mut log: Log = open(&disk);
    log.append_entry(TestEntry::new(1)).unwrap();
    assert!(log.needs_sync());
    drop(log);
    disk.crash(0);
    let mut log: Log = open(&disk);
    assert_eq!(
        log.get_log_len().unwrap(),
        0,
        "an unsynced record survived a crash"
    );
    log.append_entry(TestEntry::new(1)).unwrap();
    log.sync().unwrap();
    assert!(!log.needs_sync());
    drop(log);
    disk.crash(0);
    assert_eq!(open::<TestEntry>(&disk).get_log_len().unwrap(), 1);
}

#[test]
fn sync_without_writes_does_not_touch_the_file() {
    let disk = CrashFile::new();
    let mut log: Log = open(&disk);
    disk.fail_syncs(true);
    log.sync().unwrap();
    assert_eq!(disk.unsynced_len(), 0);
}

#[test]
fn a_crash_keeps_the_synced_state_or_later_whole_records() {
    for seed in 0..40 {
        let disk = CrashFile::new();
        let mut rng = TestRng::new(seed ^ 0x5eed);
        let mut log = DurableStorage::open_with_options(disk.clone(), eager_compaction()).unwrap();
        let mut workload = Workload::<SnapEntry>::new(seed);
        for cycle in 0..6 {
            // states[0]: as of the last sync; states[k]: after k more records.
            let mut states = vec![log.memory().clone()];
            for _ in 0..rng.between(1, 60) {
                workload.step(&mut log, |s| states.push(s.memory().clone()));
                if rng.chance(15) {
                    log.sync().unwrap();
                    states = vec![log.memory().clone()];
                }
            }
            let unsynced = disk.unsynced_len();
            let keep = if rng.chance(30) {
                unsynced
            } else {
                rng.between(0, unsynced)
            };
            drop(log);
            disk.crash(keep);
            log = DurableStorage::open_with_options(disk.clone(), eager_compaction()).unwrap();
            let at = format!("seed {seed} cycle {cycle} keep {keep}/{unsynced}");
            assert!(
                states.iter().any(|s| s == log.memory()),
                "{at}: reopened state was never a record boundary"
            );
            if keep == 0 {
                assert_eq!(log.memory(), &states[0], "{at}: unsynced records survived");
            }
            if keep == unsynced {
                assert_eq!(
                    log.memory(),
                    states.last().unwrap(),
                    "{at}: records were lost"
                );
            }
            workload = Workload::resume(rng.next_u64(), observe(&log));
        }
    }
}

#[test]
fn compaction_keeps_the_state_and_bounds_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let options = LogOptions {
        compact_min_bytes: 8 << 10,
        compact_ratio: 2,
    };
    let mut log =
        DurableStorage::open_with_options(OsLogFile::open(&path).unwrap(), options).unwrap();
    let (mut appended, mut largest) = (0, 0);
    for i in 0..3000u64 {
        let before = log.bytes_on_disk();
        log.append_entry(TestEntry {
            id: i,
            payload: vec![i as u8; 16],
        })
        .unwrap();
        log.set_accepted_round(Ballot::with(1, i as u32, 0, 1))
            .unwrap();
        log.set_decided_idx(i as usize + 1).unwrap();
        if let Some(keep_from) = (i as usize).checked_sub(50) {
            log.trim(keep_from).unwrap();
            log.set_compacted_idx(keep_from).unwrap();
        }
        appended += log.bytes_on_disk() - before;
        log.sync().unwrap();
        largest = largest.max(log.bytes_on_disk());
        assert_eq!(fs::metadata(&path).unwrap().len(), log.bytes_on_disk());
    }
    // 51 live entries of ~20 bytes check-point to ~1.1 KiB: the minimum dominates.
    assert!(largest <= 8 << 10, "file grew to {largest} bytes");
    assert!(appended > 20 * largest, "compaction never had to run");
    let expected = log.memory().clone();
    drop(log);
    let log = DurableStorage::<TestEntry, _>::open(OsLogFile::open(&path).unwrap()).unwrap();
    assert_eq!(log.memory(), &expected);
    assert_eq!(log.get_log_len().unwrap(), 51);
}

#[test]
fn a_failed_append_changes_nothing_and_poisons_the_log() {
    let disk = CrashFile::new();
    let mut log: Log = open(&disk);
    log.append_entries(entries(0..3)).unwrap();
    log.sync().unwrap();
    let before = log.memory().clone();
    disk.fail_appends_after(Some(5));
    let err = log.append_entries(entries(3..6)).unwrap_err();
    assert!(matches!(log_error(err.as_ref()), LogError::Io(_)), "{err}");
    assert_eq!(log.memory(), &before);
    disk.fail_appends_after(None);
    let err = log.set_decided_idx(1).unwrap_err();
    assert!(
        matches!(log_error(err.as_ref()), LogError::Poisoned),
        "{err}"
    );
    assert!(log.sync().is_err());
    drop(log);
    disk.crash(usize::MAX); // the partial record reaches the disk
    assert_eq!(open::<TestEntry>(&disk).memory(), &before);
}

#[test]
fn a_failed_sync_poisons_the_log() {
    let disk = CrashFile::new();
    let mut log: Log = open(&disk);
    log.append_entry(TestEntry::new(1)).unwrap();
    disk.fail_syncs(true);
    assert!(log.sync().is_err());
    disk.fail_syncs(false);
    assert!(log.sync().is_err(), "a retried fsync proves nothing");
    assert!(log.append_entry(TestEntry::new(2)).is_err());
    drop(log);
    let log: Log = open(&disk);
    assert_eq!(log.get_log_len().unwrap(), 1, "reopening recovers");
}

#[test]
fn an_oversized_record_is_refused_without_poisoning() {
    let disk = CrashFile::new();
    let mut log: Log = open(&disk);
    let huge = TestEntry {
        id: 1,
        payload: vec![0; paxsql_log::MAX_RECORD_BYTES],
    };
    let err = log.append_entry(huge).unwrap_err();
    assert!(
        matches!(log_error(err.as_ref()), LogError::RecordTooLarge { .. }),
        "{err}"
    );
    assert_eq!(log.get_log_len().unwrap(), 0);
    log.append_entry(TestEntry::new(2)).unwrap();
    log.sync().unwrap();
}

#[test]
fn an_invalid_op_is_refused_before_it_reaches_the_file() {
    let disk = CrashFile::new();
    let mut log: Log = open(&disk);
    let len = disk.content().len();
    assert!(log.append_on_prefix(3, entries(0..1)).is_err());
    assert_eq!(disk.content().len(), len);
    log.append_entry(TestEntry::new(0)).unwrap();
}

#[test]
fn a_decided_index_alone_survives_the_process_without_an_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let entries: Vec<TestEntry> = (1..=3).map(TestEntry::new).collect();
    {
        let file = paxsql_log::OsLogFile::open(&path).unwrap();
        let mut log = DurableStorage::<TestEntry, _>::open(file).unwrap();
        log.append_entries(entries).unwrap();
        log.sync().unwrap();
        log.set_decided_idx(3).unwrap();
        assert!(!log.needs_sync(), "a decided index needs no fsync");
        log.sync().unwrap();
        // The process ends here without running destructors.
        std::mem::forget(log);
    }
    let file = paxsql_log::OsLogFile::open(&path).unwrap();
    let log = DurableStorage::<TestEntry, _>::open(file).unwrap();
    assert_eq!(log.get_decided_idx().unwrap(), 3);
}
