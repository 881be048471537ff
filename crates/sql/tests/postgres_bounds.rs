//! Bounded work on the PostgreSQL engine, against a real server: readers
//! (time limit, byte and row bounds, the applied index, reconnecting), the
//! replicated statement budget, the dry run that admits writes, and the
//! backstop that stops a replica rather than record a timeout.
//!
//! Needs `PAXSQL_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the tests fail without
//! it, they never skip. Every database they create is dropped at the end.

use paxsql_sql::{
    database_name, settings, Applied, EngineError, PostgresAdmission, PostgresEngine,
    PostgresOptions, ReadLimits, Refused, SqlEngine, SqlReader,
};
use paxsql_types::{
    ApplyEnv, Entry, LogIndex, Params, Proposal, RequestId, Statement, StmtResult, Value,
    WriteRequest,
};
use std::time::{Duration, Instant};

const RUNAWAY_SELECT: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";
const RUNAWAY_UPDATE: &str = "UPDATE t SET a = (WITH RECURSIVE c(x) AS \
    (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c)";

fn postgres_url() -> String {
    std::env::var("PAXSQL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The databases of one test, `paxsql_pgb_<pid>_<n>_<name>_1_g0`, dropped
/// when it ends (also when it fails).
struct Databases {
    prefix: String,
    made: std::sync::Mutex<Vec<String>>,
}

impl Databases {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Databases {
            prefix: format!("pgb_{}_{n}", std::process::id()),
            made: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn name(&self, name: &str) -> String {
        database_name(&format!("{}_{name}", self.prefix), 1, 0)
    }

    fn open(&self, name: &str) -> PostgresEngine {
        let db = self.name(name);
        let mut made = self.made.lock().unwrap();
        if !made.contains(&db) {
            made.push(db.clone());
        }
        PostgresEngine::open(PostgresOptions::new(postgres_url(), db)).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is needed for these tests (run scripts/postgres-ready): {e}",
                postgres_url()
            )
        })
    }

    fn admission(&self, name: &str) -> PostgresAdmission {
        PostgresAdmission::start(
            &postgres_url(),
            &self.name(name),
            Duration::from_secs(5),
            2,
            64,
        )
        .unwrap()
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        for db in std::mem::take(&mut *self.made.lock().unwrap()) {
            if let Err(e) = PostgresEngine::drop_database(&postgres_url(), &db) {
                eprintln!("leaving test database {db}: {e}");
            }
        }
    }
}

/// A plain connection, as an outsider (or an operator) would open one.
struct Outsider {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Outsider {
    fn to(database: Option<&str>) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
        if let Some(db) = database {
            config.dbname(db);
        }
        let client = rt.block_on(async {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        });
        Outsider { rt, client }
    }

