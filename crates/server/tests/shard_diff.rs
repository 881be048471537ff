//! Differential test of sharded reads and writes: a 3-node cluster with
//! three data groups (`--groups 3`) against a local in-memory SQLite holding
//! the same rows, asked the same random queries.
//!
//! Two tables, `a(id INTEGER PRIMARY KEY, g INTEGER, x REAL, s TEXT)` and
//! `b(id INTEGER PRIMARY KEY, a_id INTEGER, y INTEGER)`, are split right
//! after they are created (`a` at 100, 200, 300 into four ranges on groups
//! 1, 2, 3, 1; `b` at 200, 400 into three on groups 2, 3, 1), then filled
//! with a few hundred seeded random rows (NULLs, duplicate `g`/`s`/`y`,
//! `b.a_id` pointing into `a`, outside it, or NULL), every insert giving its
//! key. Then come the queries: point, range and IN lookups on the key (near
//! and across range bounds, as text and real too), filters on other
//! columns, ORDER BY with LIMIT/OFFSET, aggregates, GROUP BY/HAVING,
//! DISTINCT, joins and LEFT JOINs of `a` and `b`, IN/EXISTS/scalar
//! subqueries, CTEs, window functions, UNION/EXCEPT/INTERSECT. Most read
//! several groups and are gathered; some are answered by one group. Every
//! few queries, a batch of writes (UPDATE and DELETE by key, by key range
//! and by other columns; INSERTs with new keys) goes to both sides, whose
//! rows-affected counts must agree.
//!
//! Reads go round-robin over the nodes at `level=linearizable`. Two answers
//! agree when they have the same column names and the same rows: in order
//! when the query's ORDER BY is total (ends in a unique key — the generator
//! knows), else as sorted multisets; reals within a relative 1e-9 (a sum
//! over rows gathered in another order may differ in its last bits); an
//! integer never equals a real. Two errors agree whatever their messages.
//! At the end, both sides' tables must be identical.
//!
//! The seed is random and printed; every mismatch is printed with the seed,
//! the query's number, the query, and both answers. To replay a run:
//!
//! ```text
//! PAXSQL_DIFF_SEED=<seed> cargo test -p paxsql --test shard_diff -- --nocapture
//! ```
//!
//! `PAXSQL_DIFF_QUERIES` sets how many queries run (300 by default); the
//! data and the first N queries and writes of a seed are the same whatever
//! the count.

mod common;

use common::Cluster;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rusqlite::types::ValueRef;
use rusqlite::Connection;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

/// The cluster's data groups.
const GROUPS: u64 = 3;

/// Rows of `a` and of `b` at the start.
const A_ROWS: usize = 300;
const B_ROWS: usize = 400;

/// Keys of `a` come from 1..=A_KEYS, of `b` from 1..=B_KEYS.
const A_KEYS: i64 = 450;
const B_KEYS: i64 = 600;

/// Where the tables are split.
const A_SPLITS: [i64; 3] = [100, 200, 300];
const B_SPLITS: [i64; 2] = [200, 400];

/// Queries between two batches of writes.
const QUERIES_PER_WRITE_BATCH: usize = 25;
const WRITES_PER_BATCH: usize = 3;

/// Mismatches printed in full.
const SHOW_MISMATCHES: usize = 10;

const WORDS: [&str; 6] = ["ant", "bee", "cat", "dog", "eel", ""];

/// The tables, an index (gathered queries recreate it) and a view over
/// both tables (gathered queries read its tables).
const SCHEMA: [&str; 4] = [
    "CREATE TABLE a(id INTEGER PRIMARY KEY, g INTEGER, x REAL, s TEXT)",
    "CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INTEGER, y INTEGER)",
    "CREATE INDEX b_a_id ON b(a_id)",
    "CREATE VIEW ab AS SELECT a.id AS aid, a.g, b.id AS bid, b.y FROM a JOIN b ON b.a_id = a.id",
];

