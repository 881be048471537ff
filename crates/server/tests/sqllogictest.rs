//! SQL correctness through the whole path: SQLite's sqllogictest scripts
//! `select1.test` … `select5.test` (in the repository's `testdata/sqllogictest`)
//! run against a real 3-node cluster over the HTTP API.
//!
//! Each script gets its own fresh cluster (so a failure in one file cannot
//! poison another, and any one script can run alone). Every `statement`
//! record is a write through `POST /db/execute`, every `query` record a read
//! through `POST /db/query?level=linearizable`; requests go round-robin over
//! the three nodes, so writes also enter at followers and reads are served
//! by followers too. By default each record is its own request; with
//! `PAXSQL_SLT_BATCH=N` up to N consecutive `statement ok` records go in one
//! `/db/execute` request, each statement's own result still checked and
//! blamed on its own record (unbatched, all five scripts take about 25 s on
//! two cores, so batching is only an option). Results are formatted
//! as SQLite's reference harness does, by the column types the record
//! declares (`I` as `%lld`, `R` as `%.3f`, `T` as text with `(empty)` for
//! the empty string; NULL as `NULL`), then sorted and hashed by the
//! `sqllogictest` crate's runner (`rowsort`, `valuesort`, hash threshold).
//! The engine label is `sqlite`, for `skipif`/`onlyif`.
//!
//! At the end of each script, after every node has converged, the schema and
//! the rows of every user table are read at `level=local` from each of the
//! three nodes and must equal what a linearizable read returns: the replicas
//! stayed identical.
//!
//! Each test prints how many records passed and how long it took. Run one
//! script with `cargo test -p paxsql --test sqllogictest select1`; add
//! `-- --nocapture` to see the summary. `PAXSQL_SLT_DIR` overrides where the
//! scripts are read from.

mod common;

use common::Cluster;
use serde_json::{json, Value};
use sqllogictest::{
    parse_with_name, Condition, DBOutput, DefaultColumnType, Normalizer, QueryExpect, Record,
    RecordOutput, Runner, StatementExpect, DB,
};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The label `skipif`/`onlyif` conditions are evaluated against.
const ENGINE: &str = "sqlite";

/// How many failing records a test prints in full.
const SHOW_FAILURES: usize = 20;

#[test]
fn select1_results_match_sqlite_and_replicas_agree() {
    run_script("select1");
}

#[test]
fn select2_results_match_sqlite_and_replicas_agree() {
    run_script("select2");
}

#[test]
fn select3_results_match_sqlite_and_replicas_agree() {
    run_script("select3");
}

#[test]
fn select4_results_match_sqlite_and_replicas_agree() {
    run_script("select4");
}

#[test]
fn select5_results_match_sqlite_and_replicas_agree() {
    run_script("select5");
}

/// The adapter prints values as SQLite's reference harness does, which is
/// what the expected results in the scripts were made with.
#[test]
fn values_are_formatted_like_sqlites_harness() {
    use DefaultColumnType::{FloatingPoint as R, Integer as I, Text as T};
    let cases = [
        (json!(null), I, "NULL"),
        (json!(null), T, "NULL"),
        (json!(-42), I, "-42"),
        (json!(2.7), I, "2"),
        (json!("12abc"), I, "12"),
        (json!("abc"), I, "0"),
        (json!(1.5), R, "1.500"),
        (json!(7), R, "7.000"),
        (json!(-0.0005), R, "-0.001"),
        (json!(""), T, "(empty)"),
        (json!("a b\tc"), T, "a b@c"),
        (json!(3.0), T, "3.0"),
        (json!(1.8333333333333333), T, "1.83333333333333"),
        (json!(1e20), T, "1.0e+20"),
        (json!(12), T, "12"),
    ];
    for (value, ty, want) in cases {
        assert_eq!(format_value(&value, Some(&ty)), want, "{value} as {ty:?}");
    }
}

/// Where the scripts live: `testdata/sqllogictest` in the repository.
fn script_dir() -> std::path::PathBuf {
    match std::env::var_os("PAXSQL_SLT_DIR") {
        Some(dir) => dir.into(),
        None => {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sqllogictest")
        }
    }
}

