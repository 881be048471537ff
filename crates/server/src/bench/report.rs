//! The summary table on stdout and the `--json` document.

use super::shard::RangeLayout;
use super::stats::RunSummary;
use super::verify::VerifyReport;
use serde::Serialize;
use std::fmt::Write as _;

/// Replicated over baseline, for the numbers people quote.
#[derive(Clone, Debug, Serialize)]
pub struct Ratios {
    /// Cluster ops/s ÷ baseline ops/s (below 1: the cluster is slower).
    pub ops_per_s: f64,
    /// Cluster p50 latency ÷ baseline p50 latency (above 1: slower).
    pub p50_latency: f64,
    /// Cluster p99 latency ÷ baseline p99 latency.
    pub p99_latency: f64,
}

impl Ratios {
    pub fn of(cluster: &RunSummary, baseline: &RunSummary) -> Ratios {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Ratios {
            ops_per_s: div(cluster.ops_per_s, baseline.ops_per_s),
            p50_latency: div(cluster.latency_ms.p50, baseline.latency_ms.p50),
            p99_latency: div(cluster.latency_ms.p99, baseline.latency_ms.p99),
        }
    }
}

/// One cluster run of a `--groups` list, beside the others.
#[derive(Clone, Debug, Serialize)]
pub struct GroupsRun {
    /// Data groups of the cluster.
    pub groups: u32,
    /// The run's name in `runs`.
    pub target: String,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    /// This run over the first run of the list (the first one's is 1).
    pub ratio_to_first: Ratios,
    /// The table's ranges after the run, one per data group (G above 1).
    pub ranges: Option<Vec<RangeLayout>>,
    /// With `--verify`.
    pub verify: Option<VerifyReport>,
}

impl GroupsRun {
    pub fn of(
        groups: u32,
        run: &RunSummary,
        first: &RunSummary,
        ranges: Option<Vec<RangeLayout>>,
        verify: Option<VerifyReport>,
    ) -> GroupsRun {
        GroupsRun {
            groups,
            target: run.target.clone(),
            ops_per_s: run.ops_per_s,
            p50_ms: run.latency_ms.p50,
            p99_ms: run.latency_ms.p99,
            errors: run.errors,
            ratio_to_first: Ratios::of(run, first),
            ranges,
            verify,
        }
    }
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Report<C: Serialize> {
    /// Bumped when a field changes meaning.
    pub format_version: u32,
    /// The flags the run used.
    pub config: C,
    /// The cluster runs (one per `--groups` value, in order), then the
    /// baseline run if there was one.
    pub runs: Vec<RunSummary>,
    /// Present with `--baseline`.
    pub ratio_to_baseline: Option<Ratios>,
    /// Present with `--verify` and one `--groups` value (with several,
    /// each of `groups` holds its own).
    pub verify: Option<VerifyReport>,
    /// The cluster runs side by side, one per `--groups` value.
    pub groups: Vec<GroupsRun>,
}

/// The `--groups` runs side by side: throughput, latency, and throughput
/// as a ratio to the first value of the list.
pub fn groups_table(rows: &[GroupsRun]) -> String {
    let mut out = String::new();
    let first = rows.first().map_or(0, |r| r.groups);
    let _ = writeln!(
        out,
        "data groups side by side (ratio: ops/s over the {first}-group run):"
    );
    let _ = writeln!(
        out,
        "{:>6} {:>10} {:>8} {:>8} {:>7} {:>7}  rows per range after the run",
        "groups", "ops/s", "p50 ms", "p99 ms", "errors", "ratio"
    );
    for r in rows {
        let spread = match &r.ranges {
            Some(ranges) => ranges
                .iter()
                .map(|x| format!("g{}: {}", x.group_id, x.rows))
                .collect::<Vec<_>>()
                .join(", "),
            None => "one range".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:>6} {:>10.1} {:>8.3} {:>8.3} {:>7} {:>6.2}x  {spread}",
            r.groups, r.ops_per_s, r.p50_ms, r.p99_ms, r.errors, r.ratio_to_first.ops_per_s
        );
    }
    for r in rows {
        if let Some(v) = &r.verify {
            let _ = write!(out, "groups {}: {}", r.groups, verify_text(v));
        }
    }
    out
}

/// The human-readable table.
pub fn table(
    runs: &[RunSummary],
    ratios: Option<&Ratios>,
    verify: Option<&VerifyReport>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "run",
        "ops",
        "ops/s",
        "stmts/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "errors",
        "vs base"
    );
    for (i, r) in runs.iter().enumerate() {
        let vs = match (i, ratios) {
            (0, Some(x)) => format!("{:.2}x", x.ops_per_s),
            (_, Some(_)) => "1.00x".to_owned(),
            _ => "-".to_owned(),
        };
        let l = &r.latency_ms;
        let _ = writeln!(
            out,
            "{:<26} {:>9} {:>10.1} {:>10.1} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>9}",
            r.target,
            r.ops,
            r.ops_per_s,
            r.statements_per_s,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            r.errors,
            vs
        );
        if r.by_kind.len() > 1 {
            for (kind, k) in &r.by_kind {
                let l = &k.latency_ms;
                let _ = writeln!(
                    out,
                    "{:<26} {:>9} {:>10.1} {:>10} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7}",
                    format!("  {kind}"),
                    k.ops,
                    k.ops_per_s,
                    "",
                    l.p50,
                    l.p90,
                    l.p99,
                    l.p999,
                    l.max,
                    k.errors
                );
            }
        }
    }
    for r in runs {
        if r.errors_by_kind.is_empty() {
            continue;
        }
        let _ = writeln!(out, "errors, {}:", r.target);
        for (kind, n) in &r.errors_by_kind {
            let _ = writeln!(out, "  {n:>9}  {kind}");
        }
    }
    let probes: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.fsync.as_ref().map(|f| {
                format!(
                    "{}: append p50 {:.2} ms, overwrite p50 {:.2} ms",
                    r.target, f.append_p50_ms, f.overwrite_p50_ms
                )
            })
        })
        .collect();
    if !probes.is_empty() {
        let _ = writeln!(
            out,
            "disk fdatasync of 4 KiB just before each run: {}",
            probes.join("; ")
        );
    }
    if let Some(x) = ratios {
        let _ = writeln!(
            out,
            "replicated / baseline: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x",
            x.ops_per_s, x.p50_latency, x.p99_latency
        );
    }
    if let Some(v) = verify {
        out += &verify_text(v);
    }
    out
}

/// `verify: passed: ...`, or `verify: FAILED` and what differed.
fn verify_text(v: &VerifyReport) -> String {
    let mut out = String::new();
    if v.passed {
        let index = v.applied_index.values().next().cloned().unwrap_or_default();
        let rows: u64 = v
            .tables
            .values()
            .filter_map(|c| c.first())
            .map(|c| c.rows)
            .sum();
        let _ = writeln!(
            out,
            "verify: passed: {} nodes at applied index {index:?}, {} table(s), {rows} rows, identical",
            v.applied_index.len(),
            v.tables.len()
        );
    } else {
        let _ = writeln!(out, "verify: FAILED");
        for p in &v.problems {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}
