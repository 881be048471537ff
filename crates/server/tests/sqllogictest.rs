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
//! The `*_over_groups_*` tests run the same scripts, with the same expected
//! results, against a 3-node cluster with three data groups (`--groups 3`).
//! Right after a `CREATE TABLE` record succeeds, before any row goes in, the
//! harness splits the table and relocates its ranges so that, in key order,
//! they lie on consecutive data groups (each table starting one group
//! further than the one before). What can be split is chosen so that no
//! answer can change ([`Spreader::plan`]):
//!
//! - select5's 64 tables have an `INTEGER PRIMARY KEY`: each is split at
//!   the thirds of its keys into three ranges, one per group;
//! - select1..3's `t1` has none, but its inserts all name their columns and
//!   no query selects `*`: the table gets `_k INTEGER PRIMARY KEY` as its
//!   first column, each insert `_k` = 1, 2, ... (the rowid the row would
//!   have had), and it is split into three ranges;
//! - select4's nine tables have no key, their inserts give no column list
//!   and its queries use `SELECT *`: a key column would show, so each table
//!   stays one range and the tables are spread over the groups instead
//!   (three per group), which makes every join and compound select of two
//!   of them cross groups.
//!
//! Nearly every query then reads several groups and is gathered. On a
//! sharded cluster a schema change must come alone, so with
//! `PAXSQL_SLT_BATCH` `CREATE`/`DROP`/`ALTER` records are never batched
//! there. On two cores the sharded runs take about 20 s (select1, select2),
//! 60 s (select3), 80-140 s (select4) and 40-60 s (select5).
//!
//! Each test prints how many records passed and how long it took. Run one
//! script with `cargo test -p paxsql --test sqllogictest select1_results`
//! (`select1_over_groups` for the sharded run, `over_groups` for all five);
//! add `-- --nocapture` to see the summary. `PAXSQL_SLT_DIR` overrides where the
//! scripts are read from.

mod common;

use common::Cluster;
use serde_json::{json, Value};
use sqllogictest::{
    parse_with_name, Condition, DBOutput, DefaultColumnType, Normalizer, QueryExpect, Record,
    RecordOutput, Runner, StatementExpect, DB,
};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
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

#[test]
fn select1_over_groups_matches_sqlite() {
    run_script_over_groups("select1");
}

#[test]
fn select2_over_groups_matches_sqlite() {
    run_script_over_groups("select2");
}

#[test]
fn select3_over_groups_matches_sqlite() {
    run_script_over_groups("select3");
}

#[test]
fn select4_over_groups_matches_sqlite() {
    run_script_over_groups("select4");
}