fn batch_limit() -> usize {
    std::env::var("PAXSQL_SLT_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

#[derive(Default)]
struct Tally {
    statements: usize,
    queries: usize,
    skipped: usize,
    failures: Vec<String>,
}

impl Tally {
    fn passed(&self) -> usize {
        (self.statements + self.queries).saturating_sub(self.failures.len())
    }
}

/// Runs one script against a fresh 3-node cluster, then checks the replicas.
fn run_script(name: &str) {
    let path = script_dir().join(format!("{name}.test"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (set PAXSQL_SLT_DIR)", path.display()));
    let records = parse_with_name::<DefaultColumnType>(&strip_condition_comments(&text), name)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));

    let started = Instant::now();
    let cluster = Cluster::start(3);
    let db = HttpDb::new(&cluster);
    let boot = started.elapsed();

    let conn = db.clone();
    let mut runner = Runner::new(move || std::future::ready(Ok::<_, SltError>(conn.clone())));
    runner.add_label(ENGINE);
    runner.with_hash_threshold(8);
    runner.with_validator(value_per_line_validator);
    runner.with_column_validator(|actual, expected| actual.len() == expected.len());

    let limit = batch_limit();
    let mut tally = Tally::default();
    let mut batch: Vec<(String, String)> = Vec::new();
    for record in records {
        match &record {
            Record::Statement {
                conditions,
                sql,
                expected: StatementExpect::Ok,
                loc,
                ..
            } if limit > 1 && !is_skipped(conditions) => {
                batch.push((loc.to_string(), sql.clone()));
                if batch.len() >= limit {
                    db.execute_batch(&mut batch, &mut tally);
                }
                continue;
            }
            Record::Halt { .. } => break,
            Record::Include { loc, .. } => panic!("{loc}: include is not supported"),
            _ => {}
        }
        db.execute_batch(&mut batch, &mut tally);
        let (mode, counted) = match &record {
            Record::Statement { .. } => (Mode::Execute, Some(&mut tally.statements)),
            Record::Query {
                expected: QueryExpect::Results { types, .. },
                ..
            } => (Mode::Query(types.clone()), Some(&mut tally.queries)),
            Record::Query { .. } => (Mode::Query(Vec::new()), Some(&mut tally.queries)),
            _ => (Mode::Execute, None),
        };
        *db.shared.mode.lock().unwrap() = mode;
        let outcome = runner.run(record);
        if let Some(counter) = counted {
            match outcome {
                Ok(RecordOutput::Nothing) => tally.skipped += 1,
                Ok(_) => *counter += 1,
                Err(e) => {
                    *counter += 1;
                    tally.failures.push(e.display(false).to_string());
                }
            }
        } else if let Err(e) = outcome {
            tally.failures.push(e.display(false).to_string());
        }
    }
    db.execute_batch(&mut batch, &mut tally);
    let ran = started.elapsed();
    for f in tally.failures.iter().take(SHOW_FAILURES) {
        eprintln!("{f}\n");
    }

    let replicas = check_replicas(&cluster);
    let total = tally.statements + tally.queries;
    println!(
        "{name}: {} of {total} records passed ({} statements in {} write requests, \
         {} queries), {} skipped; {} failed; cluster start {:.1}s, script {:.1}s; {replicas}",
        tally.passed(),
        tally.statements,
        db.shared.writes.load(Ordering::Relaxed),
        tally.queries,
        tally.skipped,
        tally.failures.len(),
        boot.as_secs_f64(),
        (ran - boot).as_secs_f64(),
    );
    if !tally.failures.is_empty() {
        panic!(
            "{name}: {} of {total} records failed (first {} shown above)",
            tally.failures.len(),
            tally.failures.len().min(SHOW_FAILURES)
        );
    }
}

/// `# comments` after `skipif`/`onlyif` confuse the parser: drop them.
fn strip_condition_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = if line.starts_with("skipif") || line.starts_with("onlyif") {
            line.split('#').next().unwrap_or_default().trim_end()
        } else {
            line
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn is_skipped(conditions: &[Condition]) -> bool {
    conditions.iter().any(|c| match c {
        Condition::OnlyIf { label } => label != ENGINE,
        Condition::SkipIf { label } => label == ENGINE,
    })
}

/// SQLite's scripts list one value per line; the runner produces rows.
fn value_per_line_validator(
    normalizer: Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    let actual = actual.iter().flatten().map(normalizer);
    let expected = expected.iter().map(normalizer);
    actual.eq(expected)
}

/// What the next record sent through the runner is: a write, or a read with
/// the column types its record declares.
#[derive(Debug)]
enum Mode {
    Execute,
    Query(Vec<DefaultColumnType>),
}

#[derive(Debug)]
struct Shared {
    client: reqwest::blocking::Client,
    nodes: Vec<String>,
    next: AtomicUsize,
    /// `/db/execute` requests sent.
    writes: AtomicUsize,
    mode: Mutex<Mode>,
}

/// The cluster as a sqllogictest database: every call goes to the next node.
#[derive(Debug, Clone)]
struct HttpDb {
    shared: Arc<Shared>,
}

#[derive(Debug)]
enum SltError {
    /// The statement's own error, as the engine reported it.
    Statement(String),
    /// The request as a whole failed (transport, non-200, malformed body).
    Request(String),
}

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SltError::Statement(e) => write!(f, "{e}"),
            SltError::Request(e) => write!(f, "request failed: {e}"),
        }
    }
}

