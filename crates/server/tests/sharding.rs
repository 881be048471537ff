//! Sharded clusters (`--groups N`) as real processes: tables split into
//! ranges over data groups, ranges moved while clients write, leaders
//! killed, and bad sharding input refused without changing anything.
//!
//! What is checked is what a client and an operator can see: answers over
//! HTTP (at `linearizable` and `local`), `SHOW RANGES` and `GET /shards`,
//! and — the ground truth — each node's `group-K/db.sqlite` files, opened
//! read-only beside the running node (WAL lets a reader in).

mod common;

use common::{wait_until, Cluster, BIN};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One row of `SHOW RANGES`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Range {
    id: u64,
    table: String,
    start: Option<i64>,
    end: Option<i64>,
    group: u64,
    generation: u64,
    rows: i64,
    bytes: i64,
}

impl Range {
    fn holds(&self, k: i64) -> bool {
        self.start.is_none_or(|s| s <= k) && self.end.is_none_or(|e| k < e)
    }
}

/// `SHOW RANGES [FROM TABLE t]` at node `id`, by start key per table.
fn show_ranges(c: &Cluster, id: u64, table: Option<&str>) -> Vec<Range> {
    let sql = match table {
        Some(t) => format!("SHOW RANGES FROM TABLE {t}"),
        None => "SHOW RANGES".to_owned(),
    };
    let (code, body) = c.query(id, &sql, "linearizable").unwrap();
    assert_eq!(code, 200, "{sql} at {id}: {body}");
    let columns = &body["results"][0]["columns"];
    assert_eq!(
        columns,
        &json!([
            "range_id",
            "table_name",
            "start_key",
            "end_key",
            "group_id",
            "leader",
            "generation",
            "rows",
            "bytes"
        ]),
        "{body}"
    );
    let mut out: Vec<Range> = body["results"][0]["values"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| Range {
            id: r[0].as_u64().unwrap(),
            table: r[1].as_str().unwrap().to_owned(),
            start: r[2].as_i64(),
            end: r[3].as_i64(),
            group: r[4].as_u64().unwrap(),
            generation: r[6].as_u64().unwrap(),
            rows: r[7].as_i64().unwrap(),
            bytes: r[8].as_i64().unwrap(),
        })
        .collect();
    out.sort_by_key(|r| (r.table.clone(), r.start.map_or(i128::MIN, i128::from)));
    out
}

/// Waits until every running node knows a leader for every group.
fn wait_groups_led(c: &Cluster, groups: usize) {
    for id in c.running() {
        wait_until(
            Duration::from_secs(30),
            &format!("node {id} knows a leader for each of {groups} groups"),
            || {
                c.get(id, "/shards").is_ok_and(|(code, s)| {
                    let gs = s["groups"].as_array().cloned().unwrap_or_default();
                    code == 200 && gs.len() == groups && gs.iter().all(|g| g["leader"].is_u64())
                })
            },
        );
    }
}

