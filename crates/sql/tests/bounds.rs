//! Bounded work in the SQLite engine: the statement budget stops a runaway
//! statement applied from the log the same way on every replica, and
//! readers stop a read at its deadline and a result at its byte bound.

use paxsql_sql::{settings, ReadLimits, SqlEngine, SqliteEngine, SqliteOptions};
use paxsql_types::{
    ApplyEnv, Entry, LogIndex, Params, Proposal, RequestId, Statement, StmtResult, Value,
    WriteRequest,
};
use std::time::{Duration, Instant};

const RUNAWAY_UPDATE: &str = "UPDATE t SET a = (WITH RECURSIVE c(x) AS \
    (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c)";
const RUNAWAY_SELECT: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

fn stmt(sql: &str) -> Statement {
    Statement {
        sql: sql.into(),
        params: Params::None,
    }
}

fn write(id: &str, sqls: &[&str], transaction: bool) -> Proposal {
    Proposal::Write(WriteRequest {
        id: RequestId(id.into()),
        stmts: sqls.iter().map(|s| stmt(s)).collect(),
        transaction,
        env: ApplyEnv {
            unix_ms: 1_700_000_000_000,
            seed: 7,
        },
    })
}

fn open(dir: &tempfile::TempDir, name: &str) -> SqliteEngine {
    SqliteEngine::open(&dir.path().join(name), SqliteOptions::default()).unwrap()
}

fn results(applied: &[paxsql_sql::Applied]) -> Vec<Vec<StmtResult>> {
    applied
        .iter()
        .filter_map(|a| match a {
            paxsql_sql::Applied::Write { results, .. } => Some(results.clone()),
            _ => None,
        })
        .collect()
}

fn apply_all(e: &mut SqliteEngine, entries: &[Entry]) -> Vec<Vec<Vec<StmtResult>>> {
    entries
        .iter()
        .map(|entry| {
            let index = e.applied_index();
            results(&e.apply(index, entry).unwrap())
        })
        .collect()
}

fn is_budget_error(r: &StmtResult) -> bool {
    matches!(r, StmtResult::Error(m) if m.starts_with("statement budget exceeded")
        && m.contains("SET PAXSQL STATEMENT_BUDGET"))
}

fn count(e: &mut SqliteEngine, sql: &str) -> i64 {
    match &e.query(&[stmt(sql)])[0] {
        StmtResult::Rows { values, .. } => match values[0][0] {
            Value::Integer(n) => n,
            ref v => panic!("{v:?}"),
        },
        r => panic!("{r:?}"),
    }
}

/// The runaway UPDATE of the bug report, in one entry between two good
/// writes: it fails with the budget error, the others keep their effects,
/// the entry is applied once, and two replicas end identical.
#[test]
fn a_runaway_write_fails_alone_and_identically_on_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let entries = vec![
        Entry {
            proposals: vec![
                write(
                    "setup",
                    &["CREATE TABLE t (id INTEGER PRIMARY KEY, a INT)"],
                    false,
                ),
                write("budget", &["SET PAXSQL STATEMENT_BUDGET = 2000000"], false),
            ],
        },
        Entry {
            proposals: vec![
                write("before", &["INSERT INTO t (a) VALUES (1)"], false),
                write(
                    "runaway",
                    &[
                        "INSERT INTO t (a) VALUES (2)",
                        RUNAWAY_UPDATE,
                        "INSERT INTO t (a) VALUES (3)",
                    ],
                    false,
                ),
                write(
                    "tx",
                    &["INSERT INTO t (a) VALUES (4)", RUNAWAY_UPDATE],
                    true,
                ),
                write("after", &["INSERT INTO t (a) VALUES (5)"], false),
            ],
        },
    ];
    let mut one = open(&dir, "one.db");
    let mut two = open(&dir, "two.db");
    let r1 = apply_all(&mut one, &entries);
    let r2 = apply_all(&mut two, &entries);
    assert_eq!(r1, r2, "replicas answered differently");
    let second = &r1[1];
    assert!(matches!(second[0][0], StmtResult::Exec { .. }));
    assert!(matches!(second[1][0], StmtResult::Exec { .. }));
    assert!(is_budget_error(&second[1][1]), "{:?}", second[1][1]);
    assert!(matches!(second[1][2], StmtResult::Exec { .. }));
    assert!(is_budget_error(&second[2][1]), "{:?}", second[2][1]);
    assert!(matches!(second[3][0], StmtResult::Exec { .. }));
    // 1, 2, 3 and 5; the transaction's 4 is rolled back.
    assert_eq!(count(&mut one, "SELECT count(*) FROM t"), 4);
    assert_eq!(count(&mut one, "SELECT sum(a) FROM t"), 11);
    assert_eq!(one.applied_index(), LogIndex(2));
    assert_eq!(one.state_hash().unwrap(), two.state_hash().unwrap());

    // The budget is replicated state: it survives a reopen.
    drop(one);
    let mut one = open(&dir, "one.db");
    assert_eq!(one.statement_budget(), Some(2_000_000));
    match &one.query(&[stmt("SHOW PAXSQL STATEMENT_BUDGET")])[0] {
        StmtResult::Rows { values, .. } => assert_eq!(values[0][0], Value::Integer(2_000_000)),
        r => panic!("{r:?}"),
    }
}