impl std::error::Error for SltError {}

impl HttpDb {
    fn new(cluster: &Cluster) -> HttpDb {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        HttpDb {
            shared: Arc::new(Shared {
                client,
                nodes: cluster.nodes.iter().map(|n| n.http.clone()).collect(),
                next: AtomicUsize::new(0),
                writes: AtomicUsize::new(0),
                mode: Mutex::new(Mode::Execute),
            }),
        }
    }

    /// Posts `body` to the next node round-robin; the `results` of a 200.
    fn post(&self, path: &str, body: &Value) -> Result<Vec<Value>, SltError> {
        let s = &self.shared;
        let node = &s.nodes[s.next.fetch_add(1, Ordering::Relaxed) % s.nodes.len()];
        let url = format!("http://{node}{path}");
        if path.starts_with("/db/execute") {
            s.writes.fetch_add(1, Ordering::Relaxed);
        }
        let response = s
            .client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .map_err(|e| SltError::Request(format!("{url}: {e}")))?;
        let code = response.status().as_u16();
        let text = response
            .text()
            .map_err(|e| SltError::Request(format!("{url}: {e}")))?;
        if code != 200 {
            return Err(SltError::Request(format!("{url}: HTTP {code}: {text}")));
        }
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| SltError::Request(format!("{url}: {e}: {text}")))?;
        match body.get("results").and_then(Value::as_array) {
            Some(results) => Ok(results.clone()),
            None => Err(SltError::Request(format!("{url}: no results: {text}"))),
        }
    }

    /// One statement's result, or its error.
    fn single(&self, path: &str, sql: &str) -> Result<Value, SltError> {
        let mut results = self.post(path, &json!([sql]))?;
        if results.len() != 1 {
            return Err(SltError::Request(format!(
                "{} results for one statement",
                results.len()
            )));
        }
        let result = results.pop().unwrap();
        match result.get("error") {
            Some(e) => Err(SltError::Statement(
                e.as_str().map_or_else(|| e.to_string(), str::to_owned),
            )),
            None => Ok(result),
        }
    }

    /// Sends the pending `statement ok` records as one write; each statement
    /// that failed is a failure of its own record.
    fn execute_batch(&self, batch: &mut Vec<(String, String)>, tally: &mut Tally) {
        if batch.is_empty() {
            return;
        }
        tally.statements += batch.len();
        let body = Value::Array(batch.iter().map(|(_, sql)| json!(sql)).collect());
        match self.post("/db/execute", &body) {
            Ok(results) if results.len() == batch.len() => {
                for ((loc, sql), result) in batch.iter().zip(&results) {
                    if let Some(e) = result.get("error") {
                        tally
                            .failures
                            .push(format!("{loc}: statement failed: {e}\n[SQL] {sql}"));
                    }
                }
            }
            Ok(results) => tally.failures.push(format!(
                "{}: {} results for {} statements",
                batch[0].0,
                results.len(),
                batch.len()
            )),
            Err(e) => {
                for (loc, sql) in batch.iter() {
                    tally.failures.push(format!("{loc}: {e}\n[SQL] {sql}"));
                }
            }
        }
        batch.clear();
    }
}