/// A sharding command (or any request) that must succeed, retried while a
/// node answers 503 (a leader being elected, a map changing).
fn execute_retrying(c: &Cluster, id: u64, stmts: Value) -> Value {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match c.post(id, "/db/execute", &stmts.to_string()) {
            Ok((200, body)) => {
                let results = body["results"].as_array().cloned().unwrap_or_default();
                assert!(
                    results.iter().all(|r| r.get("error").is_none()),
                    "{stmts} at {id}: {body}"
                );
                return body;
            }
            Ok((503, body)) => last = body.to_string(),
            Ok((code, body)) => panic!("{stmts} at {id}: {code} {body}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{stmts} at {id} kept failing: {last}");
}

fn relocate(c: &Cluster, via: u64, range: u64, group: u64) {
    execute_retrying(
        c,
        via,
        json!([format!("ALTER RANGE {range} RELOCATE TO GROUP {group}")]),
    );
}

/// The one integer of a one-row, one-column read at node `id`.
fn int(c: &Cluster, id: u64, sql: &str, level: &str) -> i64 {
    let rows = c.rows(id, sql, level);
    rows[0][0]
        .as_i64()
        .unwrap_or_else(|| panic!("{sql} at {id}: {rows:?}"))
}

/// A refused request's status and error text.
fn refused(c: &Cluster, id: u64, path: &str, stmts: Value) -> (u16, String) {
    let (code, body) = c.post(id, path, &stmts.to_string()).unwrap();
    let error = body["error"].as_str().unwrap_or_default().to_owned();
    (
        code,
        if error.is_empty() {
            body.to_string()
        } else {
            error
        },
    )
}

/// Asserts a request is refused as a whole with a 400 whose message holds
/// every one of `words`.
fn assert_bad_request(c: &Cluster, path: &str, stmts: Value, words: &[&str]) {
    let (code, error) = refused(c, 1, path, stmts.clone());
    assert_eq!(code, 400, "{stmts} on {path}: {error}");
    for w in words {
        assert!(
            error.to_lowercase().contains(&w.to_lowercase()),
            "{stmts} on {path}: {error:?} should mention {w:?}"
        );
    }
}

/// A group's database file of a node, opened read-only.
fn open_group(dir: &Path, group: u64) -> Connection {
    let path = dir.join(format!("group-{group}")).join("db.sqlite");
    let db = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db
}

/// The keys of `table` stored in a group's file (empty when the table is
/// not there at all), or the error.
fn stored_keys(dir: &Path, group: u64, table: &str) -> rusqlite::Result<Vec<i64>> {
    let db = open_group(dir, group);
    let exists: i64 = db.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [table],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    let mut stmt = db.prepare(&format!("SELECT id FROM \"{table}\" ORDER BY id"))?;
    let keys = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(keys)
}

/// `(range_id, start, end, generation)`, as a group stores a range.
type StoredRange = (i64, Option<i64>, Option<i64>, i64);

/// The ranges of `table` in a group's `_paxsql_ranges`.
fn stored_ranges(dir: &Path, group: u64, table: &str) -> rusqlite::Result<Vec<StoredRange>> {
    let db = open_group(dir, group);
    let mut stmt = db.prepare(
        "SELECT range_id, start, \"end\", generation FROM _paxsql_ranges WHERE tbl = ?1 \
         ORDER BY coalesce(start, -9223372036854775808)",
    )?;
    let rows = stmt
        .query_map([table], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[test]
fn four_groups_each_hold_exactly_their_range() {
    let c = Cluster::start_with(3, &["--groups", "4"]);
    wait_groups_led(&c, 5);
    execute_retrying(
        &c,
        1,
        json!(["CREATE TABLE kv (id INTEGER PRIMARY KEY, v TEXT)"]),
    );
    execute_retrying(
        &c,
        1,
        json!(["ALTER TABLE kv SPLIT AT VALUES (2501), (5001), (7501)"]),
    );
    let ranges = show_ranges(&c, 1, Some("kv"));
    let bounds: Vec<(Option<i64>, Option<i64>)> = ranges.iter().map(|r| (r.start, r.end)).collect();
    assert_eq!(
        bounds,
        [
            (None, Some(2501)),
            (Some(2501), Some(5001)),
            (Some(5001), Some(7501)),
            (Some(7501), None)
        ],
        "{ranges:?}"
    );
    // Range i (by key order) goes to data group i + 1.
    for (i, r) in ranges.iter().enumerate() {
        relocate(&c, 1, r.id, i as u64 + 1);
    }
    let ranges = show_ranges(&c, 2, Some("kv"));
    let groups: Vec<u64> = ranges.iter().map(|r| r.group).collect();
    assert_eq!(groups, [1, 2, 3, 4], "{ranges:?}");

    // 10,000 rows in batches of 200 through the three nodes in turn; a
    // batch within one range is a transaction, one across two is not.
    let boundaries = [2501, 5001, 7501];
    for (n, first) in (1..=10_000i64).step_by(200).enumerate() {
        let last = first + 199;
        let spans = boundaries.iter().any(|&b| first < b && b <= last);
        let stmts: Vec<Value> = (first..=last)
            .map(|id| json!(["INSERT INTO kv(id, v) VALUES (?, ?)", id, format!("v{id}")]))
            .collect();
        let node = n as u64 % 3 + 1;
        let path = match spans {
            true => "/db/execute",
            false => "/db/execute?transaction",
        };
        let (code, body) = c.post(node, path, &json!(stmts).to_string()).unwrap();
        assert_eq!(code, 200, "batch {first}..={last} at {node}: {body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 200, "{body}");
        for r in results {
            assert!(r.get("error").is_none(), "batch {first}: {body}");
            assert_eq!(r["rows_affected"], 1, "batch {first}: {body}");
        }
    }

    // Every node answers the same, at linearizable.
    let points = [1i64, 2500, 2501, 5000, 5001, 7500, 7501, 10_000];
    for id in 1..=3 {
        let rows = c.rows(id, "SELECT count(*), sum(id) FROM kv", "linearizable");
        assert_eq!(rows, vec![json!([10_000, 50_005_000])], "node {id}");
        for k in points {
            let rows = c.rows(
                id,
                &format!("SELECT v FROM kv WHERE id = {k}"),
                "linearizable",
            );
            assert_eq!(rows, vec![json!([format!("v{k}")])], "node {id}, key {k}");
        }
        // Across the boundary of groups 1 and 2.
        let rows = c.rows(
            id,
            "SELECT id FROM kv WHERE id BETWEEN 2490 AND 2510 ORDER BY id",
            "linearizable",
        );
        let want: Vec<Value> = (2490..=2510).map(|k| json!([k])).collect();
        assert_eq!(rows, want, "node {id}");
        // Within group 3.
        let n = int(
            &c,
            id,
            "SELECT count(*) FROM kv WHERE id >= 5001 AND id < 7501",
            "linearizable",
        );
        assert_eq!(n, 2500, "node {id}");
    }
    let ranges = show_ranges(&c, 3, Some("kv"));
    let counts: Vec<i64> = ranges.iter().map(|r| r.rows).collect();
    assert_eq!(counts, [2500, 2500, 2500, 2500], "{ranges:?}");

    c.wait_converged("SELECT count(*) FROM kv", &[json!([10_000])]);

    // The files: group K holds exactly range K's keys, group 0 no kv at all.
    for node in &c.nodes {
        for r in &ranges {
            let want_first = r.start.unwrap_or(1);
            let want_last = r.end.map_or(10_000, |e| e - 1);
            wait_until(
                Duration::from_secs(30),
                &format!(
                    "node {} group {} holds keys {want_first}..={want_last}",
                    node.id, r.group
                ),
                || {
                    let keys = stored_keys(&node.dir, r.group, "kv").unwrap();
                    keys.len() == 2500
                        && keys.first() == Some(&want_first)
                        && keys.last() == Some(&want_last)
                },
            );
            let own = stored_ranges(&node.dir, r.group, "kv").unwrap();
            assert_eq!(
                own,
                [(r.id as i64, r.start, r.end, r.generation as i64)],
                "node {} group {}",
                node.id,
                r.group
            );
        }
        let meta = open_group(&node.dir, 0);
        let kv_tables: i64 = meta
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'kv'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kv_tables, 0, "node {}: group 0 has no kv table", node.id);
        // The metadata group's map names all four ranges.
        let map = stored_ranges(&node.dir, 0, "kv").unwrap();
        assert_eq!(map.len(), 4, "node {}: {map:?}", node.id);
    }
}

/// What the writers of [`relocate_under_load_loses_and_doubles_nothing`]
/// did: ids attempted (before sending) and acknowledged (a 200 without an
/// error), and counter increments likewise.
#[derive(Default)]
struct Ledger {
    attempted: Mutex<BTreeSet<i64>>,
    acked: Mutex<BTreeSet<i64>>,
    /// Ids whose insert was answered (200) with an error: not written.
    refused: Mutex<BTreeMap<i64, String>>,
    bumps_attempted: AtomicU64,
    bumps_acked: AtomicU64,
}

/// Raises a stop flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Keys of the two ranges of the relocation test: A below, B from here.
const B_START: i64 = 1_000_000;
/// The counter rows, one per range.
const COUNTERS: [i64; 2] = [0, B_START];

/// Sends one write, retried with the same request id on 503 or a lost
/// answer; the final answer (None if it never came).
fn send_write(c: &Cluster, node: u64, path: &str, stmts: &Value) -> Option<Value> {
    for _ in 0..5 {
        match c.post(node, path, &stmts.to_string()) {
            Ok((200, body)) => return Some(body),
            Ok((503, _)) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
            Ok((code, body)) => panic!("{stmts} at {node}: {code} {body}"),
        }
    }
    None
}

/// One writer: through `node`, alternately a transaction of four inserts
/// into one range, and (without a transaction) an insert into each range
/// and one increment of both counters.
fn writer(c: &Cluster, node: u64, w: i64, ledger: &Ledger, stop: &AtomicBool) {
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let rid = format!("w{w}-{i}");
        let key =
            |j: i64, range_b: bool| 1 + (i * 4 + j) * 3 + w + if range_b { B_START } else { 0 };
        let insert = |k: i64| json!(["INSERT INTO t(id, v, n) VALUES (?, ?, 0)", k, rid]);
        if i % 2 == 0 {
            let in_b = i % 4 == 0;
            let keys: Vec<i64> = (0..4).map(|j| key(j, in_b)).collect();
            ledger.attempted.lock().unwrap().extend(&keys);
            let stmts = json!(keys.iter().map(|&k| insert(k)).collect::<Vec<_>>());
            let path = format!("/db/execute?transaction&request_id={rid}");
            if let Some(body) = send_write(c, node, &path, &stmts) {
                let results = body["results"].as_array().unwrap();
                match results.iter().find_map(|r| r.get("error")) {
                    None => ledger.acked.lock().unwrap().extend(&keys),
                    // The transaction rolled back: none of its rows is there.
                    Some(e) => ledger
                        .refused
                        .lock()
                        .unwrap()
                        .extend(keys.iter().map(|&k| (k, e.to_string()))),
                }
            }
        } else {
            let keys = [key(0, false), key(0, true)];
            ledger.attempted.lock().unwrap().extend(keys);
            ledger.bumps_attempted.fetch_add(1, Ordering::SeqCst);
            let stmts = json!([
                insert(keys[0]),
                insert(keys[1]),
                format!(
                    "UPDATE t SET n = n + 1 WHERE id IN ({}, {})",
                    COUNTERS[0], COUNTERS[1]
                )
            ]);
            let path = format!("/db/execute?request_id={rid}");
            if let Some(body) = send_write(c, node, &path, &stmts) {
                let results = body["results"].as_array().unwrap();
                for (k, r) in keys.iter().zip(results) {
                    match r.get("error") {
                        None => ledger.acked.lock().unwrap().insert(*k),
                        Some(e) => ledger
                            .refused
                            .lock()
                            .unwrap()
                            .insert(*k, e.to_string())
                            .is_none(),
                    };
                }
                if results[2].get("error").is_none() {
                    ledger.bumps_acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        i += 1;
    }
}

/// One reader: the count never falls below what was acknowledged before
/// the read, never rises above what was attempted, and no key is there
/// twice. Returns the reads answered.
fn reader(c: &Cluster, ledger: &Ledger, stop: &AtomicBool) -> u64 {
    let mut answered = 0;
    let mut node = 1;
    while !stop.load(Ordering::Relaxed) {
        let acked_before = ledger.acked.lock().unwrap().len() as i64;
        let read = c.query(
            node,
            "SELECT count(*), count(DISTINCT id) = count(*) FROM t",
            "linearizable",
        );
        let attempted_after = ledger.attempted.lock().unwrap().len() as i64;
        let at = node;
        node = node % 3 + 1;
        let Ok((200, body)) = read else {
            continue; // 503 while a range moves: no answer, nothing to check
        };
        let row = &body["results"][0]["values"][0];
        assert!(
            body["results"][0].get("error").is_none(),
            "read at {at}: {body}"
        );
        let count = row[0].as_i64().unwrap() - COUNTERS.len() as i64;
        assert_eq!(row[1], 1, "a key twice (read at {at}): {body}");
        assert!(
            acked_before <= count && count <= attempted_after,
            "count {count} outside [{acked_before} acknowledged, {attempted_after} attempted]"
        );
        answered += 1;
    }
    answered
}

#[test]
fn relocate_under_load_loses_and_doubles_nothing() {
    let c = Cluster::start_with(3, &["--groups", "2"]);
    wait_groups_led(&c, 3);
    execute_retrying(
        &c,
        1,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n INTEGER NOT NULL)"]),
    );
    execute_retrying(
        &c,
        1,
        json!([format!("ALTER TABLE t SPLIT AT VALUES ({B_START})")]),
    );
    let ranges = show_ranges(&c, 1, Some("t"));
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    let (a, b) = (ranges[0].clone(), ranges[1].clone());
    assert_eq!(b.start, Some(B_START), "{ranges:?}");
    if b.group == a.group {
        relocate(&c, 1, b.id, 3 - a.group);
    }
    execute_retrying(
        &c,
        1,
        json!([
            [
                "INSERT INTO t(id, v, n) VALUES (?, 'counter', 0)",
                COUNTERS[0]
            ],
            [
                "INSERT INTO t(id, v, n) VALUES (?, 'counter', 0)",
                COUNTERS[1]
            ]
        ]),
    );
    let before = show_ranges(&c, 1, Some("t"));
    let (a, b) = (before[0].clone(), before[1].clone());
    assert_ne!(a.group, b.group, "{before:?}");

    let ledger = Ledger::default();
    let stop = AtomicBool::new(false);
    let answered = std::thread::scope(|s| {
        // Should the test fail here, the threads still stop (the scope
        // waits for them).
        let _stop_on_exit = StopOnDrop(&stop);
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (c, ledger, stop) = (&c, &ledger, &stop);
                s.spawn(move || writer(c, w as u64 + 1, w, ledger, stop))
            })
            .collect();
        let reading = s.spawn(|| reader(&c, &ledger, &stop));
        let acked = || ledger.acked.lock().unwrap().len();
        let wait_progress = |what: &str| {
            let from = acked();
            wait_until(Duration::from_secs(30), what, || {
                acked() >= from + 40 || writers.iter().any(|w| w.is_finished())
            });
        };
        // B to A's group and back, twice, while the writers write.
        for round in 0..2 {
            wait_progress(&format!("writes before move {round}"));
            relocate(&c, 1, b.id, a.group);
            wait_progress(&format!(
                "writes while range {} is on group {}",
                b.id, a.group
            ));
            relocate(&c, 1, b.id, b.group);
        }
        wait_progress("writes after the moves");
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer");
        }
        reading.join().expect("reader")
    });
    let attempted = ledger.attempted.lock().unwrap().clone();
    let acked = ledger.acked.lock().unwrap().clone();
    eprintln!(
        "{} ids attempted, {} acknowledged, {answered} reads answered",
        attempted.len(),
        acked.len()
    );
    assert!(answered > 0, "no read was answered while ranges moved");
    assert!(
        acked.len() > 200,
        "too few writes acknowledged: {}",
        acked.len()
    );

    // Every acknowledged id is there exactly once; nothing unattempted is.
    let rows = c.rows(
        2,
        &format!(
            "SELECT id FROM t WHERE id NOT IN ({}, {}) ORDER BY id",
            COUNTERS[0], COUNTERS[1]
        ),
        "linearizable",
    );
    let present: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    let distinct: BTreeSet<i64> = present.iter().copied().collect();
    assert_eq!(distinct.len(), present.len(), "a key is there twice");
    let lost: Vec<&i64> = acked.difference(&distinct).collect();
    assert!(lost.is_empty(), "acknowledged ids lost: {lost:?}");
    let invented: Vec<&i64> = distinct.difference(&attempted).collect();
    assert!(invented.is_empty(), "ids never written: {invented:?}");

    // The map: B is back on its group, four generations on; A untouched.
    for id in 1..=3 {
        let after = show_ranges(&c, id, Some("t"));
        assert_eq!(after[0].group, a.group, "node {id}: {after:?}");
        assert_eq!(after[0].generation, a.generation, "node {id}: {after:?}");
        assert_eq!(after[1].group, b.group, "node {id}: {after:?}");
        assert_eq!(
            after[1].generation,
            b.generation + 4,
            "node {id}: {after:?}"
        );
        assert_eq!(
            after[0].rows + after[1].rows,
            present.len() as i64 + 2,
            "node {id}: {after:?}"
        );
    }

    // On disk, on every node: each key in exactly one group's file, the
    // group that owns it (the moves' sources deleted what they gave away).
    let (want_a, want_b): (BTreeSet<i64>, BTreeSet<i64>) = distinct
        .iter()
        .copied()
        .chain(COUNTERS)
        .partition(|&k| a.holds(k));
    assert!(want_b.iter().all(|&k| b.holds(k)));
    for node in &c.nodes {
        wait_until(
            Duration::from_secs(30),
            &format!("node {}'s files hold each key once, in its group", node.id),
            || {
                let in_a = stored_keys(&node.dir, a.group, "t").unwrap();
                let in_b = stored_keys(&node.dir, b.group, "t").unwrap();
                in_a.iter().copied().collect::<BTreeSet<_>>() == want_a
                    && in_a.len() == want_a.len()
                    && in_b.iter().copied().collect::<BTreeSet<_>>() == want_b
                    && in_b.len() == want_b.len()
            },
        );
    }

    // A stale router is corrected: node 3 last routed with B on its group;
    // node 1 moves B once more, then node 3 writes into B.
    relocate(&c, 1, b.id, a.group);
    let stale_key = 2 * B_START - 1;
    execute_retrying(
        &c,
        3,
        json!([["INSERT INTO t(id, v, n) VALUES (?, 'late', 0)", stale_key]]),
    );
    let after = show_ranges(&c, 1, Some("t"));
    assert_eq!(after[1].group, a.group, "{after:?}");
    assert_eq!(after[1].rows, want_b.len() as i64 + 1, "{after:?}");
    let rows = c.rows(
        1,
        &format!("SELECT v FROM t WHERE id = {stale_key}"),
        "linearizable",
    );
    assert_eq!(rows, vec![json!(["late"])]);

    // An insert answered with an error did not happen; each acknowledged
    // increment of both counters applied once, and none more often than it
    // was sent.
    let refused = ledger.refused.lock().unwrap().clone();
    let written_anyway: Vec<(&i64, &String)> = refused
        .iter()
        .filter(|(k, _)| distinct.contains(k))
        .collect();
    let (bumps_acked, bumps_attempted) = (
        ledger.bumps_acked.load(Ordering::SeqCst) as i64,
        ledger.bumps_attempted.load(Ordering::SeqCst) as i64,
    );
    let counters: Vec<i64> = COUNTERS
        .iter()
        .map(|k| {
            int(
                &c,
                1,
                &format!("SELECT n FROM t WHERE id = {k}"),
                "linearizable",
            )
        })
        .collect();
    eprintln!(
        "{} inserts refused, {} of them written anyway: {written_anyway:?}; counters \
         {counters:?} after {bumps_acked} increments acknowledged, {bumps_attempted} sent",
        refused.len(),
        written_anyway.len()
    );
    assert!(
        written_anyway.is_empty(),
        "inserts answered with an error were applied: {written_anyway:?}"
    );
    for (k, n) in COUNTERS.iter().zip(counters) {
        assert!(
            bumps_acked <= n && n <= bumps_attempted,
            "counter {k} is {n}: {bumps_acked} increments acknowledged, {bumps_attempted} sent \
             (a retried request applied a statement twice?)"
        );
    }
}

/// Inserts request `i`'s rows — one in each of a's two ranges, one in b,
/// one in c — through `node`, retrying with the same request id for up to
/// 20 s while groups elect leaders.
fn write_everywhere(c: &Cluster, node: u64, i: i64) {
    let stmts = json!([
        ["INSERT INTO a(id, v) VALUES (?, ?)", i, format!("a{i}")],
        [
            "INSERT INTO a(id, v) VALUES (?, ?)",
            1000 + i,
            format!("a{}", 1000 + i)
        ],
        ["INSERT INTO b(id, v) VALUES (?, ?)", i, format!("b{i}")],
        ["INSERT INTO c(id, v) VALUES (?, ?)", i, format!("c{i}")]
    ]);
    let path = format!("/db/execute?request_id=everywhere-{i}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        match c.post(node, &path, &stmts.to_string()) {
            Ok((200, body)) => {
                let results = body["results"].as_array().unwrap();
                assert!(
                    results.iter().all(|r| r.get("error").is_none()),
                    "request {i} at {node}: {body}"
                );
                return;
            }
            Ok((503, body)) => last = body.to_string(),
            Ok((code, body)) => panic!("request {i} at {node}: {code} {body}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("request {i} at {node} not served within 20 s: {last}");
}

#[test]
fn killed_leader_node_groups_elect_and_catch_up() {
    let mut c = Cluster::start_with(3, &["--groups", "3"]);
    wait_groups_led(&c, 4);
    for t in ["a", "b", "c"] {
        execute_retrying(
            &c,
            1,
            json!([format!("CREATE TABLE {t} (id INTEGER PRIMARY KEY, v TEXT)")]),
        );
    }
    execute_retrying(&c, 1, json!(["ALTER TABLE a SPLIT AT VALUES (1000)"]));
    let ranges = show_ranges(&c, 1, None);
    let groups: BTreeMap<(String, Option<i64>), u64> = ranges
        .iter()
        .map(|r| ((r.table.clone(), r.start), r.group))
        .collect();
    // a's upper range onto a group a's lower range is not on.
    let upper = ranges
        .iter()
        .find(|r| r.table == "a" && r.start == Some(1000))
        .unwrap();
    let lower_group = groups[&("a".to_owned(), None)];
    let target = (1..=3).find(|&g| g != lower_group).unwrap();
    relocate(&c, 1, upper.id, target);
    let ranges = show_ranges(&c, 1, None);
    let used: BTreeSet<u64> = ranges.iter().map(|r| r.group).collect();
    assert!(used.len() >= 2, "the rows should span groups: {ranges:?}");

    for i in 1..=20 {
        write_everywhere(&c, i as u64 % 3 + 1, i);
    }

    // The victim: a node leading at least one data group.
    let (_, shards) = c.get(1, "/shards").unwrap();
    let leads = |node: u64| -> Vec<u64> {
        shards["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["role"] == "data" && g["leader"] == node)
            .map(|g| g["group"].as_u64().unwrap())
            .collect()
    };
    let victim = (1..=3)
        .find(|&n| !leads(n).is_empty())
        .unwrap_or_else(|| panic!("no node leads a data group: {shards}"));
    let led = leads(victim);
    eprintln!("killing node {victim}, leader of data groups {led:?}");
    c.kill(victim);
    let survivors: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();

    for i in 21..=60 {
        write_everywhere(&c, survivors[i as usize % 2], i);
    }
    for &s in &survivors {
        wait_until(
            Duration::from_secs(30),
            &format!("node {s} sees new leaders of groups {led:?}"),
            || {
                c.get(s, "/shards").is_ok_and(|(_, v)| {
                    v["groups"].as_array().is_some_and(|gs| {
                        gs.iter().all(|g| {
                            g["leader"].is_u64()
                                && (!led.contains(&g["group"].as_u64().unwrap())
                                    || g["leader"] != victim)
                        })
                    })
                })
            },
        );
    }
    let expected = [("a", 120), ("b", 60), ("c", 60)];
    for (t, n) in expected {
        for &s in &survivors {
            let got = int(&c, s, &format!("SELECT count(*) FROM {t}"), "linearizable");
            assert_eq!(got, n, "table {t} at node {s}");
        }
    }

    c.spawn(victim);
    c.wait_ready_node(victim);
    wait_groups_led(&c, 4);
    // Every group catches up on the restarted node: its local answers
    // equal the linearizable ones.
    let checks = [
        "SELECT count(*), sum(id) FROM a",
        "SELECT count(*), sum(id) FROM a WHERE id >= 1000",
        "SELECT count(*), sum(id) FROM b",
        "SELECT count(*), sum(id) FROM c",
        "SELECT group_concat(v) FROM (SELECT v FROM c ORDER BY id)",
    ];
    for sql in checks {
        let want = c.rows(survivors[0], sql, "linearizable");
        c.wait_converged(sql, &want);
    }
    // And it serves writes again, on every group.
    write_everywhere(&c, victim, 61);
    for (t, n) in [("a", 122), ("b", 61), ("c", 61)] {
        let got = int(
            &c,
            survivors[1],
            &format!("SELECT count(*) FROM {t}"),
            "linearizable",
        );
        assert_eq!(got, n, "table {t}");
    }
}

/// `SHOW RANGES` without the leader column (elections may move leaders).
fn map_of(c: &Cluster, id: u64) -> Vec<Range> {
    show_ranges(c, id, None)
}

fn counts(c: &Cluster, id: u64) -> (i64, i64) {
    (
        int(c, id, "SELECT count(*) FROM s", "linearizable"),
        int(c, id, "SELECT count(*) FROM t", "linearizable"),
    )
}

/// Waits for a child process to exit (at most 30 s); its status.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the node did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_sharding_input_gets_clear_errors_and_changes_nothing() {
    let mut c = Cluster::start_with(3, &["--groups", "2"]);
    wait_groups_led(&c, 3);
    execute_retrying(
        &c,
        1,
        json!(["CREATE TABLE s (name TEXT PRIMARY KEY, v INT)"]),
    );
    execute_retrying(
        &c,
        1,
        json!(["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"]),
    );
    execute_retrying(&c, 1, json!(["ALTER TABLE t SPLIT AT VALUES (100)"]));
    let t_ranges = show_ranges(&c, 1, Some("t"));
    let upper = t_ranges[1].clone();
    let other = 3 - t_ranges[0].group;
    relocate(&c, 1, upper.id, other);
    execute_retrying(
        &c,
        1,
        json!([
            "INSERT INTO s(name, v) VALUES ('x', 1), ('y', 2)",
            "INSERT INTO t(id, v) VALUES (1, 'one'), (2, 'two')",
            "INSERT INTO t(id, v) VALUES (100, 'hundred'), (101, 'more')"
        ]),
    );
    let map_before = map_of(&c, 1);
    let counts_before = counts(&c, 1);
    assert_eq!(counts_before, (2, 4));
    let s_range = map_before.iter().find(|r| r.table == "s").unwrap().clone();

    // Splits.
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["ALTER TABLE s SPLIT AT VALUES (10)"]),
        &["INTEGER PRIMARY KEY", "s"],
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["ALTER TABLE t SPLIT AT VALUES (300), (200)"]),
        &["increasing order", "200", "300"],
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["ALTER TABLE t SPLIT AT VALUES (50), (50)"]),
        &["50", "twice"],
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["ALTER TABLE t SPLIT AT VALUES"]),
        &["SPLIT AT VALUES ("],
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["ALTER TABLE missing SPLIT AT VALUES (5)"]),
        &["no such table", "missing"],
    );
    // Relocations.
    assert_bad_request(
        &c,
        "/db/execute",
        json!([format!("ALTER RANGE {} RELOCATE TO GROUP 99", upper.id)]),
        &["group 99"],
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!([format!("ALTER RANGE {} RELOCATE TO GROUP 0", s_range.id)]),
        &["group 0"],
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["ALTER RANGE 999 RELOCATE TO GROUP 1"]),
        &["range 999"],
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["ALTER RANGE x RELOCATE TO GROUP 1"]),
        &["ALTER RANGE <range id> RELOCATE TO GROUP <group id>"],
    );
    // A command must come alone.
    assert_bad_request(
        &c,
        "/db/execute",
        json!([
            "INSERT INTO t(id, v) VALUES (3, 'three')",
            format!("ALTER RANGE {} RELOCATE TO GROUP 1", upper.id)
        ]),
        &["request of its own"],
    );
    // SHOW RANGES of a missing table, as a read and as a request.
    assert_bad_request(
        &c,
        "/db/query",
        json!(["SHOW RANGES FROM TABLE missing"]),
        &["no such table", "missing"],
    );
    assert_bad_request(
        &c,
        "/db/request",
        json!(["SHOW RANGES FROM TABLE missing"]),
        &["no such table"],
    );
    // The router's directives, sent by a user, on every path.
    for path in ["/db/execute", "/db/query", "/db/request"] {
        assert_bad_request(&c, path, json!(["PAXSQL CLAIM [[1,1]]"]), &["internal"]);
    }
    let drop_all = format!(
        "PAXSQL RANGES {}",
        json!({ "expect": [], "drop": map_before.iter().map(|r| r.id).collect::<Vec<_>>(), "put": [] })
    );
    assert_bad_request(
        &c,
        "/db/execute",
        json!(["INSERT INTO t(id, v) VALUES (4, 'four')", drop_all]),
        &["statement 2", "internal"],
    );
    // A transaction over two groups: refused, nothing written.
    assert_bad_request(
        &c,
        "/db/execute?transaction",
        json!([
            "INSERT INTO t(id, v) VALUES (5, 'five')",
            "INSERT INTO t(id, v) VALUES (105, 'five more')"
        ]),
        &["transaction", "group"],
    );
    assert_bad_request(
        &c,
        "/db/execute?transaction",
        json!(["UPDATE t SET v = 'all' WHERE id IN (1, 100)"]),
        &["transaction", "group"],
    );

    for id in 1..=3 {
        assert_eq!(map_of(&c, id), map_before, "node {id}");
        assert_eq!(counts(&c, id), counts_before, "node {id}");
    }
    let rows = c.rows(2, "SELECT id, v FROM t ORDER BY id", "linearizable");
    assert_eq!(
        rows,
        vec![
            json!([1, "one"]),
            json!([2, "two"]),
            json!([100, "hundred"]),
            json!([101, "more"])
        ]
    );

    // --groups 0 is refused at start, saying what it takes.
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let out = Command::new(BIN)
        .args([
            "node",
            "--id",
            "1",
            "--peers",
            &format!("1=127.0.0.1:{port}"),
        ])
        .args(["--http", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--pg", "off", "--groups", "0"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--groups 0 started: {stderr}");
    assert!(stderr.contains("--groups"), "{stderr}");
    assert!(stderr.contains("between 1 and"), "{stderr}");

    // A data dir made with --groups 2 refuses --groups 3, naming --groups.
    c.stop(1);
    let log = c.node(1).dir.with_extension("log");
    let logged_before = std::fs::read_to_string(&log).unwrap().len();
    c.extra_args = vec!["--groups".into(), "3".into()];
    c.spawn(1);
    let status = wait_exit(c.nodes[0].child.as_mut().unwrap());
    c.nodes[0].child = None;
    let said = std::fs::read_to_string(&log).unwrap()[logged_before..].to_owned();
    assert!(!status.success(), "node 1 started with --groups 3: {said}");
    assert!(said.contains("--groups 2"), "{said}");
    assert!(
        !c.node(1).dir.join("group-3").exists(),
        "the refused start left a group-3 dir behind"
    );
    // Back with the groups it was made with, it serves as before.
    c.extra_args = vec!["--groups".into(), "2".into()];
    c.spawn(1);
    c.wait_ready_node(1);
    wait_groups_led(&c, 3);
    assert_eq!(map_of(&c, 1), map_before);
    assert_eq!(counts(&c, 1), counts_before);
}

