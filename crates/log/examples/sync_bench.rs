//! How much a durable write costs on this disk, and how much group commit buys.
//!
//! ```text
//! cargo run --release -p paxsql-log --example sync_bench [DIR]
//! ```
//!
//! Prints the latency of `DurableStorage::sync` after one small record, then the append
//! throughput when syncing every N records. DIR defaults to a temporary directory; pass one
//! on the disk you care about.

use std::{path::Path, time::Instant};

use omnipaxos::{macros::Entry, storage::Storage};
use paxsql_log::{DurableStorage, OsLogFile};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, Entry)]
struct BenchEntry {
    id: u64,
    payload: Vec<u8>,
}

/// A small record, about the size of a one-statement command.
const PAYLOAD_BYTES: usize = 64;
const SYNC_SAMPLES: usize = 300;
const TRIALS: usize = 5;

fn main() {
    let tmp = tempfile::tempdir().expect("create a temporary directory");
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    println!("directory: {}", dir.display());
    sync_latency(&dir);
    for every in [1, 10, 100] {
        throughput(&dir, every);
    }
}

fn open(dir: &Path, name: &str) -> DurableStorage<BenchEntry, OsLogFile> {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    DurableStorage::open(OsLogFile::open(&path).expect("open log file")).expect("open log")
}

fn entry(id: u64) -> BenchEntry {
    BenchEntry {
        id,
        payload: vec![id as u8; PAYLOAD_BYTES],
    }
}

fn sync_latency(dir: &Path) {
    let mut log = open(dir, "sync-latency.log");
    let mut micros = Vec::with_capacity(SYNC_SAMPLES);
    for id in 0..(SYNC_SAMPLES + 20) as u64 {
        log.append_entry(entry(id)).unwrap();
        let start = Instant::now();
        log.sync().unwrap();
        if id >= 20 {
            micros.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    micros.sort_by(f64::total_cmp);
    let pct = |p: f64| micros[((micros.len() - 1) as f64 * p) as usize];
    println!(
        "sync after one {PAYLOAD_BYTES}-byte record ({SYNC_SAMPLES} samples): \
         median {:.0} µs, p10 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        pct(0.5),
        pct(0.1),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    std::fs::remove_file(dir.join("sync-latency.log")).ok();
}

fn throughput(dir: &Path, every: u64) {
    // 500 syncs per trial: a few tenths of a second at this disk's fsync latency.
    let records = 500 * every;
    let mut rates: Vec<f64> = (0..TRIALS)
        .map(|trial| {
            let name = format!("throughput-{every}-{trial}.log");
            let mut log = open(dir, &name);
            let start = Instant::now();
            for id in 0..records {
                log.append_entry(entry(id)).unwrap();
                if (id + 1) % every == 0 {
                    log.sync().unwrap();
                }
            }
            log.sync().unwrap();
            let rate = records as f64 / start.elapsed().as_secs_f64();
            std::fs::remove_file(dir.join(name)).ok();
            rate
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "sync every {every:>3} records: median {:>9.0} records/s over {TRIALS} trials of {records} \
         (min {:.0}, max {:.0})",
        rates[TRIALS / 2],
        rates[0],
        rates[TRIALS - 1]
    );
}
