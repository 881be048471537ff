//! `paxsql bench` end to end: tiny runs against a local 3-node cluster it
//! starts itself, and against the SQLite baseline. No timing is asserted —
//! only that the output is well-formed, that the counts add up, and that
//! the replicas end identical.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_paxsql");

/// Runs `paxsql bench ARGS --plot PLOT --json DIR/out.json --quiet`;
/// returns the JSON and stdout, panicking with stderr if it failed.
fn bench(dir: &Path, args: &str, plot: &Path) -> (Value, String) {
    let json = dir.join("out.json");
    let out = Command::new(BIN)
        .arg("bench")
        .args(args.split_whitespace())
        .arg("--plot")
        .arg(plot)
        .arg("--json")
        .arg(&json)
        .arg("--data-dir")
        .arg(dir)
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).unwrap();
    (serde_json::from_str(&text).unwrap(), stdout)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// The invariants every run's summary keeps, whatever the timing.
fn check_run(run: &Value, batch: u64) {
    let (ops, ok, errors) = (u(&run["ops"]), u(&run["ok"]), u(&run["errors"]));
    assert!(ops > 0, "{run}");
    assert_eq!(ops, ok + errors, "ops = ok + errors: {run}");
    assert_eq!(
        u(&run["statements"]),
        ops * batch,
        "statements = ops × batch"
    );
    let by_kind: u64 = run["by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| u(&k["ops"]))
        .sum();
    assert_eq!(by_kind, ops, "the kinds add up to the total");
    let by_error: u64 = run["errors_by_kind"]
        .as_object()
        .unwrap()
        .values()
        .map(u)
        .sum();
    assert_eq!(by_error, errors, "every error has a kind");
    let l = &run["latency_ms"];
    if ok > 0 {
        let p = |k: &str| l[k].as_f64().unwrap();
        assert!(p("p50") > 0.0);
        assert!(p("p50") <= p("p90") && p("p90") <= p("p99"));
        assert!(p("p99") <= p("p999") && p("p999") <= p("max"));
    }
    let cdf = run["cdf"].as_array().unwrap();
    assert!(!cdf.is_empty());
    assert_eq!(cdf.last().unwrap()[1].as_f64(), Some(1.0));
    assert!(run["timeline"].is_array());
}

/// The replicas compared equal, holding `rows` rows of the bench table.
fn check_verified(doc: &Value, rows: std::ops::RangeInclusive<u64>) {
    let v = &doc["verify"];
    assert_eq!(v["passed"], true, "{v}");
    let copies = v["tables"]["paxsql_bench"].as_array().unwrap();
    assert_eq!(copies.len(), 3, "one copy per node: {v}");
    let n = u(&copies[0]["rows"]);
    assert!(rows.contains(&n), "{n} rows, expected {rows:?}: {v}");
    for c in copies {
        assert_eq!(c["rows"], copies[0]["rows"]);
        assert_eq!(c["hash"], copies[0]["hash"]);
    }
}

#[test]
fn a_tiny_ycsb_run_adds_up_and_leaves_identical_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("plot.png");
    let (doc, stdout) = bench(
        dir.path(),
        "--local-cluster 3 --workload ycsb-a --distribution zipfian --level leader --keys 500 --row-size 20 -c 4 --batch 3 --duration 2s --warmup 300ms --verify",
        &png,
    );
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["config"]["workload"], "ycsb-a");
    assert_eq!(doc["config"]["nodes"].as_array().unwrap().len(), 3);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    check_run(&runs[0], 3);
    let kinds: Vec<&String> = runs[0]["by_kind"].as_object().unwrap().keys().collect();
    assert_eq!(kinds, ["read", "update"], "YCSB-A reads and updates");
    assert!(doc["ratio_to_baseline"].is_null());
    // Updates only: the table keeps exactly the loaded keys.
    check_verified(&doc, 500..=500);
    assert!(stdout.contains("verify: passed"), "{stdout}");
    assert!(stdout.contains("p99"), "{stdout}");
    let image = std::fs::read(&png).unwrap();
    assert_eq!(&image[1..4], b"PNG");
}

