//! The engine contract, run against every engine: SQLite and PostgreSQL
//! pass the same suite ([`engine_suite!`]); what only one dialect can
//! express (SQLite's authorizer and pragmas, PostgreSQL's types, sequences
//! and connection errors) is tested in that engine's module.
//!
//! The PostgreSQL tests need a server: `PAXSQL_TEST_POSTGRES_URL`, by
//! default `postgres://postgres@127.0.0.1:5432/postgres` (`scripts/postgres-ready`
//! starts the local one). Without it they fail; they never skip.

use paxsql_sql::{
    database_name, Applied, Dialect, PostgresEngine, PostgresOptions, SqlEngine, SqliteEngine,
    SqliteOptions,
};
use paxsql_types::{
    ApplyEnv, BarrierId, Entry, LogIndex, NodeId, Params, Proposal, RequestId, Statement,
    StmtResult, Value, WriteRequest,
};

type Engine = Box<dyn SqlEngine + Send>;

/// Opens engines of one kind; what a test opens under the same name is the
/// same database (a reopen), and everything is removed when it is dropped.
trait Factory {
    fn open(&self, name: &str) -> Engine;
    fn dialect(&self) -> Dialect;
    /// Whether a statement's error is the engine's unique-constraint violation.
    fn is_unique_violation(&self, msg: &str) -> bool;
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Self {
        Sqlite(tempfile::tempdir().unwrap())
    }
}

impl Factory for Sqlite {
    fn open(&self, name: &str) -> Engine {
        Box::new(
            SqliteEngine::open(
                &self.0.path().join(format!("{name}.db")),
                SqliteOptions::default(),
            )
            .unwrap(),
        )
    }
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn is_unique_violation(&self, msg: &str) -> bool {
        msg.contains("UNIQUE constraint failed")
    }
}

fn postgres_url() -> String {
    std::env::var("PAXSQL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Databases `paxsql_test_<pid>_<n>_<name>_g0`, dropped at the end.
struct Postgres {
    prefix: String,
    opened: std::sync::Mutex<Vec<String>>,
}

impl Postgres {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Postgres {
            prefix: format!("test_{}_{n}", std::process::id()),
            opened: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn database(&self, name: &str) -> String {
        database_name(&format!("{}_{name}", self.prefix), 1, 0)
    }

    fn options(&self, name: &str) -> PostgresOptions {
        let db = self.database(name);
        let mut list = self.opened.lock().unwrap();
        if !list.contains(&db) {
            list.push(db.clone());
        }
        PostgresOptions::new(postgres_url(), db)
    }

    fn open_pg(&self, name: &str) -> PostgresEngine {
        PostgresEngine::open(self.options(name)).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is needed for these tests (run scripts/postgres-ready): {e}",
                postgres_url()
            )
        })
    }

    /// A plain connection to a test database, as an outsider.
    fn raw(&self, name: &str) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
        config.dbname(self.database(name));
        let client = rt.block_on(async {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        });
        (rt, client)
    }
}