#[test]
fn unsharded_cluster_refuses_sharding_commands() {
    let c = Cluster::start(3);
    c.execute(
        1,
        json!([
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
            "INSERT INTO t(id, v) VALUES (1, 'one'), (200, 'two hundred')"
        ]),
    );
    for (path, sql) in [
        ("/db/query", "SHOW RANGES"),
        ("/db/query", "SHOW RANGES FROM TABLE t"),
        ("/db/execute", "ALTER TABLE t SPLIT AT VALUES (100)"),
        ("/db/execute", "ALTER RANGE 1 RELOCATE TO GROUP 1"),
        ("/db/request", "SHOW RANGES"),
    ] {
        assert_bad_request(&c, path, json!([sql]), &["one group", "--groups"]);
    }
    for id in 1..=3 {
        let (code, shards) = c.get(id, "/shards").unwrap();
        assert_eq!(code, 200, "{shards}");
        assert_eq!(shards["sharded"], false, "{shards}");
        assert_eq!(shards["ranges"], json!([]), "{shards}");
        let groups = shards["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 1, "{shards}");
        assert_eq!(groups[0]["group"], 0, "{shards}");
    }
    // Nothing changed, and the database is still one group on disk.
    let rows = c.rows(2, "SELECT id FROM t ORDER BY id", "linearizable");
    assert_eq!(rows, vec![json!([1]), json!([200])]);
    for node in &c.nodes {
        assert!(node.dir.join("group-0").is_dir(), "node {}", node.id);
        assert!(!node.dir.join("group-1").exists(), "node {}", node.id);
    }
}

/// The error of a read that must fail, and must fail on the gather bound.
fn gather_bound_error(c: &Cluster, sql: &str) -> String {
    let (code, body) = c.query(1, sql, "linearizable").unwrap();
    assert_eq!(code, 200, "{sql}: {body}");
    let error = body["results"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{sql} should exceed the gather bound: {body}"))
        .to_owned();
    assert!(
        error.contains("cross-shard query bound") && error.contains("--gather-bytes-max"),
        "{sql}: {error}"
    );
    error
}

#[test]
fn a_gathered_one_table_query_copies_only_the_rows_its_filter_keeps() {
    // 1,000 rows of about 130 bytes each over two groups: the whole table
    // is more than the bound, a tenth of it is not.
    let c = Cluster::start_with(3, &["--groups", "2", "--gather-bytes-max", "50000"]);
    c.wait_groups_led(3);
    c.execute_retrying(
        1,
        json!(["CREATE TABLE big (id INTEGER PRIMARY KEY, tag INTEGER, pad TEXT)"]),
    );
    let ranges = c.spread_table(1, "big", &[501], 2, 1);
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    let pad = "p".repeat(100);
    for keys in [1..=500i64, 501..=1000] {
        let values: Vec<String> = keys
            .map(|id| format!("({id}, {}, '{pad}')", id % 100))
            .collect();
        let insert = format!("INSERT INTO big(id, tag, pad) VALUES {}", values.join(", "));
        c.execute_retrying(1, json!([insert]));
    }
    let ids =
        |rows: Vec<Value>| -> Vec<i64> { rows.iter().map(|r| r[0].as_i64().unwrap()).collect() };

    // Copied whole, the table does not fit.
    gather_bound_error(&c, "SELECT count(*) FROM big");

    // Its WHERE runs on each group: ten rows are copied.
    let rows = c.rows(
        1,
        "SELECT id FROM big WHERE tag = 7 ORDER BY id",
        "linearizable",
    );
    let want: Vec<i64> = (0..10).map(|k| k * 100 + 7).collect();
    assert_eq!(ids(rows), want);
    let rows = c.rows(
        1,
        "SELECT count(*), sum(id) FROM big WHERE tag IN (1, 2) AND pad LIKE 'p%'",
        "linearizable",
    );
    assert_eq!(rows, vec![json!([20, 9_030])]);
    let rows = c.rows(
        1,
        "SELECT b.id FROM big AS b WHERE b.id BETWEEN 400 AND 600 AND b.tag = 50 ORDER BY 1",
        "linearizable",
    );
    assert_eq!(ids(rows), [450, 550]);
    // With a parameter, written into each group's SELECT.
    let (code, body) = c
        .post(
            1,
            "/db/query?level=linearizable",
            &json!([[
                "SELECT id FROM big WHERE tag = ? ORDER BY id DESC LIMIT 2",
                99
            ]])
            .to_string(),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["results"][0]["values"],
        json!([[999], [899]]),
        "{body}"
    );

    // ORDER BY ... LIMIT with the key: the first three of each range.
    let rows = c.rows(
        1,
        "SELECT id FROM big ORDER BY tag DESC, id LIMIT 3 OFFSET 1",
        "linearizable",
    );
    assert_eq!(ids(rows), [199, 299, 399]);

    // What cannot be pushed down still copies whole ranges, and fails on
    // the bound with its clear error.
    for sql in [
        // The order leaves ties: the rows kept at the limit could differ.
        "SELECT id FROM big ORDER BY tag DESC LIMIT 3",
        // A subquery, a join.
        "SELECT id FROM big WHERE tag = (SELECT 7)",
        "SELECT count(*) FROM big a JOIN big b ON a.id = b.id WHERE a.tag = 7",
        // A name the query gives a result column.
        "SELECT tag + 1 AS t1 FROM big WHERE t1 = 8",
    ] {
        gather_bound_error(&c, sql);
    }
}