#[test]
fn an_insert_run_and_its_sqlite_baseline_count_the_same_operations() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("plot.svg");
    let (doc, stdout) = bench(
        dir.path(),
        "--local-cluster 3 --workload insert -c 2 --batch 5 --ops 150 --warmup 0s --baseline sqlite --verify",
        &svg,
    );
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "the cluster, then the baseline");
    assert_eq!(runs[1]["target"], "sqlite baseline");
    for run in runs {
        check_run(run, 5);
        assert_eq!(u(&run["ops"]), 150, "--ops measures exactly that many");
    }
    assert_eq!(u(&runs[1]["errors"]), 0, "{}", runs[1]);
    let ratio = &doc["ratio_to_baseline"];
    assert!(ratio["ops_per_s"].as_f64().unwrap() > 0.0, "{ratio}");
    assert!(stdout.contains("replicated / baseline"), "{stdout}");
    // With no warm-up, every measured insert is in the table; a request that
    // failed (say, timed out) may or may not have been applied.
    let ok = u(&runs[0]["ok"]);
    check_verified(&doc, ok * 5..=150 * 5);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg") && text.contains("sqlite baseline"));
}

#[test]
fn a_groups_list_runs_once_per_group_count_and_prints_them_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("plot.svg");
    let (doc, stdout) = bench(
        dir.path(),
        "--local-cluster 3 --groups 1,2 --workload insert -c 4 --ops 200 --warmup 0s --verify",
        &svg,
    );
    assert_eq!(doc["config"]["groups"], serde_json::json!([1, 2]));
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "one run per group count");
    assert_eq!(runs[0]["target"], "paxsql, 3 nodes, 1 group");
    assert_eq!(runs[1]["target"], "paxsql, 3 nodes, 2 groups");
    for run in runs {
        check_run(run, 1);
        assert_eq!(u(&run["ops"]), 200, "--ops measures exactly that many");
    }
    let side = doc["groups"].as_array().unwrap();
    assert_eq!(side.len(), 2);
    assert_eq!(side[0]["ratio_to_first"]["ops_per_s"].as_f64(), Some(1.0));
    assert!(side[1]["ratio_to_first"]["ops_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        side[0]["ranges"].is_null(),
        "one group: the table is not split"
    );
    // Two ranges, range g on data group g, and the inserts went to both.
    let ranges = side[1]["ranges"].as_array().unwrap();
    let groups: Vec<u64> = ranges.iter().map(|r| u(&r["group_id"])).collect();
    assert_eq!(groups, [1, 2], "{ranges:?}");
    for (r, v) in ranges.iter().zip(side.iter().map(|s| &s["verify"])) {
        assert!(r["rows"].as_i64().unwrap() > 0, "{ranges:?}");
        assert_eq!(v["passed"], true, "{v}");
    }
    assert!(doc["verify"].is_null(), "each run has its own");
    assert!(stdout.contains("data groups side by side"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains("rows per range"))
        .unwrap();
    let row = |i: usize| lines[header + i].split_whitespace().collect::<Vec<_>>();
    assert_eq!(row(1)[0], "1", "{stdout}");
    assert_eq!(row(1)[5], "1.00x", "{stdout}");
    assert_eq!(row(2)[0], "2", "{stdout}");
    assert!(row(2)[5].ends_with('x'), "{stdout}");
    assert!(stdout.contains("groups 2: verify: passed"), "{stdout}");
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let out = Command::new(BIN)
        .args(["bench", "--local-cluster", "3", "--theta", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--theta"), "{err}");
    let out = Command::new(BIN)
        .args(["bench", "--workload", "read"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a target is required");
    let out = Command::new(BIN)
        .args(["bench", "--http", "127.0.0.1:1", "--groups", "1,2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--local-cluster"), "{err}");
}