    fn run(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    fn count(&self, sql: &str, db: &str) -> i64 {
        self.rt
            .block_on(self.client.query_one(sql, &[&db]))
            .unwrap()
            .get(0)
    }
}

fn write(id: &str, sqls: &[&str], transaction: bool) -> Proposal {
    Proposal::Write(WriteRequest {
        id: RequestId(id.into()),
        stmts: sqls.iter().map(|s| Statement::new(*s)).collect(),
        transaction,
        env: ApplyEnv {
            unix_ms: 1_700_000_000_000,
            seed: 7,
        },
    })
}

fn apply(e: &mut PostgresEngine, proposals: Vec<Proposal>) -> Result<Vec<Applied>, EngineError> {
    let index = e.applied_index();
    e.apply(index, &Entry { proposals })
}

/// Applies one write and returns its results.
fn apply_one(e: &mut PostgresEngine, id: &str, sqls: &[&str]) -> Vec<StmtResult> {
    match apply(e, vec![write(id, sqls, false)]).unwrap().remove(0) {
        Applied::Write { results, .. } => results,
        other => panic!("{other:?}"),
    }
}

fn stmts(sqls: &[&str]) -> Vec<Statement> {
    sqls.iter().map(|s| Statement::new(*s)).collect()
}

fn values(r: &StmtResult) -> &[Vec<Value>] {
    match r {
        StmtResult::Rows { values, .. } => values,
        other => panic!("{other:?}"),
    }
}

fn error(r: &StmtResult) -> &str {
    match r {
        StmtResult::Error(e) => e,
        other => panic!("not an error: {other:?}"),
    }
}

/// A table `t` with three rows, and a budget of 5 million steps (50 ms on
/// PostgreSQL), so that dry runs of runaways end quickly.
fn with_table(e: &mut PostgresEngine) {
    let r = apply_one(
        e,
        "setup",
        &[
            "CREATE TABLE t (id serial PRIMARY KEY, a int)",
            "INSERT INTO t (a) VALUES (1), (2), (3)",
            "SET PAXSQL STATEMENT_BUDGET = 5000000",
        ],
    );
    assert!(
        r.iter().all(|r| !matches!(r, StmtResult::Error(_))),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------
// Readers

#[test]
fn a_reader_stops_a_runaway_read_at_its_deadline() {
    let dbs = Databases::new();
    let e = dbs.open("a");
    let mut reader = e.reader(ReadLimits::default()).unwrap();
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let (_, r) = reader.query(&stmts(&[RUNAWAY_SELECT]), limit).unwrap();
    let took = started.elapsed();
    assert_eq!(error(&r[0]), settings::read_timed_out(limit));
    assert!(
        took >= limit && took < limit + Duration::from_secs(2),
        "{took:?}"
    );
    // The reader goes on serving.
    let (_, r) = reader
        .query(&stmts(&["SELECT 1 AS one"]), Duration::from_secs(5))
        .unwrap();
    assert_eq!(values(&r[0]), [vec![Value::Integer(1)]]);
}

#[test]
fn a_reader_refuses_results_above_its_byte_and_row_bounds() {
    let dbs = Databases::new();
    let e = dbs.open("a");
    let limits = ReadLimits {
        rows_max: 20_000,
        bytes_max: 1 << 20,
    };
    let mut reader = e.reader(limits).unwrap();
    let ask = |reader: &mut Box<dyn SqlReader>, sql: &str| {
        let (_, mut r) = reader
            .query(&stmts(&[sql]), Duration::from_secs(20))
            .unwrap();
        r.remove(0)
    };
    let too_large = settings::result_too_large(1 << 20);
    // 100 MB in 100,000 rows of 1 kB: refused after about one chunk.
    let started = Instant::now();
    let r = ask(
        &mut reader,
        "SELECT g, repeat('x', 1000) FROM generate_series(1, 100000) g",
    );
    assert_eq!(error(&r), too_large);
    eprintln!("a 100 MB result refused after {:?}", started.elapsed());
    // One value of 10 MB.
    assert_eq!(
        error(&ask(&mut reader, "SELECT repeat('x', 10000000)")),
        too_large
    );
    // More rows than the bound.
    let r = ask(&mut reader, "SELECT g FROM generate_series(1, 50000) g");
    assert!(error(&r).starts_with("ERROR 54000: result has more than 20000 rows"));
    // Exactly the bound, over several chunks, in order.
    let r = ask(&mut reader, "SELECT g FROM generate_series(1, 20000) g");
    let got = values(&r);
    assert_eq!(got.len(), 20_000);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, row)| row[0] == Value::Integer(i as i64 + 1)));
    // Errors in a later chunk are the statement's answer.
    let r = ask(
        &mut reader,
        "SELECT 1 / (5000 - g) FROM generate_series(1, 10000) g",
    );
    assert_eq!(error(&r), "ERROR 22012: division by zero");
    assert_eq!(
        values(&ask(&mut reader, "SELECT 2")),
        [vec![Value::Integer(2)]]
    );
}