#[test]
fn select5_over_groups_matches_sqlite() {
    run_script_over_groups("select5");
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

/// The sharded variant keys select1..3's table (inserts name their columns,
/// no query selects `*`), keeps select4's whole (`SELECT *`, inserts
/// without column lists) and splits select5's by their own keys.
#[test]
fn over_groups_plans_keys_only_where_results_cannot_change() {
    let dir = script_dir();
    let read =
        |name: &str| strip_condition_comments(&std::fs::read_to_string(dir.join(name)).unwrap());
    for (script, star) in [
        ("select1.test", false),
        ("select2.test", false),
        ("select3.test", false),
        ("select4.test", true),
        ("select5.test", false),
    ] {
        assert_eq!(selects_star(&read(script)), star, "{script}");
    }
    assert!(!selects_star("SELECT count(*), a*2, (b * c) FROM t1"));
    assert!(selects_star("SELECT x.* FROM t1 AS x"));
    assert!(selects_star("SELECT DISTINCT * FROM t1"));

    let text = "statement ok\nCREATE TABLE t1(a INTEGER, b INTEGER)\n\n\
                statement ok\nINSERT INTO t1(b,a) VALUES(2,'x(y')\n\n\
                statement ok\nINSERT INTO t1(a,b) VALUES(3,4)\n\n\
                query I nosort\nSELECT a FROM t1\n----\n3\nx(y\n";
    let mut records = parse_with_name::<DefaultColumnType>(text, "t").unwrap();
    let plan = Spreader::plan(&mut records, text);
    let sqls: Vec<&str> = records
        .iter()
        .filter_map(|r| match r {
            Record::Statement { sql, .. } => Some(sql.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sqls,
        [
            "CREATE TABLE t1(_k INTEGER PRIMARY KEY, a INTEGER, b INTEGER)",
            "INSERT INTO t1(_k, b,a) VALUES(1, 2,'x(y')",
            "INSERT INTO t1(_k, a,b) VALUES(2, 3,4)",
        ]
    );
    assert_eq!(plan.splits["t1"], [2]);
    assert_eq!(split_keys(30), [11, 21]);
    assert_eq!(split_keys(10), [4, 7]);
    assert!(!keyable_insert("INSERT INTO t1(a) VALUES(1),(2)"));
    assert!(!keyable_insert("INSERT INTO t1 VALUES(1)"));
    assert_eq!(
        created_table("CREATE TABLE IF NOT EXISTS T9 (a)").as_deref(),
        Some("t9")
    );
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

/// How a script's cluster is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// One group: every node holds every table whole.
    OneGroup,
    /// `--groups 3`: tables keyed, split and spread over the data groups
    /// (see [`Spreader`]).
    OverGroups,
}

/// The data groups of a [`Layout::OverGroups`] cluster.
const DATA_GROUPS: u64 = 3;

/// Runs one script against a fresh 3-node cluster, then checks the replicas.
fn run_script(name: &str) {
    run(name, Layout::OneGroup);
}

/// Runs one script against a fresh 3-node cluster with three data groups,
/// every table spread over them as it is created.
fn run_script_over_groups(name: &str) {
    run(name, Layout::OverGroups);
}

fn run(name: &str, layout: Layout) {
    let path = script_dir().join(format!("{name}.test"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e} (set PAXSQL_SLT_DIR)", path.display()));
    let text = strip_condition_comments(&text);
    let mut records = parse_with_name::<DefaultColumnType>(&text, name)
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let mut spreader = match layout {
        Layout::OneGroup => None,
        Layout::OverGroups => Some(Spreader::plan(&mut records, &text)),
    };

    let started = Instant::now();
    let cluster = match layout {
        Layout::OneGroup => Cluster::start(3),
        Layout::OverGroups => {
            let groups = DATA_GROUPS.to_string();
            let c = Cluster::start_with(3, &["--groups", &groups]);
            c.wait_groups_led(DATA_GROUPS as usize + 1);
            c
        }
    };
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
            // A sharded cluster takes a schema change only in a request of
            // its own, and spreads a table right after creating it.
            Record::Statement {
                conditions,
                sql,
                expected: StatementExpect::Ok,
                loc,
                ..
            } if limit > 1
                && !is_skipped(conditions)
                && !(layout == Layout::OverGroups && is_schema_change(sql)) =>
            {
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
        let created = match &record {
            Record::Statement { sql, .. } => created_table(sql),
            _ => None,
        };
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
        if let (Some(spreader), Some(table), Ok(RecordOutput::Statement { .. })) =
            (&mut spreader, &created, &outcome)
        {
            spreader.spread(&cluster, table);
        }
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

    let layout_summary = match &spreader {
        Some(s) => format!("; {}", s.summary(&cluster)),
        None => String::new(),
    };
    let replicas = check_replicas(&cluster);
    let total = tally.statements + tally.queries;
    println!(
        "{name}: {} of {total} records passed ({} statements in {} write requests, \
         {} queries), {} skipped; {} failed; cluster start {:.1}s, script {:.1}s; \
         {replicas}{layout_summary}",
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

/// How a script's tables are laid out over the data groups: the sharded
/// variant's plan, made from the whole script before it runs.
///
/// A table is spread right after its `CREATE TABLE` succeeds, before any
/// row goes in, so inserts are routed by key too. Its ranges go, in key
/// order, to consecutive data groups, each table starting one group further
/// than the one before, so a table of one range still differs in group from
/// its neighbours.
#[derive(Debug, Default)]
struct Spreader {
    /// Split keys by table (lower case); none: the table stays one range.
    splits: HashMap<String, Vec<i64>>,
    /// Tables keyed by the script itself (an `INTEGER PRIMARY KEY`).
    own_key: usize,
    /// Tables given a key column `_k` here (see [`Spreader::plan`]).
    given_key: usize,
    /// Tables that cannot be keyed: spread whole.
    whole: usize,
    /// Tables spread so far.
    spread: u64,
    /// Time spent splitting and relocating.
    spent: Duration,
}

/// The key column the sharded variant adds.
const ADDED_KEY: &str = "_k";

impl Spreader {
    /// Decides, per `CREATE TABLE` of the script, how the table is split,
    /// and rewrites the records that need it:
    ///
    /// - a table with an `INTEGER PRIMARY KEY` is split as it is, assuming
    ///   the script's rows have keys 1..=n (select5's do);
    /// - a table without one gets `_k INTEGER PRIMARY KEY` as its first
    ///   column, and each of its `INSERT`s `_k` = 1, 2, ... in script order
    ///   (the rowid it would have had, so even rowid order is kept) — only
    ///   if every insert names its columns and has one row, and no query of
    ///   the script selects `*` (where `_k` would show);
    /// - any other table stays one range, spread whole.
    fn plan(records: &mut [Record<DefaultColumnType>], text: &str) -> Spreader {
        let star = selects_star(text);
        let mut plan = Spreader::default();
        for i in 0..records.len() {
            let Record::Statement { sql, .. } = &records[i] else {
                continue;
            };
            let Some(table) = created_table(sql) else {
                continue;
            };
            let own_key = sql.to_ascii_uppercase().contains("INTEGER PRIMARY KEY");
            let inserts: Vec<(usize, bool)> = records
                .iter()
                .enumerate()
                .skip(i + 1)
                .filter_map(|(j, r)| match r {
                    Record::Statement { sql, .. } => insert_target(sql)
                        .filter(|(t, _)| *t == table)
                        .map(|_| (j, keyable_insert(sql))),
                    _ => None,
                })
                .collect();
            let keys = split_keys(inserts.len());
            if own_key {
                plan.own_key += 1;
            } else if !star && inserts.iter().all(|&(_, keyable)| keyable) {
                plan.given_key += 1;
                add_key_column(&mut records[i]);
                for (k, &(j, _)) in inserts.iter().enumerate() {
                    add_key_value(&mut records[j], k as i64 + 1);
                }
            } else {
                plan.whole += 1;
                plan.splits.insert(table, Vec::new());
                continue;
            }
            plan.splits.insert(table, keys);
        }
        plan
    }

    /// Splits and relocates a table just created.
    fn spread(&mut self, cluster: &Cluster, table: &str) {
        let started = Instant::now();
        let keys = self.splits.get(table).cloned().unwrap_or_default();
        let first_group = self.spread % DATA_GROUPS + 1;
        let via = self.spread % cluster.nodes.len() as u64 + 1;
        cluster.spread_table(via, table, &keys, DATA_GROUPS, first_group);
        self.spread += 1;
        self.spent += started.elapsed();
    }

    /// The layout as `SHOW RANGES` has it at the end; panics unless every
    /// data group holds rows.
    fn summary(&self, cluster: &Cluster) -> String {
        let ranges = cluster.rows(1, "SHOW RANGES", "linearizable");
        let mut rows_by_group: BTreeMap<u64, i64> = (1..=DATA_GROUPS).map(|g| (g, 0)).collect();
        for r in &ranges {
            let group = r[4].as_u64().expect("group_id");
            *rows_by_group.entry(group).or_default() += r[7].as_i64().expect("rows");
        }
        assert!(
            rows_by_group.values().all(|&n| n > 0),
            "every data group should hold rows: {rows_by_group:?}"
        );
        format!(
            "{} tables spread in {:.1}s ({} keyed by the script, {} given {ADDED_KEY}, {} whole), \
             {} ranges, rows per group {rows_by_group:?}",
            self.spread,
            self.spent.as_secs_f64(),
            self.own_key,
            self.given_key,
            self.whole,
            ranges.len(),
        )
    }
}

/// Keys that cut 1..=n into three ranges of about n/3 rows.
fn split_keys(n: usize) -> Vec<i64> {
    let mut keys: Vec<i64> = (1..DATA_GROUPS as usize)
        .map(|k| 1 + (k * n / DATA_GROUPS as usize) as i64)
        .filter(|&k| k > 1)
        .collect();
    keys.dedup();
    keys
}

/// The table a `CREATE TABLE` makes (lower case).
fn created_table(sql: &str) -> Option<String> {
    let rest = strip_keywords(sql, &["CREATE", "TABLE"])?;
    let rest = strip_keywords(rest, &["IF", "NOT", "EXISTS"]).unwrap_or(rest);
    let name = leading_name(rest)?;
    Some(name.to_ascii_lowercase())
}

/// Whether a statement changes the schema (a sharded cluster wants it alone).
fn is_schema_change(sql: &str) -> bool {
    ["CREATE", "DROP", "ALTER"]
        .iter()
        .any(|k| strip_keywords(sql, &[k]).is_some())
}

/// The table an `INSERT INTO` writes (lower case), and whether it lists
/// its columns.
fn insert_target(sql: &str) -> Option<(String, bool)> {
    let rest = strip_keywords(sql, &["INSERT", "INTO"])?;
    let name = leading_name(rest)?;
    let after = rest[name.len()..].trim_start();
    Some((name.to_ascii_lowercase(), after.starts_with('(')))
}

/// Whether an insert can be given a key value: it lists its columns and
/// has one `VALUES` row.
fn keyable_insert(sql: &str) -> bool {
    let Some((_, true)) = insert_target(sql) else {
        return false;
    };
    let Some(open) = values_tuple(sql) else {
        return false;
    };
    closing_paren(sql, open).is_some_and(|close| {
        sql[close + 1..]
            .trim()
            .trim_end_matches(';')
            .trim()
            .is_empty()
    })
}

fn add_key_column(record: &mut Record<DefaultColumnType>) {
    if let Record::Statement { sql, .. } = record {
        let open = sql.find('(').expect("CREATE TABLE has a column list");
        sql.insert_str(open + 1, &format!("{ADDED_KEY} INTEGER PRIMARY KEY, "));
    }
}

fn add_key_value(record: &mut Record<DefaultColumnType>, key: i64) {
    if let Record::Statement { sql, .. } = record {
        let values = values_tuple(sql).expect("a keyable insert");
        sql.insert_str(values + 1, &format!("{key}, "));
        let columns = sql.find('(').expect("a keyable insert lists its columns");
        sql.insert_str(columns + 1, &format!("{ADDED_KEY}, "));
    }
}

/// Where the `(` of an insert's `VALUES (...)` is.
fn values_tuple(sql: &str) -> Option<usize> {
    let at = sql.to_ascii_uppercase().find("VALUES")?;
    let open = at + 6 + sql[at + 6..].find('(')?;
    sql[at + 6..open].trim().is_empty().then_some(open)
}

/// The `)` that closes the `(` at `open`, skipping quoted text.
fn closing_paren(sql: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in sql.char_indices().skip_while(|&(i, _)| i < open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `sql` after the given keywords (case-insensitive, whitespace between),
/// if it starts with them.
fn strip_keywords<'a>(sql: &'a str, keywords: &[&str]) -> Option<&'a str> {
    let mut rest = sql.trim_start();
    for k in keywords {
        let head = rest.get(..k.len())?;
        let next = rest[k.len()..].chars().next();
        if !head.eq_ignore_ascii_case(k) || next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return None;
        }
        rest = rest[k.len()..].trim_start();
    }
    Some(rest)
}

/// The identifier `sql` starts with (unquoted).
fn leading_name(sql: &str) -> Option<&str> {
    let end = sql
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(sql.len());
    (end > 0).then(|| &sql[..end])
}

/// Whether any statement selects `*` or `t.*` (not `count(*)`, not a
/// product): after `SELECT`, `ALL`, `DISTINCT`, a comma, or a dot.
fn selects_star(text: &str) -> bool {
    text.match_indices('*').any(|(at, _)| {
        let before = text[..at].trim_end();
        if before.ends_with(['.', ',']) {
            return true;
        }
        let word_start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let word = &before[word_start..];
        ["SELECT", "ALL", "DISTINCT"]
            .iter()
            .any(|k| word.eq_ignore_ascii_case(k))
    })
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