#[test]
fn sharded_queries_and_writes_match_sqlite() {
    let seed = seed();
    let queries = query_count();
    let replay = format!(
        "PAXSQL_DIFF_SEED={seed} PAXSQL_DIFF_QUERIES={queries} \
         cargo test -p paxsql --test shard_diff -- --nocapture"
    );
    println!("shard_diff: seed {seed}, {queries} queries; replay with: {replay}");
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut diff = Diff::start();

    for sql in SCHEMA {
        diff.load(&[sql.to_owned()]);
    }
    diff.spread("a", &A_SPLITS, 1);
    diff.spread("b", &B_SPLITS, 2);
    let mut keys = Keys::default();
    let mut inserts = Vec::new();
    for id in sample_keys(&mut rng, A_KEYS, A_ROWS) {
        inserts.push(insert_a(&mut rng, &[id]));
        keys.a.insert(id);
    }
    let a_keys: Vec<i64> = keys.a.iter().copied().collect();
    for id in sample_keys(&mut rng, B_KEYS, B_ROWS) {
        inserts.push(insert_b(&mut rng, &[id], &a_keys));
        keys.b.insert(id);
    }
    for chunk in inserts.chunks(50) {
        diff.load(chunk);
    }
    diff.check_spread();
    let loaded = started.elapsed();

    for i in 0..queries {
        if i > 0 && i % QUERIES_PER_WRITE_BATCH == 0 {
            // A multi-row INSERT whose rows are on several groups is
            // refused (one INSERT per group): one INSERT per row here.
            for row in insert_spanning(&mut rng, &mut keys) {
                diff.write(i, &row);
            }
            for _ in 0..WRITES_PER_BATCH {
                let w = gen_write(&mut rng, &mut keys);
                diff.write(i, &w);
            }
        }
        let q = gen_query(&mut rng);
        diff.compare(i, &q);
    }
    for table in ["a", "b"] {
        let all = Query {
            sql: format!("SELECT * FROM {table} ORDER BY id"),
            ordered: true,
        };
        diff.compare(queries, &all);
    }

    let mismatches = diff.mismatches.len();
    println!(
        "shard_diff: seed {seed}: {} queries ({} errors on both sides), {} writes; \
         {mismatches} mismatches; load {:.1}s, total {:.1}s",
        diff.compared,
        diff.both_failed,
        diff.writes,
        loaded.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if mismatches > 0 {
        for m in diff.mismatches.iter().take(SHOW_MISMATCHES) {
            eprintln!("{m}\n");
        }
        panic!(
            "seed {seed}: {mismatches} mismatches with SQLite in {} queries and {} writes \
             (first {} above); replay with: {replay}",
            diff.compared,
            diff.writes,
            mismatches.min(SHOW_MISMATCHES)
        );
    }
}

/// The comparison itself: what counts as the same answer.
#[test]
fn answers_compare_by_order_only_when_ordered() {
    let rows = |r: &[&[Val]]| Answer::Rows {
        columns: vec!["c".into(), "d".into()],
        rows: r.iter().map(|r| r.to_vec()).collect(),
    };
    let one = [Val::Int(1), Val::Text("x".into())];
    let two = [Val::Real(0.1 + 0.2), Val::Null];
    let two_again = [Val::Real(0.3), Val::Null];
    let ab = rows(&[&one, &two]);
    let ba = rows(&[&two_again, &one]);
    assert!(same(&ab, &ba, false), "a multiset, reals within tolerance");
    assert!(!same(&ab, &ba, true), "ordered: the order counts");
    assert!(!same(
        &rows(&[&[Val::Int(1), Val::Null]]),
        &rows(&[&[Val::Real(1.0), Val::Null]]),
        false
    ));
    assert!(!same(&ab, &rows(&[&one]), false));
    assert!(!same(&ab, &rows(&[&one, &one]), false));
    assert!(same(
        &Answer::Error("x".into()),
        &Answer::Error("y".into()),
        true
    ));
    assert!(!same(&Answer::Error("x".into()), &ab, false));
    let renamed = Answer::Rows {
        columns: vec!["c".into(), "e".into()],
        rows: vec![one.to_vec(), two.to_vec()],
    };
    assert!(!same(&ab, &renamed, false));
}

fn seed() -> u64 {
    match std::env::var("PAXSQL_DIFF_SEED") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("PAXSQL_DIFF_SEED={s}: {e}")),
        Err(_) => rand::rng().random(),
    }
}