#[test]
fn a_reader_reports_the_applied_index_of_what_it_read() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    let mut reader = e.reader(ReadLimits::default()).unwrap();
    let (index, _) = reader
        .query(&stmts(&["SELECT 1"]), Duration::from_secs(5))
        .unwrap();
    assert_eq!(index, LogIndex(0));
    with_table(&mut e);
    apply_one(&mut e, "more", &["INSERT INTO t (a) VALUES (4)"]);
    let (index, r) = reader
        .query(
            &stmts(&["SELECT count(*) FROM t", "SELECT max(a) FROM t"]),
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(index, e.applied_index());
    assert_eq!(index, LogIndex(2));
    assert_eq!(values(&r[0]), [vec![Value::Integer(4)]]);
    assert_eq!(values(&r[1]), [vec![Value::Integer(4)]]);
    // Reads cannot write, nor reach paxsql's own tables.
    let (_, r) = reader
        .query(
            &stmts(&[
                "INSERT INTO t (a) VALUES (5)",
                "SELECT * FROM paxsql_internal.meta",
            ]),
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(error(&r[0]).starts_with("ERROR 25006"), "{r:?}");
    assert!(error(&r[1]).starts_with("ERROR 42501"), "{r:?}");
}

#[test]
fn a_reader_connects_again_after_its_connection_broke() {
    let dbs = Databases::new();
    let e = dbs.open("a");
    let db = e.database().to_owned();
    let mut reader = e.reader(ReadLimits::default()).unwrap();
    let outsider = Outsider::to(None);
    outsider.run(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    ));
    let gone = Instant::now() + Duration::from_secs(10);
    while outsider.count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
        &db,
    ) > 0
    {
        assert!(Instant::now() < gone, "the backends did not end");
        std::thread::yield_now();
    }
    let one = stmts(&["SELECT 1"]);
    // The read that finds the connection broken fails; the next connects.
    let first = reader.query(&one, Duration::from_secs(5));
    if let Err(e) = &first {
        eprintln!("the read on the broken connection: {e}");
    }
    let (_, r) = reader.query(&one, Duration::from_secs(5)).unwrap();
    assert_eq!(values(&r[0]), [vec![Value::Integer(1)]]);
}

// ---------------------------------------------------------------------------
// The statement budget

#[test]
fn the_statement_budget_is_stored_by_the_entry_that_sets_it() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    let show = stmts(&["SHOW PAXSQL STATEMENT_BUDGET"]);
    assert_eq!(
        e.statement_budget(),
        Some(settings::STATEMENT_BUDGET_DEFAULT)
    );
    let r = apply_one(&mut e, "1", &["SET PAXSQL STATEMENT_BUDGET = 20000"]);
    assert!(matches!(r[0], StmtResult::Exec { .. }), "{r:?}");
    assert_eq!(e.statement_budget(), Some(20_000));
    let mut reader = e.reader(ReadLimits::default()).unwrap();
    let (_, r) = reader.query(&show, Duration::from_secs(5)).unwrap();
    assert_eq!(values(&r[0]), [vec![Value::Integer(20_000)]]);
    assert_eq!(values(&e.query(&show)[0]), [vec![Value::Integer(20_000)]]);
    // A request that fails as a whole takes its setting with it.
    let failed = apply(
        &mut e,
        vec![write(
            "2",
            &["SET PAXSQL STATEMENT_BUDGET = 30000", "SELECT 1/0"],
            true,
        )],
    )
    .unwrap();
    assert!(matches!(&failed[0], Applied::Write { results, .. } if results.len() == 2));
    assert_eq!(e.statement_budget(), Some(20_000));
    // Out of range, and as a read.
    let r = apply_one(&mut e, "3", &["SET PAXSQL STATEMENT_BUDGET = 5"]);
    assert!(error(&r[0]).contains("between"), "{r:?}");
    let (_, r) = reader
        .query(
            &stmts(&["SET PAXSQL STATEMENT_BUDGET = 40000"]),
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(error(&r[0]).contains("is a write"), "{r:?}");
    // It is part of the database.
    drop(reader);
    drop(e);
    let e = dbs.open("a");
    assert_eq!(e.statement_budget(), Some(20_000));
}

// ---------------------------------------------------------------------------
// Dry runs