/// A statement within the budget runs; a larger budget lets a heavier one
/// through, and a budget set in a failed transaction is not kept.
#[test]
fn the_budget_is_changed_only_by_what_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, "b.db");
    assert_eq!(
        e.statement_budget(),
        Some(settings::STATEMENT_BUDGET_DEFAULT)
    );
    let heavy = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 200000) \
                 SELECT count(*) FROM c";
    let r = apply_all(
        &mut e,
        &[Entry {
            proposals: vec![
                write("small", &["SET PAXSQL STATEMENT_BUDGET = 100000"], false),
                write("heavy1", &[heavy], false),
                write(
                    "failed",
                    &[
                        "SET PAXSQL STATEMENT_BUDGET = 100000000",
                        "SELECT * FROM missing",
                    ],
                    true,
                ),
                write("heavy2", &[heavy], false),
                write("large", &["SET PAXSQL STATEMENT_BUDGET = 100000000"], false),
                write("heavy3", &[heavy], false),
            ],
        }],
    );
    assert!(is_budget_error(&r[0][1][0]), "{:?}", r[0][1][0]);
    assert!(is_budget_error(&r[0][3][0]), "{:?}", r[0][3][0]);
    assert!(
        matches!(r[0][5][0], StmtResult::Rows { .. }),
        "{:?}",
        r[0][5][0]
    );
    assert_eq!(e.statement_budget(), Some(100_000_000));
}

/// Many runaway statements in one entry: each fails, the entry is applied,
/// and the work stays within a budget per runaway (a few attempts).
#[test]
fn an_entry_of_runaways_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, "many.db");
    let mut proposals = vec![
        write(
            "setup",
            &["CREATE TABLE t (id INTEGER PRIMARY KEY, a INT)"],
            false,
        ),
        write("budget", &["SET PAXSQL STATEMENT_BUDGET = 100000"], false),
    ];
    for i in 0..20 {
        proposals.push(write(
            &format!("ok{i}"),
            &["INSERT INTO t (a) VALUES (1)"],
            false,
        ));
        proposals.push(write(&format!("bad{i}"), &[RUNAWAY_UPDATE], false));
    }
    let r = apply_all(&mut e, &[Entry { proposals }]);
    let bad = r[0]
        .iter()
        .filter(|rs| rs.iter().any(is_budget_error))
        .count();
    assert_eq!(bad, 20);
    assert_eq!(count(&mut e, "SELECT count(*) FROM t"), 20);
}

fn read_rows(e: &SqliteEngine, limits: ReadLimits, sql: &str, timeout: Duration) -> StmtResult {
    let mut reader = e.reader(limits).unwrap();
    let (_, mut results) = reader.query(&[stmt(sql)], timeout).unwrap();
    results.remove(0)
}

#[test]
fn a_reader_stops_a_runaway_read_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, "r.db");
    let started = Instant::now();
    let r = read_rows(
        &e,
        ReadLimits::default(),
        RUNAWAY_SELECT,
        Duration::from_millis(200),
    );
    match r {
        StmtResult::Error(m) => assert!(m.starts_with("read timeout"), "{m}"),
        r => panic!("{r:?}"),
    }
    // Far below "forever"; the bound itself is the deadline.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_reader_refuses_results_above_its_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(&dir, "big.db");
    let limits = ReadLimits {
        rows_max: 1_000_000,
        bytes_max: 1 << 20,
    };
    for sql in [
        "SELECT zeroblob(400000000)",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c LIMIT 10000) \
         SELECT x, zeroblob(1000) FROM c",
    ] {
        match read_rows(&e, limits, sql, Duration::from_secs(10)) {
            StmtResult::Error(m) => assert!(m.starts_with("result too large"), "{sql}: {m}"),
            r => panic!("{sql}: {r:?}"),
        }
    }
    match read_rows(&e, limits, "SELECT zeroblob(1000)", Duration::from_secs(10)) {
        StmtResult::Rows { values, .. } => assert_eq!(values.len(), 1),
        r => panic!("{r:?}"),
    }
}

/// A reader reports the applied index of the state it read, and sees what
/// was applied before it began.
#[test]
fn a_reader_sees_the_applied_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = open(&dir, "s.db");
    apply_all(
        &mut e,
        &[Entry {
            proposals: vec![write(
                "w",
                &["CREATE TABLE t (a)", "INSERT INTO t VALUES (42)"],
                false,
            )],
        }],
    );
    let mut reader = e.reader(ReadLimits::default()).unwrap();
    let (index, results) = reader
        .query(
            &[
                stmt("SELECT a FROM t"),
                stmt("SHOW PAXSQL STATEMENT_BUDGET"),
            ],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(index, LogIndex(1));
    match &results[0] {
        StmtResult::Rows { values, .. } => assert_eq!(values, &vec![vec![Value::Integer(42)]]),
        r => panic!("{r:?}"),
    }
    // A write through a reader is refused by the connection.
    let (_, r) = reader
        .query(&[stmt("INSERT INTO t VALUES (1)")], Duration::from_secs(5))
        .unwrap();
    assert!(matches!(&r[0], StmtResult::Error(_)), "{r:?}");
}
