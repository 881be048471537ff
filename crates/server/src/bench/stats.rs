//! Counting what happened: one [`Recorder`] per client task (no sharing, no
//! locks on the hot path), merged into one at the end and summarised.
//!
//! Latency is recorded for successful operations only, in microseconds,
//! in an HDR histogram (3 significant digits, up to an hour). Failed
//! operations are counted by kind; their latency would mix a 30 s timeout
//! into the percentiles of the operations that worked.

use super::disk::FsyncProbe;
use super::workload::OpKind;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Width of one throughput-over-time bucket.
pub const BUCKET: Duration = Duration::from_millis(250);

/// The largest latency the histograms hold (larger ones are clamped).
const LATENCY_US_MAX: u64 = 3_600 * 1_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// One kind's counts.
#[derive(Debug)]
struct KindRecord {
    ok: u64,
    failed: u64,
    latency_us: Histogram<u64>,
}

/// What one client task saw (or, merged, a whole run).
#[derive(Debug)]
pub struct Recorder {
    kinds: BTreeMap<OpKind, KindRecord>,
    errors: BTreeMap<String, u64>,
    /// Successful and failed operations per [`BUCKET`], by completion time
    /// since measuring began.
    timeline: Vec<(u64, u64)>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            kinds: BTreeMap::new(),
            errors: BTreeMap::new(),
            timeline: Vec::new(),
        }
    }

    /// Records one measured operation that completed `done_at` after
    /// measuring began and took `latency`.
    pub fn record(
        &mut self,
        kind: OpKind,
        done_at: Duration,
        latency: Duration,
        outcome: Result<(), String>,
    ) {
        let k = self.kinds.entry(kind).or_insert_with(|| KindRecord {
            ok: 0,
            failed: 0,
            latency_us: histogram(),
        });
        let bucket = (done_at.as_nanos() / BUCKET.as_nanos()) as usize;
        if self.timeline.len() <= bucket {
            self.timeline.resize(bucket + 1, (0, 0));
        }
        match outcome {
            Ok(()) => {
                k.ok += 1;
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                k.latency_us.saturating_record(us.clamp(1, LATENCY_US_MAX));
                self.timeline[bucket].0 += 1;
            }
            Err(kind) => {
                k.failed += 1;
                *self.errors.entry(kind).or_default() += 1;
                self.timeline[bucket].1 += 1;
            }
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Recorder) {
        for (kind, o) in other.kinds {
            match self.kinds.get_mut(&kind) {
                Some(k) => {
                    k.ok += o.ok;
                    k.failed += o.failed;
                    k.latency_us
                        .add(&o.latency_us)
                        .expect("histograms with equal bounds add");
                }
                None => {
                    self.kinds.insert(kind, o);
                }
            }
        }
        for (e, n) in other.errors {
            *self.errors.entry(e).or_default() += n;
        }
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), (0, 0));
        }
        for (mine, theirs) in self.timeline.iter_mut().zip(other.timeline) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
        }
    }

    /// The numbers of a run that measured for `elapsed` with `batch`
    /// statements per operation.
    pub fn summarise(&self, target: String, elapsed: Duration, batch: usize) -> RunSummary {
        let mut all = histogram();
        let mut by_kind = BTreeMap::new();
        let (mut ok, mut failed) = (0, 0);
        for (kind, k) in &self.kinds {
            all.add(&k.latency_us)
                .expect("histograms with equal bounds add");
            ok += k.ok;
            failed += k.failed;
            by_kind.insert(
                kind.name().to_owned(),
                KindSummary {
                    ops: k.ok + k.failed,
                    ok: k.ok,
                    errors: k.failed,
                    ops_per_s: per_s(k.ok, elapsed),
                    latency_ms: Latency::of(&k.latency_us),
                },
            );
        }
        let batch = batch as u64;
        RunSummary {
            target,
            elapsed_s: elapsed.as_secs_f64(),
            ops: ok + failed,
            ok,
            errors: failed,
            statements: (ok + failed) * batch,
            ops_per_s: per_s(ok, elapsed),
            statements_per_s: per_s(ok * batch, elapsed),
            latency_ms: Latency::of(&all),
            by_kind,
            errors_by_kind: self.errors.clone(),
            timeline: timeline(&self.timeline, elapsed),
            cdf: cdf(&all),
            fsync: None,
        }
    }
}

/// Rates per bucket. The last bucket is usually cut short by the end of
/// the run: its rate is over the time it covers, and a sliver of less than
/// a fifth of a bucket is left out of the plot (its operations still count
/// in the totals) rather than drawn as a misleading dip.
fn timeline(buckets: &[(u64, u64)], elapsed: Duration) -> Vec<TimelinePoint> {
    let bucket_s = BUCKET.as_secs_f64();
    let elapsed_s = elapsed.as_secs_f64();
    buckets
        .iter()
        .enumerate()
        .filter_map(|(i, &(ok, err))| {
            let start = i as f64 * bucket_s;
            let width = (elapsed_s - start).min(bucket_s);
            (width >= bucket_s / 5.0).then(|| TimelinePoint {
                t_s: start + width,
                ok_per_s: ok as f64 / width,
                errors_per_s: err as f64 / width,
            })
        })
        .collect()
}

fn per_s(n: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// The latency CDF as (milliseconds, fraction of operations at or below).
fn cdf(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut qs: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
    qs.extend([0.995, 0.999, 0.9995, 0.9999, 1.0]);
    qs.into_iter()
        .map(|q| (h.value_at_quantile(q) as f64 / 1000.0, q))
        .collect()
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency {
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Latency {
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One operation kind within a run.
#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub ops: u64,
    pub ok: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub latency_ms: Latency,
}

/// Throughput in one [`BUCKET`] ending at `t_s`.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub ok_per_s: f64,
    pub errors_per_s: f64,
}

/// One target's run, as the table, the JSON and the plot show it.
///
/// `ops = ok + errors` and `statements = ops × batch`; the rates count
/// successful operations only.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub target: String,
    pub elapsed_s: f64,
    pub ops: u64,
    pub ok: u64,
    pub errors: u64,
    pub statements: u64,
    pub ops_per_s: f64,
    pub statements_per_s: f64,
    pub latency_ms: Latency,
    pub by_kind: BTreeMap<String, KindSummary>,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
    /// `(latency_ms, fraction)` pairs, fraction rising from 0 to 1.
    pub cdf: Vec<(f64, f64)>,
    /// The disk's fsync latency just before this run, where it was measured
    /// (a local cluster or the baseline).
    pub fsync: Option<FsyncProbe>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_counts_add_up() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        let ms = Duration::from_millis;
        a.record(OpKind::Read, ms(10), ms(1), Ok(()));
        a.record(OpKind::Read, ms(600), ms(3), Err("http 503".into()));
        b.record(OpKind::Update, ms(300), ms(2), Ok(()));
        b.record(OpKind::Update, ms(900), ms(2), Err("http 503".into()));
        a.merge(b);
        let s = a.summarise("t".into(), Duration::from_secs(1), 4);
        assert_eq!((s.ops, s.ok, s.errors, s.statements), (4, 2, 2, 16));
        assert_eq!(s.errors_by_kind["http 503"], 2);
        assert_eq!(s.by_kind["read"].ops, 2);
        assert_eq!(s.timeline.len(), 4);
        let total: f64 = s.timeline.iter().map(|p| p.ok_per_s + p.errors_per_s).sum();
        assert_eq!(total * BUCKET.as_secs_f64(), 4.0);
        assert!(s.latency_ms.max >= 2.0 && s.latency_ms.p50 >= 1.0);
    }
}