#[test]
fn a_dry_run_refuses_a_runaway_write_before_the_log_and_changes_nothing() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    with_table(&mut e);
    let before = e.state_hash().unwrap();
    let admission = dbs.admission("a");
    let started = Instant::now();
    let refused = admission.check(&stmts(&["INSERT INTO t (a) VALUES (9)", RUNAWAY_UPDATE]));
    let took = started.elapsed();
    let Err(Refused::OverBudget(m)) = refused else {
        panic!("{refused:?}")
    };
    assert!(
        m.starts_with("statement budget exceeded: statement 2 of the write ran longer than 50 ms"),
        "{m}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Ordinary writes, DDL included, are admitted; none of it stays.
    admission
        .check(&stmts(&[
            "CREATE TABLE u (id serial PRIMARY KEY, v text)",
            "INSERT INTO u (v) VALUES ('a'), ('b')",
            "UPDATE t SET a = a + 1",
            "INSERT INTO t (a) VALUES (1), (2)",
            "SELECT nonsense FROM nowhere",
            "DELETE FROM paxsql_internal.meta",
        ]))
        .unwrap();
    assert_eq!(e.state_hash().unwrap(), before);
    eprintln!("runaway refused in {took:?}");
}

#[test]
fn dry_runs_do_not_change_the_numbers_sequences_hand_out() {
    let dbs = Databases::new();
    let (mut a, mut b) = (dbs.open("a"), dbs.open("b"));
    for e in [&mut a, &mut b] {
        with_table(e);
    }
    // Dry runs on replica a only: each calls nextval(), which a rollback
    // does not undo.
    let admission = dbs.admission("a");
    for _ in 0..5 {
        admission
            .check(&stmts(&[
                "INSERT INTO t (a) VALUES (10)",
                "SELECT nextval('t_id_seq')",
            ]))
            .unwrap();
    }
    // A dry run whose connection broke before it could put the sequence
    // back leaves it advanced: the next entry puts it back first.
    Outsider::to(Some(a.database())).run("SELECT nextval('t_id_seq') FROM generate_series(1, 3)");
    for e in [&mut a, &mut b] {
        let r = apply_one(e, "insert", &["INSERT INTO t (a) VALUES (10) RETURNING id"]);
        assert_eq!(values(&r[0]), [vec![Value::Integer(4)]]);
    }
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

#[test]
fn a_dry_run_measures_each_statement_under_the_budget_in_force() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    with_table(&mut e);
    let admission = dbs.admission("a");
    // About half a second of work: over 50 ms ...
    let heavy = "UPDATE t SET a = (SELECT count(*)::int FROM generate_series(1, 5000000))";
    let refused = admission.check(&stmts(&[heavy]));
    assert!(
        matches!(refused, Err(Refused::OverBudget(_))),
        "{refused:?}"
    );
    // ... within the budget the same write sets first (100 s) ...
    admission
        .check(&stmts(&[
            "SET PAXSQL STATEMENT_BUDGET = 10000000000",
            heavy,
        ]))
        .unwrap();
    // ... and within the budget the log set.
    apply_one(
        &mut e,
        "raise",
        &["SET PAXSQL STATEMENT_BUDGET = 10000000000"],
    );
    admission.check(&stmts(&[heavy])).unwrap();
}

#[test]
fn a_dry_run_that_waits_on_a_lock_is_not_taken_for_a_runaway() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    with_table(&mut e);
    let admission = dbs.admission("a");
    let holder = Outsider::to(Some(e.database()));
    holder.run("BEGIN; UPDATE t SET a = a WHERE id = 1");
    let r = admission.check(&stmts(&["UPDATE t SET a = 5 WHERE id = 1"]));
    let Err(Refused::Unavailable(m)) = r else {
        panic!("{r:?}")
    };
    assert!(m.contains("waited on locks") && m.contains("retry"), "{m}");
    holder.run("ROLLBACK");
    admission
        .check(&stmts(&["UPDATE t SET a = 5 WHERE id = 1"]))
        .unwrap();
}

