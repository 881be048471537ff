//! Many seeds on a few threads: each run is independent (its own scratch
//! directory, its own random stream), so seeds spread over threads freely.
//! Wall time is used only here, to stop a soak; never inside a run.

use crate::checks::Violation;
use crate::config::SimConfig;
use crate::sim::{run, Stats};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The outcome of one seed, without its history and trace.
#[derive(Clone, Debug)]
pub struct SeedResult {
    /// The run.
    pub config: SimConfig,
    /// What broke (empty: passed).
    pub violations: Vec<Violation>,
    /// Counts.
    pub stats: Stats,
    /// Wall time the run took.
    pub elapsed: Duration,
}

impl SeedResult {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Runs `template` with every seed of `seeds` on `threads` threads, until
/// the range is done, `deadline` passes, or (with `stop_at_failure`) a seed
/// fails. `on_result` sees each result as it comes, on the calling thread.
pub fn run_seeds(
    template: &SimConfig,
    seeds: Range<u64>,
    threads: usize,
    deadline: Option<Instant>,
    stop_at_failure: bool,
    mut on_result: impl FnMut(&SeedResult),
) -> Vec<SeedResult> {
    let next = AtomicU64::new(seeds.start);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<SeedResult>();
    let mut results = Vec::new();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            let end = seeds.end;
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let mut cfg = template.clone();
                cfg.seed = seed;
                let started = Instant::now();
                let report = run(&cfg);
                let result = SeedResult {
                    config: cfg,
                    violations: report.violations,
                    stats: report.stats,
                    elapsed: started.elapsed(),
                };
                if stop_at_failure && !result.passed() {
                    stop.store(true, Ordering::Relaxed);
                }
                if tx.send(result).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for result in rx {
            on_result(&result);
            results.push(result);
        }
    });
    results.sort_by_key(|r| r.config.seed);
    results
}