impl DB for HttpDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let expected_types = match &*self.shared.mode.lock().unwrap() {
            Mode::Execute => None,
            Mode::Query(types) => Some(types.clone()),
        };
        let Some(expected_types) = expected_types else {
            let result = self.single("/db/execute", sql)?;
            let affected = result.get("rows_affected").and_then(Value::as_u64);
            return Ok(DBOutput::StatementComplete(affected.unwrap_or(0)));
        };
        let result = self.single("/db/query?level=linearizable", sql)?;
        let rows = result
            .get("values")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let width = match result.get("columns").and_then(Value::as_array) {
            Some(columns) => columns.len(),
            None => rows
                .first()
                .and_then(Value::as_array)
                .map_or(expected_types.len(), Vec::len),
        };
        let types: Vec<DefaultColumnType> = (0..width)
            .map(|i| {
                expected_types
                    .get(i)
                    .cloned()
                    .unwrap_or(DefaultColumnType::Any)
            })
            .collect();
        let rows = rows
            .iter()
            .map(|row| {
                let row = row.as_array().map(Vec::as_slice).unwrap_or_default();
                row.iter()
                    .enumerate()
                    .map(|(i, v)| format_value(v, types.get(i)))
                    .collect()
            })
            .collect();
        Ok(DBOutput::Rows { types, rows })
    }

    fn engine_name(&self) -> &str {
        ENGINE
    }
}

/// A value as SQLite's sqllogictest harness prints it for a column type:
/// `I` is `sqlite3_column_int64` as `%lld`, `R` is `sqlite3_column_double`
/// as `%.3f`, `T` is the text with `(empty)` for "" and bytes outside
/// printable ASCII as `@`; NULL is `NULL` whatever the type.
fn format_value(v: &Value, ty: Option<&DefaultColumnType>) -> String {
    if v.is_null() {
        return "NULL".to_owned();
    }
    match ty {
        Some(DefaultColumnType::Integer) => as_i64(v).to_string(),
        Some(DefaultColumnType::FloatingPoint) => format!("{:.3}", as_f64(v)),
        _ => {
            let text = as_text(v);
            if text.is_empty() {
                "(empty)".to_owned()
            } else {
                text.chars()
                    .map(|c| if (' '..='~').contains(&c) { c } else { '@' })
                    .collect()
            }
        }
    }
}

fn as_i64(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n
            .as_i64()
            .unwrap_or_else(|| n.as_f64().unwrap_or_default() as i64),
        Value::String(s) => leading_integer(s),
        Value::Bool(b) => i64::from(*b),
        _ => 0,
    }
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or_default(),
        Value::String(s) => leading_real(s),
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => 0.0,
    }
}