impl Factory for Postgres {
    fn open(&self, name: &str) -> Engine {
        Box::new(self.open_pg(name))
    }
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn is_unique_violation(&self, msg: &str) -> bool {
        msg.starts_with("ERROR 23505: duplicate key value violates unique constraint")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let list = std::mem::take(&mut *self.opened.lock().unwrap());
        for db in list {
            if let Err(e) = PostgresEngine::drop_database(&postgres_url(), &db) {
                eprintln!("leaving test database {db}: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers: statements go through the dialect's rewrite, as the replica does.

const ENV: ApplyEnv = ApplyEnv {
    unix_ms: 1_700_000_000_123,
    seed: 42,
};

fn proposed(dialect: Dialect, sql: &str) -> Statement {
    let mut state = 7u64;
    let mut random = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        state
    };
    let mut env = paxsql_sql::determinism::Env {
        unix_ms: ENV.unix_ms,
        random: &mut random,
    };
    assert_eq!(dialect.forbidden(sql), None, "{sql}");
    Statement::new(
        dialect
            .make_deterministic(sql, &mut env)
            .unwrap()
            .into_owned(),
    )
}

/// A write as the proposer makes it: rewritten, with the clock of [`ENV`]
/// and a seed of its own.
fn write_in(dialect: Dialect, id: &str, stmts: &[&str], transaction: bool) -> Proposal {
    let seed = id.bytes().fold(ENV.seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Proposal::Write(WriteRequest {
        id: RequestId(id.into()),
        stmts: stmts.iter().map(|s| proposed(dialect, s)).collect(),
        transaction,
        env: ApplyEnv { seed, ..ENV },
    })
}

fn apply(e: &mut Engine, proposals: Vec<Proposal>) -> Vec<Applied> {
    let index = e.applied_index();
    e.apply(index, &Entry { proposals }).unwrap()
}

fn results(a: &Applied) -> &[StmtResult] {
    match a {
        Applied::Write { results, .. } => results,
        Applied::Barrier(_) => panic!("not a write"),
    }
}

fn rows(e: &mut Engine, sql: &str) -> Vec<Vec<Value>> {
    match &e.query(&[Statement::new(sql)])[0] {
        StmtResult::Rows { values, .. } => values.clone(),
        other => panic!("{sql}: {other:?}"),
    }
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

// ---------------------------------------------------------------------------
// The suite every engine passes.

macro_rules! engine_suite {
    ($factory:expr) => {
        #[test]
        fn applied_index_survives_reopen() {
            super::applied_index_survives_reopen(&$factory)
        }
        #[test]
        fn a_repeated_request_id_is_applied_once_and_gets_the_first_answer() {
            super::a_repeated_request_id_is_applied_once_and_gets_the_first_answer(&$factory)
        }
        #[test]
        fn a_transaction_is_all_or_nothing_and_plain_statements_are_not() {
            super::a_transaction_is_all_or_nothing_and_plain_statements_are_not(&$factory)
        }
        #[test]
        fn reads_cannot_write() {
            super::reads_cannot_write(&$factory)
        }
        #[test]
        fn a_failed_read_statement_does_not_fail_the_others() {
            super::a_failed_read_statement_does_not_fail_the_others(&$factory)
        }
        #[test]
        fn state_hash_tells_content_apart() {
            super::state_hash_tells_content_apart(&$factory)
        }
        #[test]
        fn two_replicas_applying_the_same_entries_are_identical() {
            super::two_replicas_applying_the_same_entries_are_identical(&$factory)
        }
        #[test]
        fn parameters_bind_by_position_and_by_name() {
            super::parameters_bind_by_position_and_by_name(&$factory)
        }
        #[test]
        fn barriers_pass_through_in_order() {
            super::barriers_pass_through_in_order(&$factory)
        }
        #[test]
        fn results_do_not_depend_on_what_the_connection_did_before() {
            super::results_do_not_depend_on_what_the_connection_did_before(&$factory)
        }
        #[test]
        fn statement_errors_are_the_same_on_every_replica() {
            super::statement_errors_are_the_same_on_every_replica(&$factory)
        }
        #[test]
        fn upserts_work_in_the_shared_syntax() {
            super::upserts_work_in_the_shared_syntax(&$factory)
        }
    };
}

fn applied_index_survives_reopen(f: &impl Factory) {
    let d = f.dialect();
    let mut e = f.open("a");
    apply(
        &mut e,
        vec![write_in(
            d,
            "r1",
            &["CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"],
            false,
        )],
    );
    apply(
        &mut e,
        vec![write_in(
            d,
            "r2",
            &["INSERT INTO t (id, v) VALUES (1, 'x')"],
            false,
        )],
    );
    assert_eq!(e.applied_index(), LogIndex(2));
    drop(e);
    let mut e = f.open("a");
    assert_eq!(e.applied_index(), LogIndex(2));
    assert_eq!(
        rows(&mut e, "SELECT id, v FROM t"),
        vec![vec![int(1), Value::Text("x".into())]]
    );
}

fn a_repeated_request_id_is_applied_once_and_gets_the_first_answer(f: &impl Factory) {
    let d = f.dialect();
    let mut e = f.open("a");
    apply(
        &mut e,
        vec![write_in(d, "c", &["CREATE TABLE t (v INTEGER)"], false)],
    );
    let first = apply(
        &mut e,
        vec![write_in(d, "r", &["INSERT INTO t VALUES (1)"], false)],
    );
    let again = apply(
        &mut e,
        vec![write_in(d, "r", &["INSERT INTO t VALUES (1)"], false)],
    );
    assert!(matches!(
        again[0],
        Applied::Write {
            duplicate: true,
            ..
        }
    ));
    assert_eq!(results(&first[0]), results(&again[0]));
    assert_eq!(rows(&mut e, "SELECT count(*) FROM t"), vec![vec![int(1)]]);
    assert!(e.completed(&RequestId("r".into())).unwrap().is_some());
    // Also within one entry, and after a reopen.
    let twice = apply(
        &mut e,
        vec![
            write_in(d, "s", &["INSERT INTO t VALUES (2)"], false),
            write_in(d, "s", &["INSERT INTO t VALUES (2)"], false),
        ],
    );
    assert!(matches!(
        twice[1],
        Applied::Write {
            duplicate: true,
            ..
        }
    ));
    drop(e);
    let mut e = f.open("a");
    let later = apply(
        &mut e,
        vec![write_in(d, "r", &["INSERT INTO t VALUES (1)"], false)],
    );
    assert!(matches!(
        later[0],
        Applied::Write {
            duplicate: true,
            ..
        }
    ));
    assert_eq!(rows(&mut e, "SELECT count(*) FROM t"), vec![vec![int(2)]]);
}

fn a_transaction_is_all_or_nothing_and_plain_statements_are_not(f: &impl Factory) {
    let d = f.dialect();
    let mut e = f.open("a");
    apply(
        &mut e,
        vec![write_in(
            d,
            "c",
            &["CREATE TABLE t (v INTEGER UNIQUE)"],
            false,
        )],
    );
    let three = [
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (3)",
    ];
    let tx = apply(&mut e, vec![write_in(d, "tx", &three, true)]);
    let r = results(&tx[0]);
    assert_eq!(r.len(), 2, "a transaction stops at its first error: {r:?}");
    assert!(
        matches!(&r[1], StmtResult::Error(m) if f.is_unique_violation(m)),
        "{r:?}"
    );
    assert_eq!(rows(&mut e, "SELECT count(*) FROM t"), vec![vec![int(0)]]);

    let plain = apply(&mut e, vec![write_in(d, "p", &three, false)]);
    let r = results(&plain[0]);
    assert_eq!(r.len(), 3);
    assert!(
        matches!(
            r[2],
            StmtResult::Exec {
                rows_affected: 1,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(
        rows(&mut e, "SELECT v FROM t ORDER BY v"),
        vec![vec![int(1)], vec![int(3)]]
    );
    // A failed single statement leaves nothing behind either.
    let one = apply(
        &mut e,
        vec![write_in(
            d,
            "one",
            &["INSERT INTO t VALUES (5), (1)"],
            false,
        )],
    );
    assert!(matches!(&results(&one[0])[0], StmtResult::Error(_)));
    assert_eq!(rows(&mut e, "SELECT count(*) FROM t"), vec![vec![int(2)]]);
}

fn reads_cannot_write(f: &impl Factory) {
    let d = f.dialect();
    let mut e = f.open("a");
    apply(
        &mut e,
        vec![write_in(d, "c", &["CREATE TABLE t (v INTEGER)"], false)],
    );
    for sql in [
        "INSERT INTO t VALUES (1)",
        "DELETE FROM t",
        "CREATE TABLE u (v INTEGER)",
        "DROP TABLE t",
    ] {
        let r = e.query(&[Statement::new(sql)]);
        assert!(matches!(&r[0], StmtResult::Error(_)), "{sql}: {r:?}");
    }
    assert_eq!(rows(&mut e, "SELECT count(*) FROM t"), vec![vec![int(0)]]);
}

fn a_failed_read_statement_does_not_fail_the_others(f: &impl Factory) {
    let mut e = f.open("a");
    let r = e.query(&[
        Statement::new("SELECT * FROM nowhere"),
        Statement::new("SELECT 1 + 1"),
    ]);
    assert!(matches!(&r[0], StmtResult::Error(_)), "{r:?}");
    assert!(
        matches!(&r[1], StmtResult::Rows { values, .. } if values == &vec![vec![int(2)]]),
        "{r:?}"
    );
}

fn state_hash_tells_content_apart(f: &impl Factory) {
    let d = f.dialect();
    let mut a = f.open("a");
    let mut b = f.open("b");
    let mut c = f.open("c");
    for (e, v) in [(&mut a, "x"), (&mut b, "y"), (&mut c, "x")] {
        let insert = format!("INSERT INTO t VALUES ('{v}')");
        apply(
            e,
            vec![write_in(
                d,
                "1",
                &["CREATE TABLE t (v TEXT)", &insert],
                false,
            )],
        );
    }
    assert_ne!(a.state_hash().unwrap(), b.state_hash().unwrap());
    assert_eq!(a.state_hash().unwrap(), c.state_hash().unwrap());
    // Internal bookkeeping is not content: more entries, same hash.
    let before = c.state_hash().unwrap();
    apply(&mut c, vec![write_in(d, "2", &["SELECT 1"], false)]);
    assert_eq!(c.state_hash().unwrap(), before);
}

fn two_replicas_applying_the_same_entries_are_identical(f: &impl Factory) {
    let d = f.dialect();
    let mut a = f.open("a");
    let mut b = f.open("b");
    let entries: Vec<Vec<Proposal>> = vec![
        vec![write_in(
            d,
            "1",
            &["CREATE TABLE t (id INTEGER PRIMARY KEY, at TEXT DEFAULT CURRENT_TIMESTAMP, r REAL)"],
            false,
        )],
        vec![
            write_in(d, "2", &["INSERT INTO t (id) VALUES (1)"], false),
            write_in(
                d,
                "3",
                &[
                    "INSERT INTO t (id, r) VALUES (2, random())",
                    "INSERT INTO t (id, at) VALUES (3, CURRENT_TIMESTAMP)",
                ],
                false,
            ),
        ],
        vec![write_in(
            d,
            "4",
            &["UPDATE t SET r = random() WHERE id <> 2"],
            false,
        )],
    ];
    for entry in entries {
        assert_eq!(apply(&mut a, entry.clone()), apply(&mut b, entry));
    }
    let all = "SELECT id, at, r FROM t ORDER BY id";
    let ra = rows(&mut a, all);
    assert_eq!(ra, rows(&mut b, all));
    assert!(
        matches!(&ra[0][1], Value::Text(t) if t.starts_with("2023-11-14 22:13:20")),
        "the entry's clock, not the wall clock: {ra:?}"
    );
    assert_eq!(ra[0][1], ra[2][1]);
    assert_ne!(ra[0][2], ra[1][2], "random() advances");
    assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
}

fn parameters_bind_by_position_and_by_name(f: &impl Factory) {
    let d = f.dialect();
    let mut e = f.open("a");
    let mut p = write_in(d, "1", &["CREATE TABLE t (a REAL, b BYTEA)"], false);
    if let Proposal::Write(w) = &mut p {
        w.stmts.push(Statement {
            sql: "INSERT INTO t VALUES (?, ?)".into(),
            params: Params::Positional(vec![Value::Integer(1), Value::Blob(vec![0, 255])]),
        });
        w.stmts.push(Statement {
            sql: "INSERT INTO t VALUES (:a, @b)".into(),
            params: Params::Named(vec![
                ("a".into(), Value::Real(2.5)),
                ("b".into(), Value::Null),
            ]),
        });
        w.stmts.push(Statement {
            sql: "INSERT INTO t VALUES (?, ?)".into(),
            params: Params::Positional(vec![Value::Integer(1)]),
        });
    }
    let out = apply(&mut e, vec![p]);
    let r = results(&out[0]);
    assert!(
        matches!(&r[3], StmtResult::Error(m) if m.contains("wrong number of parameters")),
        "{r:?}"
    );
    assert_eq!(
        rows(&mut e, "SELECT a, b FROM t ORDER BY a"),
        vec![
            vec![Value::Real(1.0), Value::Blob(vec![0, 255])],
            vec![Value::Real(2.5), Value::Null]
        ]
    );
    let q = e.query(&[Statement {
        sql: "SELECT count(*) FROM t WHERE a > ?".into(),
        params: Params::Positional(vec![Value::Integer(2)]),
    }]);
    assert!(
        matches!(&q[0], StmtResult::Rows { values, .. } if values == &vec![vec![int(1)]]),
        "{q:?}"
    );
}

fn barriers_pass_through_in_order(f: &impl Factory) {
    let d = f.dialect();
    let mut e = f.open("a");
    let b = BarrierId {
        node: NodeId(1),
        seq: 7,
        epoch: 9,
    };
    let out = apply(
        &mut e,
        vec![
            Proposal::Barrier(b),
            write_in(d, "w", &["CREATE TABLE t (v INTEGER)"], false),
        ],
    );
    assert_eq!(out[0], Applied::Barrier(b));
    assert_eq!(e.applied_index(), LogIndex(1));
}

fn results_do_not_depend_on_what_the_connection_did_before(f: &impl Factory) {
    let d = f.dialect();
    let mut a = f.open("a");
    apply(
        &mut a,
        vec![write_in(
            d,
            "1",
            &["CREATE TABLE t (v INTEGER)", "INSERT INTO t VALUES (1)"],
            false,
        )],
    );
    let before = apply(
        &mut a,
        vec![write_in(d, "2", &["CREATE TABLE u (v INTEGER)"], false)],
    );
    drop(a);
    let mut a = f.open("a");
    let after = apply(
        &mut a,
        vec![write_in(d, "3", &["CREATE TABLE w (v INTEGER)"], false)],
    );
    assert_eq!(results(&before[0]), results(&after[0]));
}

fn statement_errors_are_the_same_on_every_replica(f: &impl Factory) {
    let d = f.dialect();
    let mut a = f.open("a");
    let mut b = f.open("b");
    let stmts = [
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        "INSERT INTO t VALUES (1, 'a')",
        "INSERT INTO t VALUES (1, 'b')",
        "INSERT INTO t VALUES (2, NULL)",
        "INSRT INTO t VALUES (3, 'c')",
        "SELECT * FROM missing",
    ];
    let ra = apply(&mut a, vec![write_in(d, "x", &stmts, false)]);
    // b restarts first: a fresh connection must answer the same.
    drop(b);
    b = f.open("b");
    let rb = apply(&mut b, vec![write_in(d, "x", &stmts, false)]);
    assert_eq!(ra, rb);
    let r = results(&ra[0]);
    assert!(
        matches!(&r[2], StmtResult::Error(m) if f.is_unique_violation(m)),
        "{r:?}"
    );
    for i in 3..6 {
        assert!(matches!(&r[i], StmtResult::Error(_)), "{r:?}");
    }
}

fn upserts_work_in_the_shared_syntax(f: &impl Factory) {
    let d = f.dialect();
    let mut e = f.open("a");
    apply(
        &mut e,
        vec![write_in(
            d,
            "1",
            &[
                "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
                "INSERT INTO kv VALUES (1, 'a')",
                "INSERT INTO kv (k, v) VALUES (1, 'b') ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            ],
            false,
        )],
    );
    assert_eq!(
        rows(&mut e, "SELECT k, v FROM kv"),
        vec![vec![int(1), Value::Text("b".into())]]
    );
}

mod sqlite {
    use super::*;

    engine_suite!(Sqlite::new());

    #[test]
    fn an_image_installed_on_another_replica_carries_rows_index_and_request_ids() {
        let d = Dialect::Sqlite;
        let f = Sqlite::new();
        let mut a = f.open("a");
        let create = ["CREATE TABLE t (k INTEGER PRIMARY KEY, v)"];
        apply(&mut a, vec![write_in(d, "1", &create, false)]);
        for i in 0..50 {
            let insert = format!("INSERT INTO t VALUES ({i}, randomblob(200))");
            apply(
                &mut a,
                vec![write_in(d, &format!("w{i}"), &[&insert], false)],
            );
        }
        assert_eq!(a.persist().unwrap(), LogIndex(51));
        let (index, image) = a.snapshot().unwrap();
        assert_eq!(index, LogIndex(51));

        // B has other, older content: the image replaces all of it.
        let mut b = f.open("b");
        apply(
            &mut b,
            vec![write_in(d, "other", &["CREATE TABLE u (x)"], false)],
        );
        let wrong = b.install(LogIndex(52), &image).unwrap_err();
        assert!(wrong.to_string().contains("index 51"), "{wrong}");
        let garbage = b.install(LogIndex(51), b"not a database").unwrap_err();
        assert!(garbage.to_string().contains("not a database"), "{garbage}");
        assert_eq!(
            b.applied_index(),
            LogIndex(1),
            "a refused image changes nothing"
        );

        b.install(index, &image).unwrap();
        assert_eq!(b.applied_index(), LogIndex(51));
        assert_eq!(b.state_hash().unwrap(), a.state_hash().unwrap());
        assert!(b.completed(&RequestId("w7".into())).unwrap().is_some());
        // It goes on from there like A, and survives a reopen.
        let next = ["INSERT INTO t VALUES (100, 'x')"];
        apply(&mut a, vec![write_in(d, "n", &next, false)]);
        apply(&mut b, vec![write_in(d, "n", &next, false)]);
        drop(b);
        let mut b = f.open("b");
        assert_eq!(b.applied_index(), LogIndex(52));
        assert_eq!(b.state_hash().unwrap(), a.state_hash().unwrap());
    }

    #[test]
    fn a_read_after_alter_table_sees_the_new_columns() {
        let d = Dialect::Sqlite;
        let f = Sqlite::new();
        let mut e = f.open("a");
        let create = ["CREATE TABLE t (a)", "INSERT INTO t VALUES (1)"];
        apply(&mut e, vec![write_in(d, "1", &create, false)]);
        assert_eq!(rows(&mut e, "SELECT * FROM t"), vec![vec![int(1)]]);
        let alter = ["ALTER TABLE t ADD COLUMN b DEFAULT 2"];
        apply(&mut e, vec![write_in(d, "2", &alter, false)]);
        match &e.query(&[Statement::new("SELECT * FROM t WHERE a = 0")])[0] {
            StmtResult::Rows {
                columns, values, ..
            } => {
                assert_eq!(
                    columns,
                    &["a", "b"],
                    "an empty result has the new columns too"
                );
                assert!(values.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match &e.query(&[Statement::new("SELECT * FROM t")])[0] {
            StmtResult::Rows {
                columns, values, ..
            } => {
                assert_eq!(columns, &["a", "b"]);
                assert_eq!(values, &vec![vec![int(1), int(2)]]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn user_sql_cannot_touch_internal_tables_or_transactions() {
        let f = Sqlite::new();
        let mut e = f.open("a");
        let out = apply(
            &mut e,
            vec![Proposal::Write(WriteRequest {
                id: RequestId("bad".into()),
                stmts: [
                    "DELETE FROM _paxsql_requests",
                    "UPDATE _paxsql_meta SET value = 0",
                    "BEGIN",
                    "COMMIT",
                    "ATTACH DATABASE 'x.db' AS x",
                    "SELECT * FROM _paxsql_meta",
                ]
                .into_iter()
                .map(Statement::new)
                .collect(),
                transaction: false,
                env: ENV,
            })],
        );
        for r in results(&out[0]) {
            assert!(
                matches!(r, StmtResult::Error(m) if m.contains("not authorized") || m.contains("prohibited")),
                "{r:?}"
            );
        }
        assert_eq!(e.applied_index(), LogIndex(1));
    }

    #[test]
    fn clock_and_random_in_defaults_are_the_same_on_every_replica() {
        let f = Sqlite::new();
        let mut a = f.open("a");
        let mut b = f.open("b");
        let stmts = [
            "CREATE TABLE t (id INTEGER PRIMARY KEY, r INTEGER DEFAULT (random()), at TEXT DEFAULT CURRENT_TIMESTAMP, b BLOB DEFAULT (randomblob(8)))",
            "INSERT INTO t (id) VALUES (1)",
            "INSERT INTO t (id, r) VALUES (2, random())",
        ];
        for e in [&mut a, &mut b] {
            apply(e, vec![write_in(Dialect::Sqlite, "x", &stmts, false)]);
        }
        let ra = rows(&mut a, "SELECT * FROM t ORDER BY id");
        assert_eq!(ra, rows(&mut b, "SELECT * FROM t ORDER BY id"));
        assert_eq!(
            ra[0][2],
            Value::Text("2023-11-14 22:13:20".into()),
            "the entry's clock"
        );
        assert_ne!(ra[0][1], ra[1][1], "random() advances");
        assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
    }

    #[test]
    fn pragmas_that_change_the_connection_are_refused_and_reporting_ones_work() {
        let f = Sqlite::new();
        let mut e = f.open("a");
        let out = apply(
            &mut e,
            vec![write_in(
                Dialect::Sqlite,
                "p",
                &[
                    "CREATE TABLE t (v)",
                    "PRAGMA foreign_keys=OFF",
                    "PRAGMA table_info(t)",
                ],
                false,
            )],
        );
        let r = results(&out[0]);
        assert!(
            matches!(&r[1], StmtResult::Error(m) if m.contains("not authorized")),
            "{r:?}"
        );
        assert!(
            matches!(&r[2], StmtResult::Rows { values, .. } if values.len() == 1),
            "{r:?}"
        );
        let q = e.query(&[Statement::new("PRAGMA query_only=0")]);
        assert!(matches!(&q[0], StmtResult::Error(_)), "{q:?}");
    }
}

mod postgres {
    use super::*;

    engine_suite!(Postgres::new());

    #[test]
    fn snapshots_are_refused_so_the_log_is_never_trimmed() {
        let f = Postgres::new();
        let mut e = f.open("a");
        for r in [
            e.persist().map(|_| ()),
            e.snapshot().map(|_| ()),
            e.install(LogIndex(1), b"x"),
        ] {
            assert!(
                matches!(r, Err(paxsql_sql::EngineError::Unsupported(_))),
                "{r:?}"
            );
        }
    }

    fn pg_write(id: &str, stmts: &[&str]) -> Proposal {
        write_in(Dialect::Postgres, id, stmts, false)
    }

    /// Statements as they could reach the engine without the proposer's checks.
    fn raw_write(id: &str, stmts: &[&str]) -> Proposal {
        Proposal::Write(WriteRequest {
            id: RequestId(id.into()),
            stmts: stmts.iter().map(|s| Statement::new(*s)).collect(),
            transaction: false,
            env: ENV,
        })
    }

    #[test]
    fn user_sql_cannot_touch_internal_tables_or_transactions() {
        let f = Postgres::new();
        let mut e = f.open("a");
        let bad = [
            "DELETE FROM paxsql_internal.requests",
            "UPDATE PAXSQL_INTERNAL.meta SET value = '0'",
            "SELECT * FROM \"paxsql_internal\".meta",
            "SELECT count(*) FROM pg_class WHERE oid = 'paxsql_internal.meta'::regclass",
            "BEGIN",
            "COMMIT",
            "SET search_path = paxsql_internal",
            "CREATE TEMP TABLE x (v int)",
            "COPY (SELECT 1) TO STDOUT",
        ];
        let out = apply(&mut e, vec![raw_write("bad", &bad)]);
        for r in results(&out[0]) {
            assert!(
                matches!(r, StmtResult::Error(m) if m.starts_with("ERROR 42501:") || m.starts_with("ERROR 0A000:")),
                "{r:?}"
            );
        }
        let read = e.query(&[Statement::new("SELECT * FROM paxsql_internal.meta")]);
        assert!(
            matches!(&read[0], StmtResult::Error(m) if m.contains("paxsql's own schema")),
            "{read:?}"
        );
        // The proposer refuses what would change the session in other ways.
        let mut env = paxsql_sql::determinism::Env {
            unix_ms: 0,
            random: &mut || 0,
        };
        assert!(Dialect::Postgres
            .make_deterministic("SELECT set_config('search_path', 'x', false)", &mut env)
            .is_err());
        assert_eq!(e.applied_index(), LogIndex(1));
        let unchanged = apply(&mut e, vec![pg_write("again", &["SELECT 1"])]);
        assert_eq!(results(&unchanged[0]).len(), 1);
        assert_eq!(e.applied_index(), LogIndex(2));
    }

    #[test]
    fn errors_carry_their_sqlstate() {
        let f = Postgres::new();
        let mut e = f.open("a");
        let out = apply(
            &mut e,
            vec![pg_write(
                "x",
                &[
                    "CREATE TABLE t (k int PRIMARY KEY, v text NOT NULL)",
                    "INSERT INTO t VALUES (1, 'a')",
                    "INSERT INTO t VALUES (1, 'b')",
                    "INSERT INTO t VALUES (2, NULL)",
                    "INSRT INTO t VALUES (3, 'c')",
                    "SELECT 1/0",
                ],
            )],
        );
        let r = results(&out[0]);
        let msg = |i: usize| match &r[i] {
            StmtResult::Error(m) => m.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg(2),
            "ERROR 23505: duplicate key value violates unique constraint \"t_pkey\" (Key (k)=(1) already exists.)"
        );
        assert!(msg(3).starts_with("ERROR 23502: "), "{}", msg(3));
        assert!(
            msg(4).starts_with("ERROR 42601: syntax error"),
            "{}",
            msg(4)
        );
        assert_eq!(msg(5), "ERROR 22012: division by zero");
    }

    #[test]
    fn typed_columns_come_back_faithfully() {
        let f = Postgres::new();
        let mut e = f.open("a");
        let mut p = pg_write(
            "1",
            &["CREATE TABLE t (i int, b bigint, n numeric(10,2), x text, ok bool, raw bytea, at timestamptz, tags int[], f float8, d date, iv interval, u uuid, j jsonb)"],
        );
        if let Proposal::Write(w) = &mut p {
            w.stmts.push(Statement {
                sql: "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)".into(),
                params: Params::Positional(vec![
                    Value::Integer(7),
                    Value::Integer(9_000_000_000),
                    Value::Real(2.5),
                    Value::Text("it's".into()),
                    Value::Integer(1),
                    Value::Blob(vec![0, 1, 255]),
                    Value::Text("2024-02-29 12:00:00.25+02".into()),
                    Value::Text("{1,2,NULL}".into()),
                    Value::Real(0.1),
                    Value::Text("2024-01-31".into()),
                    Value::Text("1 day 02:00:00".into()),
                    Value::Text("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11".into()),
                    Value::Text("{\"a\": [1, true]}".into()),
                ]),
            });
            w.stmts.push(Statement {
                sql: "INSERT INTO t (i, ok) VALUES ($1, $2)".into(),
                params: Params::Positional(vec![Value::Null, Value::Integer(0)]),
            });
        }
        let out = apply(&mut e, vec![p]);
        assert!(
            results(&out[0])
                .iter()
                .all(|r| !matches!(r, StmtResult::Error(_))),
            "{out:?}"
        );
        let r = e.query(&[Statement::new(
            "SELECT i, b, n, x, ok, raw, at, tags, f, d, iv, u, j, n * 3 AS n3, 1.0/3 AS third, \
             sum(b) OVER () AS total FROM t ORDER BY i NULLS LAST",
        )]);
        let StmtResult::Rows { types, values, .. } = &r[0] else {
            panic!("{r:?}")
        };
        assert_eq!(
            types,
            &[
                "int4",
                "int8",
                "numeric",
                "text",
                "bool",
                "bytea",
                "timestamptz",
                "int4[]",
                "float8",
                "date",
                "interval",
                "uuid",
                "jsonb",
                "numeric",
                "numeric",
                "numeric"
            ]
        );
        assert_eq!(
            values[0],
            vec![
                int(7),
                int(9_000_000_000),
                Value::Real(2.5),
                Value::Text("it's".into()),
                int(1),
                Value::Blob(vec![0, 1, 255]),
                Value::Text("2024-02-29 10:00:00.25+00".into()),
                Value::Text("{1,2,NULL}".into()),
                Value::Real(0.1),
                Value::Text("2024-01-31".into()),
                Value::Text("1 day 02:00:00".into()),
                Value::Text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()),
                Value::Text("{\"a\": [1, true]}".into()),
                Value::Real(7.5),
                Value::Text("0.33333333333333333333".into()),
                int(9_000_000_000),
            ]
        );
        assert_eq!(values[1][0], Value::Null);
        assert_eq!(values[1][4], int(0));
        // A type paxsql does not map fails with what to do.
        let r = e.query(&[Statement::new("SELECT int4range(1, 5) AS r")]);
        assert!(
            matches!(&r[0], StmtResult::Error(m) if m.contains("cast it to text (r::text)")),
            "{r:?}"
        );
    }

    #[test]
    fn serial_columns_number_rows_the_same_on_every_replica_even_after_a_lost_nextval() {
        let f = Postgres::new();
        let mut a = f.open("a");
        let mut b = f.open("b");
        let setup = [
            "CREATE TABLE t (id serial PRIMARY KEY, v text)",
            "INSERT INTO t (v) VALUES ('one'), ('two')",
            "INSERT INTO t (v) SELECT 'three' RETURNING id",
        ];
        for e in [&mut a, &mut b] {
            let out = apply(e, vec![pg_write("1", &setup)]);
            assert!(
                matches!(&results(&out[0])[2], StmtResult::Rows { values, .. } if values == &vec![vec![int(3)]]),
                "{out:?}"
            );
        }
        // Replica b "crashed" in the middle of an entry after a nextval():
        // sequences are not transactional, so the number is gone from the
        // sequence although the entry never committed.
        drop(b);
        {
            let (rt, raw) = f.raw("b");
            rt.block_on(raw.batch_execute("SELECT nextval('t_id_seq'), nextval('t_id_seq')"))
                .unwrap();
        }
        let mut b = f.open("b");
        for e in [&mut a, &mut b] {
            apply(
                e,
                vec![pg_write("2", &["INSERT INTO t (v) VALUES ('four')"])],
            );
        }
        let all = "SELECT id, v FROM t ORDER BY id";
        assert_eq!(rows(&mut a, all), rows(&mut b, all));
        assert_eq!(rows(&mut b, all)[3][0], int(4));
        assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
        // currval() sees only this request's nextval().
        let out = apply(
            &mut a,
            vec![raw_write("3", &["SELECT currval('t_id_seq')"])],
        );
        assert!(
            matches!(&results(&out[0])[0], StmtResult::Error(m) if m.starts_with("ERROR 55000")),
            "{out:?}"
        );
    }

    #[test]
    fn clock_uuid_and_random_in_defaults_are_the_same_on_every_replica() {
        let f = Postgres::new();
        let mut a = f.open("a");
        let mut b = f.open("b");
        let stmts = [
            "CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT now(), d date DEFAULT CURRENT_DATE, u uuid DEFAULT gen_random_uuid(), r float8 DEFAULT random())",
            "INSERT INTO t (id) VALUES (1), (2)",
            "INSERT INTO t (id, at, u) VALUES (3, clock_timestamp(), gen_random_uuid())",
            "INSERT INTO t (id, at) VALUES (4, 'now'::timestamptz)",
        ];
        for e in [&mut a, &mut b] {
            let out = apply(e, vec![pg_write("x", &stmts)]);
            assert!(
                results(&out[0])
                    .iter()
                    .all(|r| !matches!(r, StmtResult::Error(_))),
                "{out:?}"
            );
        }
        let all = "SELECT id, at, d, u::text, r FROM t ORDER BY id";
        let ra = rows(&mut a, all);
        assert_eq!(ra, rows(&mut b, all));
        for row in &ra {
            assert_eq!(
                row[1],
                Value::Text("2023-11-14 22:13:20.123+00".into()),
                "{ra:?}"
            );
        }
        assert_eq!(ra[0][2], Value::Text("2023-11-14".into()));
        assert_ne!(ra[0][3], ra[1][3], "one UUID per row");
        assert_ne!(ra[0][4], ra[1][4], "one random() per row");
        assert_eq!(a.state_hash().unwrap(), b.state_hash().unwrap());
        // Outside of applying, paxsql.now() is the real clock.
        let now = rows(&mut a, "SELECT paxsql.now() > '2024-01-01'::timestamptz");
        assert_eq!(now, vec![vec![int(1)]]);
    }

    #[test]
    fn a_database_of_another_owner_is_refused() {
        let f = Postgres::new();
        drop(f.open_pg("a"));
        let mut other = f.options("a");
        other.owner = "someone/else".into();
        let e = PostgresEngine::open(other).unwrap_err().to_string();
        assert!(e.contains("belongs to"), "{e}");
    }

    #[test]
    fn bad_urls_and_unreachable_servers_say_so_at_open() {
        let e = PostgresEngine::open(PostgresOptions::new("postgres://[::1", "x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("URL is not valid"), "{e}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = PostgresEngine::open(PostgresOptions::new(
            format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            "x",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}")),
            "{e}"
        );
    }

    #[test]
    fn a_role_without_createdb_is_told_what_to_grant() {
        let f = Postgres::new();
        let role = format!("paxsql_nocreatedb_{}", std::process::id());
        let (rt, admin) = f.raw_admin();
        rt.block_on(admin.batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN NOCREATEDB"
        )))
        .unwrap();
        let mut config: tokio_postgres::Config = postgres_url().parse().unwrap();
        config.user(&role);
        let url = format!(
            "host=127.0.0.1 port={} user={role} dbname=postgres",
            config.get_ports().first().copied().unwrap_or(5432)
        );
        let e = PostgresEngine::open(PostgresOptions::new(url, f.database("nope")))
            .unwrap_err()
            .to_string();
        rt.block_on(admin.batch_execute(&format!("DROP ROLE {role}")))
            .unwrap();
        assert!(e.contains(&format!("ALTER ROLE {role} CREATEDB")), "{e}");
    }

    impl Postgres {
        fn raw_admin(&self) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let config: tokio_postgres::Config = postgres_url().parse().unwrap();
            let client = rt.block_on(async {
                let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client
            });
            (rt, client)
        }
    }
}