#[test]
fn writes_dry_run_together_each_as_if_alone() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    with_table(&mut e);
    let before = e.state_hash().unwrap();
    // One connection: writes queue up behind the first and run as groups.
    let admission = PostgresAdmission::start(
        &postgres_url(),
        &dbs.name("a"),
        Duration::from_secs(5),
        1,
        64,
    )
    .unwrap();
    let heavy = "UPDATE t SET a = (SELECT count(*)::int FROM generate_series(1, 5000000))";
    let one_row = "UPDATE t SET a = (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL \
                   SELECT x+1 FROM c) SELECT count(*) FROM c) WHERE id = 1";
    let writes: Vec<(Vec<&str>, Option<usize>)> = vec![
        (vec!["INSERT INTO t (a) VALUES (1)"], None),
        (vec![RUNAWAY_UPDATE], Some(1)),
        (
            vec![
                "CREATE TABLE x (v int)",
                "INSERT INTO x VALUES (1)",
                "SELECT 1/0",
                RUNAWAY_UPDATE,
            ],
            Some(4),
        ),
        (
            vec!["CREATE TABLE x (v int)", "INSERT INTO x VALUES (2)"],
            None,
        ),
        // A budget set by one write is not another's ...
        (
            vec!["SET PAXSQL STATEMENT_BUDGET = 10000000000", heavy],
            None,
        ),
        (vec![heavy], Some(1)),
        // ... nor are its rows: with t emptied the next would be quick.
        (vec!["DELETE FROM t"], None),
        (vec![one_row], Some(1)),
        (vec!["SELECT 1/0", "INSERT INTO t (a) VALUES (1)"], None),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, (sqls, _)) in writes.iter().enumerate() {
        let tx = tx.clone();
        admission
            .submit(stmts(sqls), move |(_, verdict)| {
                let _ = tx.send((i, verdict));
            })
            .unwrap();
    }
    let mut verdicts: Vec<_> = (0..writes.len()).map(|_| rx.recv().unwrap()).collect();
    verdicts.sort_by_key(|(i, _)| *i);
    for ((i, verdict), (sqls, refused_at)) in verdicts.iter().zip(&writes) {
        match (verdict, refused_at) {
            (Ok(()), None) => {}
            (Err(Refused::OverBudget(m)), Some(n)) => assert!(
                m.contains(&format!("statement {n} of the write")),
                "write {i} {sqls:?}: {m}"
            ),
            other => panic!("write {i} {sqls:?}: {other:?}"),
        }
    }
    assert_eq!(e.state_hash().unwrap(), before);
}

#[test]
fn a_flood_of_runaways_leaves_the_log_its_turns() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    with_table(&mut e);
    // 40 runaways at 50 ms each, with ordinary writes among them.
    let admission = dbs.admission("a");
    let (tx, rx) = std::sync::mpsc::channel();
    let n = 60;
    for i in 0..n {
        let tx = tx.clone();
        let sql = if i % 3 == 2 {
            "INSERT INTO t (a) VALUES (7)"
        } else {
            RUNAWAY_UPDATE
        };
        admission
            .submit(stmts(&[sql]), move |(_, verdict)| {
                let _ = tx.send((i, verdict));
            })
            .unwrap();
    }
    // Meanwhile an entry is applied: it waits for the gate, but not for
    // the whole flood (40 × 50 ms).
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    apply_one(&mut e, "during", &["INSERT INTO t (a) VALUES (8)"]);
    let waited = started.elapsed();
    let mut verdicts: Vec<_> = (0..n).map(|_| rx.recv().unwrap()).collect();
    let flood = started.elapsed();
    verdicts.sort_by_key(|(i, _)| *i);
    for (i, verdict) in verdicts {
        match (i % 3 == 2, verdict) {
            (true, Ok(())) | (false, Err(Refused::OverBudget(_))) => {}
            other => panic!("write {i}: {other:?}"),
        }
    }
    eprintln!("an entry during the flood waited {waited:?}; the flood took {flood:?}");
    assert!(waited < flood, "{waited:?} {flood:?}");
}

// ---------------------------------------------------------------------------
// At apply