/// Text of a value as SQLite renders it (a real with `%!.15g`).
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => real_text(n.as_f64().unwrap_or_default()),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// SQLite's `%!.15g`: 15 significant digits, and always a `.0` when integral.
fn real_text(x: f64) -> String {
    if x == 0.0 {
        return "0.0".to_owned();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".to_owned()
        } else if x > 0.0 {
            "Inf".to_owned()
        } else {
            "-Inf".to_owned()
        };
    }
    let sci = format!("{x:.14e}");
    let (mantissa, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    if (-4..15).contains(&exp) {
        let decimals = (14 - exp).max(0) as usize;
        let fixed = format!("{x:.decimals$}");
        let fixed = fixed.trim_end_matches('0');
        if fixed.ends_with('.') {
            format!("{fixed}0")
        } else {
            fixed.to_owned()
        }
    } else {
        let mantissa = mantissa.trim_end_matches('0');
        let mantissa = if mantissa.ends_with('.') {
            format!("{mantissa}0")
        } else {
            mantissa.to_owned()
        };
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// `sqlite3_column_int64` of text: the leading integer, 0 if none.
fn leading_integer(s: &str) -> i64 {
    let s = s.trim_start();
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+'))))
        .map_or(s.len(), |(i, _)| i);
    s[..end]
        .parse::<i128>()
        .map_or(0, |n| n.clamp(i64::MIN.into(), i64::MAX.into()) as i64)
}

/// `sqlite3_column_double` of text: the longest leading real, 0.0 if none.
fn leading_real(s: &str) -> f64 {
    let s = s.trim_start();
    (1..=s.len())
        .rev()
        .filter(|&i| s.is_char_boundary(i))
        .find_map(|i| s[..i].parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The schema and the rows of every user table (sorted, so order of
/// storage does not matter) as node `id` returns them at `level`.
fn replica_contents(cluster: &Cluster, id: u64, level: &str) -> Result<Vec<String>, String> {
    let schema_sql = "SELECT type, name, tbl_name, sql FROM sqlite_master \
                      WHERE substr(tbl_name, 1, 8) <> '_paxsql_' ORDER BY type, name";
    let schema = read(cluster, id, level, &[schema_sql.to_owned()])?.remove(0);
    let tables: Vec<String> = schema
        .iter()
        .filter(|row| row[0] == "table")
        .map(|row| row[1].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut contents: Vec<String> = schema.iter().map(Value::to_string).collect();
    if tables.is_empty() {
        return Ok(contents);
    }
    let selects: Vec<String> = tables
        .iter()
        .map(|t| format!("SELECT * FROM \"{}\"", t.replace('"', "\"\"")))
        .collect();
    for (table, rows) in tables.iter().zip(read(cluster, id, level, &selects)?) {
        let mut rows: Vec<String> = rows.iter().map(Value::to_string).collect();
        rows.sort();
        contents.push(format!("table {table}: {} rows", rows.len()));
        contents.extend(rows);
    }
    Ok(contents)
}

/// The rows of each statement of one read request.
fn read(
    cluster: &Cluster,
    id: u64,
    level: &str,
    sqls: &[String],
) -> Result<Vec<Vec<Value>>, String> {
    let (code, body) = cluster.post(
        id,
        &format!("/db/query?level={level}"),
        &json!(sqls).to_string(),
    )?;
    if code != 200 {
        return Err(format!("HTTP {code}: {body}"));
    }
    let results = body["results"].as_array().cloned().unwrap_or_default();
    if results.len() != sqls.len() {
        return Err(format!(
            "{} results for {} reads: {body}",
            results.len(),
            sqls.len()
        ));
    }
    results
        .iter()
        .map(|r| match r.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(r
                .get("values")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()),
        })
        .collect()
}

/// Waits until every node's local replica equals a linearizable read of
/// the whole database; panics naming the first difference if one never does.
/// Returns a summary with the contents' hash.
fn check_replicas(cluster: &Cluster) -> String {
    let want = replica_contents(cluster, 1, "linearizable")
        .unwrap_or_else(|e| panic!("linearizable read of every table: {e}"));
    for id in 1..=cluster.nodes.len() as u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = replica_contents(cluster, id, "local");
            if got.as_ref() == Ok(&want) {
                break;
            }
            if Instant::now() > deadline {
                let got = got.unwrap_or_else(|e| panic!("node {id}: local read: {e}"));
                let first = got.iter().zip(&want).position(|(g, w)| g != w);
                panic!(
                    "node {id}'s replica differs from the linearizable state: {} lines vs {}; \
                     first difference at line {first:?}: {:?} vs {:?}",
                    got.len(),
                    want.len(),
                    first.map(|i| &got[i]),
                    first.map(|i| &want[i]),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut hasher = DefaultHasher::new();
    want.hash(&mut hasher);
    let tables = want.iter().filter(|l| l.starts_with("table ")).count();
    format!(
        "{} replicas identical ({tables} tables, {} lines, hash {:016x})",
        cluster.nodes.len(),
        want.len(),
        hasher.finish()
    )
}
