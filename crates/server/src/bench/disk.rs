//! How long an fsync takes on the benchmarked disk, right before each run.
//!
//! Every durable write waits for one (the cluster's log, the baseline's
//! WAL), so the fsync latency bounds what either can do. On a shared or
//! virtual disk it also swings by an order of magnitude from minute to
//! minute; recording it beside each run tells a reader whether two runs
//! saw the same disk. Unix only (positioned writes).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// Each write is this size, followed by `fdatasync`.
const WRITE_BYTES: usize = 4096;

/// The result of [`probe`]: two write patterns, as both targets use them.
#[derive(Clone, Debug, Serialize)]
pub struct FsyncProbe {
    /// Syncs timed per pattern.
    pub rounds: u64,
    /// Appending to a growing file, as the cluster's log does: each sync
    /// also writes the file's new size.
    pub append_p50_ms: f64,
    pub append_p99_ms: f64,
    /// Overwriting blocks in place, as SQLite's WAL does once it has grown
    /// to its working size: the size does not change.
    pub overwrite_p50_ms: f64,
    pub overwrite_p99_ms: f64,
}

/// Times `rounds` 4 KiB appends, then `rounds` 4 KiB overwrites, each
/// followed by `fdatasync`, in a scratch file in `dir` (removed afterwards).
pub fn probe(dir: &Path, rounds: u64) -> std::io::Result<FsyncProbe> {
    let scratch = tempfile::NamedTempFile::new_in(dir)?;
    let file = scratch.as_file();
    let block = vec![0x5au8; WRITE_BYTES];
    let mut append = histogram();
    for i in 0..rounds {
        let t = Instant::now();
        file.write_all_at(&block, i * WRITE_BYTES as u64)?;
        file.sync_data()?;
        append.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    let mut overwrite = histogram();
    for i in 0..rounds {
        let t = Instant::now();
        file.write_all_at(&block, (i % 16) * WRITE_BYTES as u64)?;
        file.sync_data()?;
        overwrite.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(FsyncProbe {
        rounds,
        append_p50_ms: ms(&append, 0.5),
        append_p99_ms: ms(&append, 0.99),
        overwrite_p50_ms: ms(&overwrite, 0.5),
        overwrite_p99_ms: ms(&overwrite, 0.99),
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_probe_times_every_round() {
        let dir = tempfile::tempdir().unwrap();
        let p = super::probe(dir.path(), 5).unwrap();
        assert_eq!(p.rounds, 5);
        assert!(p.append_p50_ms > 0.0 && p.append_p50_ms <= p.append_p99_ms);
        assert!(p.overwrite_p50_ms > 0.0 && p.overwrite_p50_ms <= p.overwrite_p99_ms);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