fn query_count() -> usize {
    match std::env::var("PAXSQL_DIFF_QUERIES") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("PAXSQL_DIFF_QUERIES={s}: {e}")),
        Err(_) => 300,
    }
}

/// A value as both sides can give it.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Val {
    fn from_json(v: &Value) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Real(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Val::Text(s.clone()),
            other => Val::Text(other.to_string()),
        }
    }

    fn from_sqlite(v: ValueRef<'_>) -> Val {
        match v {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(i) => Val::Int(i),
            ValueRef::Real(f) => Val::Real(f),
            ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Val::Text(format!("blob {b:?}")),
        }
    }

    fn same(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::Real(a), Val::Real(b)) => {
                a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
            (a, b) => a == b,
        }
    }

    /// An order for sorting rows into a multiset: by type, then value
    /// (reals rounded, so rows differing within the tolerance sort alike).
    fn rank(&self) -> (u8, i64, String) {
        match self {
            Val::Null => (0, 0, String::new()),
            Val::Int(i) => (1, *i, String::new()),
            Val::Real(f) => (2, 0, format!("{f:.6e}")),
            Val::Text(s) => (3, 0, s.clone()),
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Null => write!(f, "NULL"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Real(r) => write!(f, "{r:?}"),
            Val::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// What a query answered.
#[derive(Clone, Debug)]
enum Answer {
    Rows {
        columns: Vec<String>,
        rows: Vec<Vec<Val>>,
    },
    Error(String),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW_ROWS: usize = 30;
        match self {
            Answer::Error(e) => write!(f, "error: {e}"),
            Answer::Rows { columns, rows } => {
                write!(f, "{} rows, columns {columns:?}", rows.len())?;
                for r in rows.iter().take(SHOW_ROWS) {
                    let vals: Vec<String> = r.iter().map(Val::to_string).collect();
                    write!(f, "\n    {}", vals.join(" | "))?;
                }
                if rows.len() > SHOW_ROWS {
                    write!(f, "\n    ...")?;
                }
                Ok(())
            }
        }
    }
}

fn compare_rows(a: &[Val], b: &[Val]) -> Ordering {
    a.iter()
        .map(Val::rank)
        .cmp(b.iter().map(Val::rank))
        .then(a.len().cmp(&b.len()))
}

/// Whether two answers agree (see the module docs).
fn same(a: &Answer, b: &Answer, ordered: bool) -> bool {
    match (a, b) {
        (Answer::Error(_), Answer::Error(_)) => true,
        (
            Answer::Rows {
                columns: ca,
                rows: ra,
            },
            Answer::Rows {
                columns: cb,
                rows: rb,
            },
        ) => {
            if ca != cb || ra.len() != rb.len() {
                return false;
            }
            let (mut ra, mut rb) = (ra.clone(), rb.clone());
            if !ordered {
                ra.sort_by(|x, y| compare_rows(x, y));
                rb.sort_by(|x, y| compare_rows(x, y));
            }
            ra.iter()
                .zip(&rb)
                .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(u, v)| u.same(v)))
        }
        _ => false,
    }
}

/// A generated read, and whether its ORDER BY is total (its rows' order
/// is then part of the answer).
#[derive(Clone, Debug)]
struct Query {
    sql: String,
    ordered: bool,
}

/// The cluster, the local SQLite, and what the comparison found.
struct Diff {
    cluster: Cluster,
    local: Connection,
    next_node: u64,
    compared: usize,
    both_failed: usize,
    writes: usize,
    mismatches: Vec<String>,
}

impl Diff {
    fn start() -> Diff {
        let groups = GROUPS.to_string();
        let cluster = Cluster::start_with(3, &["--groups", &groups]);
        cluster.wait_groups_led(GROUPS as usize + 1);
        Diff {
            cluster,
            local: Connection::open_in_memory().unwrap(),
            next_node: 0,
            compared: 0,
            both_failed: 0,
            writes: 0,
            mismatches: Vec::new(),
        }
    }

    /// The node the next request goes to.
    fn node(&mut self) -> u64 {
        self.next_node += 1;
        self.next_node % self.cluster.nodes.len() as u64 + 1
    }