#[test]
fn a_statement_past_the_apply_backstop_stops_the_replica_instead_of_failing() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    with_table(&mut e);
    let db = e.database().to_owned();
    drop(e);
    Outsider::to(None).run(&format!(
        "ALTER DATABASE \"{db}\" SET paxsql.apply_backstop_ms = '300'"
    ));
    let mut e = dbs.open("a");
    let before = e.state_hash().unwrap();
    let at = e.applied_index();
    let started = Instant::now();
    let failed = apply(&mut e, vec![write("runaway", &[RUNAWAY_UPDATE], false)]);
    let Err(EngineError::Inconsistent(m)) = failed else {
        panic!("{failed:?}")
    };
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        m.contains("statement 1 of request runaway") && m.contains("backstop of 300 ms"),
        "{m}"
    );
    assert!(m.contains("ALTER DATABASE"), "{m}");
    assert_eq!(e.applied_index(), at);
    assert_eq!(e.state_hash().unwrap(), before);
    assert_eq!(e.completed(&RequestId("runaway".into())).unwrap(), None);
}

#[test]
fn an_entry_that_loses_a_deadlock_to_a_read_is_applied_again() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    apply_one(
        &mut e,
        "setup",
        &["CREATE TABLE a (x int)", "CREATE TABLE b (x int)"],
    );
    let db = e.database().to_owned();
    // A read holds `a` and will want `b`; the entry takes `b`, then wants `a`.
    let reader = Outsider::to(Some(&db));
    reader.run("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT * FROM a");
    let applying = std::thread::spawn(move || {
        let out = apply(
            &mut e,
            vec![write(
                "ddl",
                &[
                    "ALTER TABLE b ADD COLUMN y int",
                    "ALTER TABLE a ADD COLUMN y int",
                ],
                true,
            )],
        );
        (e, out)
    });
    let watcher = Outsider::to(None);
    let waiting = Instant::now() + Duration::from_secs(10);
    while watcher.count(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        &db,
    ) == 0
    {
        assert!(
            Instant::now() < waiting,
            "the entry never waited for the read"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Now the read closes the cycle; PostgreSQL aborts the entry, which
    // waited first, and the read goes on.
    reader.run("SELECT * FROM b");
    reader.run("COMMIT");
    let (mut e, out) = applying.join().unwrap();
    let out = out.unwrap();
    assert!(
        matches!(&out[0], Applied::Write { results, .. } if results.iter().all(|r| !matches!(r, StmtResult::Error(_)))),
        "{out:?}"
    );
    let r = e.query(&[
        Statement::new("SELECT y FROM a"),
        Statement {
            sql: "SELECT y FROM b WHERE x = ?".into(),
            params: Params::Positional(vec![Value::Integer(1)]),
        },
    ]);
    assert!(
        r.iter().all(|r| matches!(r, StmtResult::Rows { .. })),
        "{r:?}"
    );
    assert_eq!(e.applied_index(), LogIndex(2));
}

// ---------------------------------------------------------------------------
// Cost

/// What a dry run adds to a write, against what applying it costs:
/// `cargo test -p paxsql-sql --test postgres_bounds -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_the_cost_of_a_dry_run() {
    let dbs = Databases::new();
    let mut e = dbs.open("a");
    with_table(&mut e);
    let admission = dbs.admission("a");
    let n = 2000;
    for batch in [1usize, 10] {
        let sqls: Vec<String> = (0..batch)
            .map(|i| format!("INSERT INTO t (a) VALUES ({i})"))
            .collect();
        let sqls: Vec<&str> = sqls.iter().map(String::as_str).collect();
        let write_stmts = stmts(&sqls);
        let started = Instant::now();
        for _ in 0..n {
            admission.check(&write_stmts).unwrap();
        }
        let dry = started.elapsed() / n;
        let started = Instant::now();
        for i in 0..n {
            apply(&mut e, vec![write(&format!("w{batch}-{i}"), &sqls, false)]).unwrap();
        }
        let applied = started.elapsed() / n;
        eprintln!(
            "{batch} INSERT(s) per write: dry run {dry:?}, apply {applied:?} per write \
             ({:.0}% of the apply)",
            dry.as_secs_f64() / applied.as_secs_f64() * 100.0
        );
    }
}
