use super::*;

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|c| (*c).to_owned()).collect()
}

fn rows_of(result: StmtResult) -> Vec<Vec<Value>> {
    match result {
        StmtResult::Rows { values, .. } => values,
        other => panic!("not rows: {other:?}"),
    }
}

/// Two tables as two groups would hand them over, rows in no order.
fn shop() -> Gather {
    let mut g = Gather::new(1 << 20).unwrap();
    g.schema("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        .unwrap();
    g.schema("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), total REAL)")
        .unwrap();
    // Orders first: foreign keys are off, so the load order does not matter.
    g.add_rows(
        "orders",
        &cols(&["id", "user_id", "total"]),
        vec![
            vec![Value::Integer(12), Value::Integer(2), Value::Real(5.5)],
            vec![Value::Integer(10), Value::Integer(1), Value::Real(10.0)],
            vec![Value::Integer(11), Value::Integer(1), Value::Real(2.5)],
        ],
    )
    .unwrap();
    g.add_rows(
        "users",
        &cols(&["id", "name"]),
        vec![
            vec![Value::Integer(2), text("bob")],
            vec![Value::Integer(1), text("ann")],
        ],
    )
    .unwrap();
    g
}

#[test]
fn joins_group_by_and_order_by_run_over_gathered_rows() {
    let g = shop();
    let result = g.query(
        &Statement::new(
            "SELECT u.name, count(*) AS n, sum(o.total) AS total FROM users u \
             JOIN orders o ON o.user_id = u.id GROUP BY u.name ORDER BY u.name",
        ),
        100,
    );
    assert_eq!(
        result,
        StmtResult::Rows {
            columns: cols(&["name", "n", "total"]),
            types: cols(&["text", "", ""]),
            values: vec![
                vec![text("ann"), Value::Integer(2), Value::Real(12.5)],
                vec![text("bob"), Value::Integer(1), Value::Real(5.5)],
            ],
        }
    );
}

#[test]
fn declared_types_are_lower_case() {
    let mut g = Gather::new(1000).unwrap();
    g.schema("CREATE TABLE t (a VARCHAR(10), b Blob)").unwrap();
    match g.query(&Statement::new("SELECT a, b, 1 FROM t"), 10) {
        StmtResult::Rows { types, .. } => assert_eq!(types, cols(&["varchar(10)", "blob", ""])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn positional_and_named_parameters_bind() {
    let g = shop();
    let positional = Statement {
        sql: "SELECT id FROM orders WHERE user_id = ? AND total > ?2 ORDER BY id".into(),
        params: Params::Positional(vec![Value::Integer(1), Value::Real(3.0)]),
    };
    assert_eq!(
        rows_of(g.query(&positional, 10)),
        vec![vec![Value::Integer(10)]]
    );
    for sigil in [":", "@", "$"] {
        let named = Statement {
            sql: format!("SELECT name FROM users WHERE id = {sigil}who"),
            params: Params::Named(vec![("who".into(), Value::Integer(2))]),
        };
        assert_eq!(
            rows_of(g.query(&named, 10)),
            vec![vec![text("bob")]],
            "{sigil}"
        );
    }
    let wrong = Statement {
        sql: "SELECT 1 WHERE 1 = ?".into(),
        params: Params::Positional(vec![]),
    };
    assert_eq!(
        g.query(&wrong, 10),
        StmtResult::Error("wrong number of parameters: 0 given, the statement has 1".into())
    );
}

#[test]
fn rowids_given_as_a_rowid_column_are_kept() {
    let mut g = Gather::new(1000).unwrap();
    g.schema("CREATE TABLE notes (body TEXT)").unwrap();
    g.add_rows(
        "notes",
        &cols(&["rowid", "body"]),
        vec![
            vec![Value::Integer(500), text("x")],
            vec![Value::Integer(-7), text("y")],
        ],
    )
    .unwrap();
    let rows = rows_of(g.query(
        &Statement::new("SELECT rowid, body FROM notes ORDER BY rowid"),
        10,
    ));
    assert_eq!(
        rows,
        vec![
            vec![Value::Integer(-7), text("y")],
            vec![Value::Integer(500), text("x")],
        ]
    );
}

#[test]
fn rows_past_the_byte_bound_are_refused_and_none_added() {
    let mut g = Gather::new(100).unwrap();
    g.schema("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
        .unwrap();
    // 8 + 50 + 16 = 74 bytes: fits.
    g.add_rows(
        "t",
        &cols(&["id", "b"]),
        vec![vec![Value::Integer(1), Value::Blob(vec![0; 50])]],
    )
    .unwrap();
    assert_eq!(g.bytes_used(), 74);
    let err = g
        .add_rows(
            "t",
            &cols(&["id", "b"]),
            vec![
                vec![Value::Integer(2), Value::Null],
                vec![Value::Integer(3), text("0123456789")],
            ],
        )
        .unwrap_err();
    assert_eq!(
        err,
        "the query needs more than 100 bytes of rows gathered from several groups \
         (cross-shard query bound); narrow it with a WHERE on the key (any WHERE, if it \
         reads one table) or raise --gather-bytes-max"
    );
    assert_eq!(g.bytes_used(), 74);
    let count = rows_of(g.query(&Statement::new("SELECT count(*) FROM t"), 10));
    assert_eq!(count, vec![vec![Value::Integer(1)]]);
}

#[test]
fn a_row_of_the_wrong_width_is_refused() {
    let mut g = Gather::new(1000).unwrap();
    g.schema("CREATE TABLE t (a, b)").unwrap();
    let err = g
        .add_rows("t", &cols(&["a", "b"]), vec![vec![Value::Integer(1)]])
        .unwrap_err();
    assert_eq!(err, "a row for t has 1 values for 2 columns");
}

#[test]
fn results_past_rows_max_are_an_error() {
    let g = shop();
    let all = Statement::new("SELECT * FROM orders");
    assert_eq!(rows_of(g.query(&all, 3)).len(), 3);
    match g.query(&all, 2) {
        StmtResult::Error(e) => assert!(e.contains("more than 2 rows"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sql_errors_come_back_as_results() {
    let g = shop();
    assert_eq!(
        g.query(&Statement::new("SELECT nope FROM users"), 10),
        StmtResult::Error("no such column: nope".into())
    );
}

#[test]
fn a_query_cannot_write_or_reach_files() {
    let g = shop();
    for sql in [
        "DELETE FROM users",
        "INSERT INTO users VALUES (9, 'eve')",
        "ATTACH DATABASE '/tmp/paxsql-gather-test.db' AS other",
        "VACUUM INTO '/tmp/paxsql-gather-test.db'",
        "PRAGMA writable_schema = ON",
        "CREATE TABLE x (a)",
    ] {
        let result = g.query(&Statement::new(sql), 10);
        assert!(matches!(result, StmtResult::Error(_)), "{sql}: {result:?}");
    }
    assert!(!std::path::Path::new("/tmp/paxsql-gather-test.db").exists());
    let users = rows_of(g.query(&Statement::new("SELECT count(*) FROM users"), 10));
    assert_eq!(users, vec![vec![Value::Integer(2)]]);
}

#[test]
fn views_and_ctes_work() {
    let mut g = shop();
    g.schema("CREATE VIEW big AS SELECT id FROM orders WHERE total > 5")
        .unwrap();
    let rows = rows_of(g.query(
        &Statement::new("WITH b AS (SELECT id FROM big) SELECT id FROM b ORDER BY id DESC"),
        10,
    ));
    assert_eq!(
        rows,
        vec![vec![Value::Integer(12)], vec![Value::Integer(10)]]
    );
}

#[test]
fn a_rowid_column_beside_its_alias_keeps_the_key() {
    let mut g = Gather::new(1000).unwrap();
    g.schema("CREATE TABLE t (id INTEGER PRIMARY KEY, a)")
        .unwrap();
    g.add_rows(
        "t",
        &cols(&["rowid", "id", "a"]),
        vec![vec![Value::Integer(42), Value::Integer(42), text("x")]],
    )
    .unwrap();
    let rows = rows_of(g.query(&Statement::new("SELECT rowid, id, a FROM t"), 10));
    assert_eq!(
        rows,
        vec![vec![Value::Integer(42), Value::Integer(42), text("x")]]
    );
}