    /// Splits a table and spreads its ranges from `first_group` on.
    fn spread(&mut self, table: &str, keys: &[i64], first_group: u64) {
        let via = self.node();
        let ranges = self
            .cluster
            .spread_table(via, table, keys, GROUPS, first_group);
        assert_eq!(ranges.len(), keys.len() + 1, "{table}: {ranges:?}");
    }

    /// Every group holds rows of `a`, and the ranges count every row.
    fn check_spread(&mut self) {
        for (table, splits) in [("a", A_SPLITS.len()), ("b", B_SPLITS.len())] {
            let via = self.node();
            let ranges = self.cluster.table_ranges(via, table);
            assert_eq!(ranges.len(), splits + 1, "{table}: {ranges:?}");
            assert!(ranges.iter().all(|r| r.rows > 0), "{table}: {ranges:?}");
            let counted: i64 = ranges.iter().map(|r| r.rows).sum();
            let local: i64 = self
                .local
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(counted, local, "{table}: {ranges:?}");
        }
    }

    /// Loads schema or rows: one request to the cluster (each statement on
    /// its own locally); panics on an error on either side or differing
    /// rows-affected counts.
    fn load(&mut self, sqls: &[String]) {
        let via = self.node();
        let body = self.cluster.execute_retrying(via, json!(sqls));
        let results = body["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), sqls.len(), "{body}");
        for (sql, result) in sqls.iter().zip(&results) {
            let changed = self
                .local
                .execute(sql, [])
                .unwrap_or_else(|e| panic!("local SQLite: {sql}: {e}"));
            if let Some(affected) = result.get("rows_affected").and_then(Value::as_u64) {
                assert_eq!(
                    affected, changed as u64,
                    "rows affected by {sql}: cluster (at node {via}) vs SQLite"
                );
            }
        }
    }

    /// One generated write (before query `i`) on both sides: both must
    /// take it, affecting as many rows. One the cluster refuses is a
    /// mismatch, and is not applied locally either, so that the comparison
    /// can go on.
    fn write(&mut self, i: usize, sql: &str) {
        let via = self.node();
        self.writes += 1;
        let theirs = match self
            .cluster
            .post(via, "/db/execute", &json!([sql]).to_string())
        {
            Ok((200, body)) => match &body["results"][0] {
                r if r.get("error").is_some() => Err(r["error"].to_string()),
                r => Ok(r["rows_affected"].as_u64().unwrap_or(0)),
            },
            Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
            Err(e) => Err(format!("request failed: {e}")),
        };
        let theirs = match theirs {
            Ok(n) => n,
            Err(e) => {
                self.mismatches.push(format!(
                    "write before query {i}: {sql}\n  cluster (node {via}) refused it: {e}\n  \
                     SQLite takes it (not applied there either)"
                ));
                return;
            }
        };
        match self.local.execute(sql, []) {
            Ok(ours) if ours as u64 == theirs => {}
            Ok(ours) => self.mismatches.push(format!(
                "write before query {i}: {sql}\n  cluster (node {via}): {theirs} rows affected\n  \
                 SQLite: {ours} rows affected"
            )),
            Err(e) => self.mismatches.push(format!(
                "write before query {i}: {sql}\n  cluster (node {via}) took it ({theirs} rows)\n  \
                 SQLite: {e}"
            )),
        }
    }

    fn compare(&mut self, i: usize, q: &Query) {
        let via = self.node();
        let theirs = self.cluster_answer(via, &q.sql);
        let ours = local_answer(&self.local, &q.sql);
        self.compared += 1;
        if let (Answer::Error(_), Answer::Error(_)) = (&theirs, &ours) {
            self.both_failed += 1;
        }
        if !same(&theirs, &ours, q.ordered) {
            self.mismatches.push(format!(
                "query {i} ({}): {}\n  cluster (node {via}): {theirs}\n  SQLite: {ours}",
                match q.ordered {
                    true => "ordered",
                    false => "as a multiset",
                },
                q.sql
            ));
        }
    }

    /// A linearizable read at node `via`, retried while the node answers
    /// 503 (a group electing, the map moving).
    fn cluster_answer(&self, via: u64, sql: &str) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let outcome = self.cluster.query(via, sql, "linearizable");
            match outcome {
                Ok((200, body)) => {
                    let r = &body["results"][0];
                    if let Some(e) = r.get("error") {
                        return Answer::Error(e.to_string());
                    }
                    let columns = r["columns"]
                        .as_array()
                        .map(|c| {
                            c.iter()
                                .map(|c| c.as_str().unwrap_or_default().to_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    let rows = r["values"]
                        .as_array()
                        .map(|rows| {
                            rows.iter()
                                .map(|row| {
                                    row.as_array()
                                        .map(|vs| vs.iter().map(Val::from_json).collect())
                                        .unwrap_or_default()
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    return Answer::Rows { columns, rows };
                }
                Ok((503, _)) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok((code, body)) => return Answer::Error(format!("HTTP {code}: {body}")),
                Err(e) => return Answer::Error(format!("request failed: {e}")),
            }
        }
    }
}

fn local_answer(conn: &Connection, sql: &str) -> Answer {
    let run = || -> rusqlite::Result<Answer> {
        let mut stmt = conn.prepare(sql)?;
        let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let width = columns.len();
        let mut rows = Vec::new();
        let mut cursor = stmt.query([])?;
        while let Some(row) = cursor.next()? {
            let vals = (0..width)
                .map(|i| row.get_ref(i).map(Val::from_sqlite))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.push(vals);
        }
        Ok(Answer::Rows { columns, rows })
    };
    run().unwrap_or_else(|e| Answer::Error(e.to_string()))
}

/// `n` distinct keys from 1..=max, in random order.
fn sample_keys(rng: &mut StdRng, max: i64, n: usize) -> Vec<i64> {
    let mut keys: Vec<i64> = (1..=max).collect();
    keys.shuffle(rng);
    keys.truncate(n);
    keys
}

/// Every key ever inserted into `a` and into `b` (deleted ones too, so
/// a key picked outside them is surely free).
#[derive(Debug, Default)]
struct Keys {
    a: BTreeSet<i64>,
    b: BTreeSet<i64>,
}

impl Keys {
    /// A key never used in `table`, in the range of `table` starting at
    /// `bound` (`None`: the first).
    fn fresh(&mut self, rng: &mut StdRng, table: &str, bound: Option<usize>) -> i64 {
        let (used, splits, max) = match table {
            "a" => (&mut self.a, &A_SPLITS[..], A_KEYS),
            _ => (&mut self.b, &B_SPLITS[..], B_KEYS),
        };
        let (lo, hi) = match bound {
            None => (1, splits[0]),
            Some(i) => (splits[i], splits.get(i + 1).copied().unwrap_or(max + 100)),
        };
        let free: Vec<i64> = (lo..hi).filter(|k| !used.contains(k)).collect();
        let k = match free.choose(rng) {
            Some(&k) => k,
            None => used.last().copied().unwrap_or(0).max(max) + 1,
        };
        used.insert(k);
        k
    }
}

fn maybe_null(rng: &mut StdRng, p_null: f64, value: String) -> String {
    match rng.random_bool(p_null) {
        true => "NULL".to_owned(),
        false => value,
    }
}

fn word(rng: &mut StdRng) -> &'static str {
    WORDS.choose(rng).expect("words")
}

/// An INSERT of one row of `a` per key.
fn insert_a(rng: &mut StdRng, ids: &[i64]) -> String {
    let rows: Vec<String> = ids
        .iter()
        .map(|id| {
            let g = rng.random_range(0..8).to_string();
            let x = format!("{:.2}", rng.random_range(-100.0..100.0));
            let s = format!("'{}'", word(rng));
            format!(
                "({id}, {}, {}, {})",
                maybe_null(rng, 0.15, g),
                maybe_null(rng, 0.15, x),
                maybe_null(rng, 0.15, s)
            )
        })
        .collect();
    format!("INSERT INTO a(id, g, x, s) VALUES {}", rows.join(", "))
}

/// An INSERT of one row of `b` per key.
fn insert_b(rng: &mut StdRng, ids: &[i64], a_keys: &[i64]) -> String {
    let rows: Vec<String> = ids
        .iter()
        .map(|id| {
            let a_id = match rng.random_range(0..10) {
                0 => "NULL".to_owned(),
                1 | 2 => rng.random_range(1..=A_KEYS + 50).to_string(),
                _ => a_keys.choose(rng).expect("keys of a").to_string(),
            };
            let y = rng.random_range(-50..=50).to_string();
            format!("({id}, {a_id}, {})", maybe_null(rng, 0.1, y))
        })
        .collect();
    format!("INSERT INTO b(id, a_id, y) VALUES {}", rows.join(", "))
}

/// INSERTs of two to four rows, one each, each in another range of its
/// table (so on at least two groups): the rows' keys choose the groups.
fn insert_spanning(rng: &mut StdRng, keys: &mut Keys) -> Vec<String> {
    let table = *["a", "b"].choose(rng).expect("tables");
    let splits = match table {
        "a" => A_SPLITS.len(),
        _ => B_SPLITS.len(),
    };
    let mut ranges: Vec<Option<usize>> =
        std::iter::once(None).chain((0..splits).map(Some)).collect();
    ranges.shuffle(rng);
    ranges.truncate(rng.random_range(2..=ranges.len().min(4)));
    let ids: Vec<i64> = ranges
        .into_iter()
        .map(|r| keys.fresh(rng, table, r))
        .collect();
    let a_keys: Vec<i64> = keys.a.iter().copied().collect();
    ids.iter()
        .map(|id| match table {
            "a" => insert_a(rng, &[*id]),
            _ => insert_b(rng, &[*id], &a_keys),
        })
        .collect()
}

/// A key of `a` or `b`: often near a range bound, sometimes outside every
/// key in use.
fn key(rng: &mut StdRng) -> i64 {
    let bounds: Vec<i64> = A_SPLITS.iter().chain(&B_SPLITS).copied().collect();
    match rng.random_range(0..4) {
        0 => bounds.choose(rng).expect("bounds") + rng.random_range(-2..=2),
        1 => rng.random_range(-5..=5),
        _ => rng.random_range(1..=B_KEYS + 20),
    }
}

/// `lo <= hi`, a span of keys that often crosses a range bound.
fn key_span(rng: &mut StdRng) -> (i64, i64) {
    let lo = key(rng);
    (lo, lo + rng.random_range(0..160))
}

fn key_list(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..=6);
    (0..n)
        .map(|_| key(rng).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ways the key can be written in a point lookup: an integer, text
/// and a real that SQLite's affinity turns into it, or a real that is no
/// key at all.
fn key_literal(rng: &mut StdRng) -> String {
    let k = key(rng);
    match rng.random_range(0..6) {
        0 => format!("'{k}'"),
        1 => format!("{k}.0"),
        2 => format!("{k}.5"),
        _ => k.to_string(),
    }
}

fn small(rng: &mut StdRng) -> i64 {
    rng.random_range(-50..=50)
}

fn g(rng: &mut StdRng) -> i64 {
    rng.random_range(0..8)
}

/// One random read (see the module docs for what is covered).
fn gen_query(rng: &mut StdRng) -> Query {
    let ordered = |sql: String| Query { sql, ordered: true };
    let unordered = |sql: String| Query {
        sql,
        ordered: false,
    };
    let (lo, hi) = key_span(rng);
    let (k, v, gv, n, m) = (
        key_literal(rng),
        small(rng),
        g(rng),
        rng.random_range(1..20),
        rng.random_range(0..30),
    );
    let w = word(rng);
    let list = key_list(rng);
    let table = *["a", "b"].choose(rng).expect("tables");
    match rng.random_range(0..43) {
        // Lookups by key.
        0 => unordered(format!("SELECT * FROM {table} WHERE id = {k}")),
        1 => ordered(format!(
            "SELECT * FROM {table} WHERE id BETWEEN {lo} AND {hi} ORDER BY id"
        )),
        2 => unordered(format!("SELECT id, s, x FROM a WHERE id IN ({list})")),
        3 => unordered(format!(
            "SELECT * FROM b WHERE id >= {lo} AND id < {hi} AND y > {v}"
        )),
        4 => unordered(format!(
            "SELECT id, g FROM a WHERE id > {lo} OR id = {k} OR g = {gv}"
        )),
        5 => ordered(format!(
            "SELECT * FROM {table} WHERE id < {lo} OR id > {hi} ORDER BY id DESC LIMIT {n}"
        )),
        6 => unordered(format!(
            "SELECT rowid, * FROM {table} WHERE rowid BETWEEN {lo} AND {hi}"
        )),
        7 => unordered(format!(
            "SELECT count(*), sum(id) FROM {table} WHERE id NOT IN ({list})"
        )),
        // Filters on other columns.
        8 => unordered(format!(
            "SELECT id, x FROM a WHERE g = {gv} AND (x > {v} OR x IS NULL)"
        )),
        9 => unordered(format!(
            "SELECT id, g, s FROM a WHERE s = '{w}' OR s IS NULL"
        )),
        10 => unordered(format!(
            "SELECT id, a_id FROM b WHERE y BETWEEN {v} AND {v} + 10"
        )),
        11 => unordered(format!(
            "SELECT id, coalesce(s, 'none') || '-' || g, x * 2, \
             CASE WHEN x > 0 THEN 'p' WHEN x < 0 THEN 'n' END FROM a WHERE id % 7 = {}",
            m % 7
        )),
        // ORDER BY with LIMIT/OFFSET, always total.
        12 => ordered(format!(
            "SELECT id, g, s FROM a WHERE g >= {gv} ORDER BY s DESC, id LIMIT {n} OFFSET {m}"
        )),
        13 => ordered(format!(
            "SELECT id, x FROM a ORDER BY x, id DESC LIMIT {n} OFFSET {m}"
        )),
        14 => ordered(format!(
            "SELECT y, id FROM b WHERE a_id IS NOT NULL ORDER BY y DESC, id LIMIT {n}"
        )),
        // Aggregates.
        15 => unordered(format!(
            "SELECT count(*), count(x), sum(g), min(x), max(s), avg(x), total(x) \
             FROM a WHERE id BETWEEN {lo} AND {hi}"
        )),
        16 => unordered(
            "SELECT count(*), count(DISTINCT a_id), sum(y), min(y), max(y), avg(y) FROM b".into(),
        ),
        17 => ordered(format!(
            "SELECT g, count(*), sum(x), min(s), max(id) FROM a \
             GROUP BY g HAVING count(*) > {} ORDER BY g",
            n
        )),
        18 => unordered(format!(
            "SELECT s, count(*), avg(g), group_concat(id, ',' ORDER BY id) FROM a \
             WHERE id > {lo} GROUP BY s"
        )),
        19 => unordered(
            "SELECT a_id, count(*), sum(y), length(group_concat(y)) FROM b \
             GROUP BY a_id HAVING sum(y) > 0"
                .into(),
        ),
        20 => unordered(format!("SELECT DISTINCT g, s FROM a WHERE id < {hi}")),
        21 => unordered("SELECT count(DISTINCT s), count(DISTINCT g) FROM a".into()),
        // Joins.
        22 => unordered(format!(
            "SELECT a.id, a.s, b.id, b.y FROM a JOIN b ON b.a_id = a.id WHERE a.g = {gv}"
        )),
        23 => ordered(format!(
            "SELECT b.id, a.id, a.x FROM b JOIN a ON a.id = b.a_id \
             WHERE b.y > {v} ORDER BY b.id LIMIT {n} OFFSET {m}"
        )),
        24 => ordered(format!(
            "SELECT a.id, count(b.id), sum(b.y) FROM a LEFT JOIN b ON b.a_id = a.id \
             WHERE a.id BETWEEN {lo} AND {hi} GROUP BY a.id ORDER BY a.id"
        )),
        25 => unordered(format!(
            "SELECT b.id, a.s FROM b LEFT JOIN a ON a.id = b.a_id WHERE b.id BETWEEN {lo} AND {hi}"
        )),
        26 => unordered(format!(
            "SELECT x1.id, x2.id FROM a AS x1 JOIN a AS x2 ON x1.g = x2.g AND x1.id < x2.id \
             WHERE x1.id BETWEEN {lo} AND {lo} + 30 AND x2.s = '{w}'"
        )),
        // Subqueries.
        27 => unordered(format!(
            "SELECT id, g FROM a WHERE id IN (SELECT a_id FROM b WHERE y > {v})"
        )),
        28 => unordered(format!(
            "SELECT id, (SELECT count(*) FROM b WHERE b.a_id = a.id) AS nb FROM a WHERE g = {gv}"
        )),
        29 => unordered(format!(
            "SELECT id FROM a WHERE {} EXISTS (SELECT 1 FROM b WHERE b.a_id = a.id AND b.y < {v})",
            ["", "NOT"].choose(rng).expect("not")
        )),
        30 => unordered(format!(
            "SELECT * FROM b WHERE a_id NOT IN (SELECT id FROM a WHERE g = {gv})"
        )),
        31 => unordered("SELECT id, x FROM a WHERE x > (SELECT avg(x) FROM a)".into()),
        32 => unordered(format!(
            "WITH t AS (SELECT a_id, sum(y) AS sy FROM b GROUP BY a_id) \
             SELECT a.id, t.sy FROM a JOIN t ON t.a_id = a.id WHERE a.g = {gv}"
        )),
        // Window functions.
        33 => unordered(format!(
            "SELECT id, row_number() OVER (ORDER BY id) FROM a WHERE g = {gv}"
        )),
        34 => unordered("SELECT id, g, sum(x) OVER (PARTITION BY g ORDER BY id) FROM a".into()),
        35 => unordered(format!(
            "SELECT id, y, lag(y) OVER (ORDER BY id), rank() OVER (PARTITION BY a_id ORDER BY y) \
             FROM b WHERE id BETWEEN {lo} AND {hi}"
        )),
        // Compound selects.
        36 => unordered(format!(
            "SELECT g FROM a WHERE id < {hi} UNION SELECT y FROM b WHERE id > {lo}"
        )),
        37 => unordered("SELECT a_id FROM b EXCEPT SELECT id FROM a".into()),
        38 => unordered(format!(
            "SELECT id FROM a INTERSECT SELECT a_id FROM b WHERE y < {v}"
        )),
        // The view over both tables.
        39 => unordered(format!(
            "SELECT g, count(*), sum(y) FROM ab WHERE bid > {lo} GROUP BY g"
        )),
        40 => unordered(format!("SELECT * FROM ab WHERE aid = {k}")),
        41 => ordered(format!(
            "SELECT bid, aid, y FROM ab WHERE y < {v} ORDER BY bid LIMIT {n}"
        )),
        _ => ordered(format!(
            "SELECT id, s FROM a WHERE id < {hi} UNION ALL SELECT id, CAST(y AS TEXT) FROM b \
             WHERE id < {hi} ORDER BY 1, 2 LIMIT {n}"
        )),
    }
}

/// One random write: by key, by key range, by other columns, or a new row.
fn gen_write(rng: &mut StdRng, keys: &mut Keys) -> String {
    let (lo, hi) = key_span(rng);
    let (k, v, gv) = (key(rng), small(rng), g(rng));
    let w = word(rng);
    match rng.random_range(0..10) {
        0 => format!("UPDATE a SET x = x + 1.25, s = '{w}' WHERE id = {k}"),
        1 => format!("UPDATE a SET s = '{w}' WHERE g = {gv}"),
        2 => format!("UPDATE b SET y = y - 3 WHERE id BETWEEN {lo} AND {hi}"),
        3 => format!("DELETE FROM b WHERE id = {k}"),
        4 => format!("DELETE FROM a WHERE s IS NULL AND g = {gv}"),
        5 => format!("UPDATE b SET a_id = NULL WHERE y > {}", 40 + v.abs() % 10),
        6 => format!(
            "DELETE FROM b WHERE y < {} AND id > {lo}",
            -45 + v.abs() % 5
        ),
        7 => {
            let bound = rng.random_range(0..=A_SPLITS.len());
            let id = keys.fresh(rng, "a", bound.checked_sub(1));
            insert_a(rng, &[id])
        }
        8 => {
            let bound = rng.random_range(0..=B_SPLITS.len());
            let id = keys.fresh(rng, "b", bound.checked_sub(1));
            let a_keys: Vec<i64> = keys.a.iter().copied().collect();
            insert_b(rng, &[id], &a_keys)
        }
        _ => format!("UPDATE a SET g = g + 1 WHERE id IN ({})", key_list(rng)),
    }
}
