use paxsql_types::{Params, Statement, StmtResult, Value};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::*;
use crate::gather::Gather;

/// `t` and `u` keyed by `id`, `k` by `Key`, `n` without a key.
fn pk(table: &str) -> Option<String> {
    match table {
        "t" | "u" => Some("id".into()),
        "k" => Some("Key".into()),
        _ => None,
    }
}

fn push(sql: &str) -> Option<Pushdown> {
    pushdown(&Statement::new(sql), &pk)
}

fn push_with(sql: &str, params: Params) -> Option<Pushdown> {
    let stmt = Statement {
        sql: sql.into(),
        params,
    };
    pushdown(&stmt, &pk)
}

fn filter(sql: &str) -> Option<String> {
    push(sql).and_then(|p| p.filter)
}

fn order_limit(sql: &str) -> Option<String> {
    push(sql).and_then(|p| p.order_limit)
}

fn int(i: i64) -> Value {
    Value::Integer(i)
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[test]
fn a_one_table_where_is_pushed_as_written() {
    assert_eq!(
        push("SELECT * FROM t WHERE v = 7"),
        Some(Pushdown {
            table: "t".into(),
            alias: None,
            filter: Some("v = 7".into()),
            order_limit: None,
        })
    );
    assert_eq!(
        filter("SELECT s, count(*) FROM t WHERE v > 3 AND s LIKE 'a%' GROUP BY s HAVING count(*) > 1 ORDER BY s LIMIT 2"),
        Some("v > 3 AND s LIKE 'a%'".into())
    );
    // Aggregates, DISTINCT and windows come after WHERE.
    assert_eq!(
        filter("SELECT DISTINCT sum(v) OVER (ORDER BY id) FROM t WHERE v IN (1, 2)"),
        Some("v IN (1, 2)".into())
    );
    assert_eq!(
        filter(
            "SELECT * FROM T WHERE (v = 1 OR s IS NULL) AND abs(v) < 3 AND coalesce(s, '') <> 'x';"
        ),
        Some("(v = 1 OR s IS NULL) AND abs(v) < 3 AND coalesce(s, '') <> 'x'".into())
    );
    // Spellings sqlparser would print otherwise stay as written.
    assert_eq!(
        filter("SELECT * FROM t WHERE v == 0x10"),
        Some("v == 0x10".into())
    );
    assert_eq!(
        filter("SELECT * FROM t WHERE v = 1 -- a comment"),
        Some("v = 1 -- a comment".into())
    );
    assert_eq!(
        filter("SELECT * FROM t WHERE max(v, 2) = 2 AND min(v, 0) = 0"),
        Some("max(v, 2) = 2 AND min(v, 0) = 0".into())
    );
}

#[test]
fn the_alias_the_query_gives_the_table_is_kept() {
    let p = push("SELECT x.v FROM t AS x WHERE x.v = 1").unwrap();
    assert_eq!(p.alias.as_deref(), Some("x"));
    assert_eq!(p.filter.as_deref(), Some("x.v = 1"));
    assert_eq!(
        p.range_select(&["\"id\"".into(), "\"v\"".into()], Some("\"id\" >= 10")),
        "SELECT \"id\", \"v\" FROM \"t\" AS \"x\" WHERE (\"id\" >= 10) AND (x.v = 1\n)"
    );
    assert_eq!(
        filter("SELECT * FROM t WHERE t.v = 1").as_deref(),
        Some("t.v = 1")
    );
    // Another qualifier: not this table.
    assert_eq!(push("SELECT * FROM t AS x WHERE y.v = 1"), None);
    assert_eq!(push("SELECT * FROM t AS x WHERE main.x.v = 1"), None);
}

#[test]
fn parameters_are_written_in_as_literals() {
    let p = Params::Positional(vec![int(7), text("o'k")]);
    assert_eq!(
        push_with("SELECT * FROM t WHERE v = ? AND s = ?", p).and_then(|p| p.filter),
        Some("v =  (7)  AND s =  ('o''k')".into())
    );
    // Placed by characters, not bytes, over several lines.
    let p = Params::Positional(vec![int(7)]);
    assert_eq!(
        push_with("SELECT 'żółw'\nFROM t\nWHERE s = 'żółw' AND\n  v = ?", p).and_then(|p| p.filter),
        Some("s = 'żółw' AND\n  v =  (7)".into())
    );
    // Numbered as SQLite numbers them: the projection's `?` is the first.
    let p = Params::Positional(vec![int(1), int(2)]);
    assert_eq!(
        push_with("SELECT ?, v FROM t WHERE v = ?", p).and_then(|p| p.filter),
        Some("v =  (2)".into())
    );
    let p = Params::Positional(vec![int(-5)]);
    assert_eq!(
        push_with("SELECT * FROM t WHERE v = -?1", p).and_then(|p| p.filter),
        Some("v = - (-5)".into())
    );
    let p = Params::Named(vec![
        ("v".into(), Value::Blob(vec![0, 255])),
        ("n".into(), Value::Null),
    ]);
    assert_eq!(
        push_with("SELECT * FROM t WHERE b = :v OR b = :n", p).and_then(|p| p.filter),
        Some("b =  (X'00FF')  OR b =  (NULL)".into())
    );
    let p = Params::Named(vec![("v".into(), int(3)), ("w".into(), int(4))]);
    assert_eq!(
        push_with("SELECT * FROM t WHERE v = @v OR v = $w", p.clone()).and_then(|p| p.filter),
        Some("v =  (3)  OR v =  (4)".into())
    );
    // One name under two sigils: which value binds is not ours to guess.
    assert_eq!(push_with("SELECT * FROM t WHERE v = @v OR v = $v", p), None);
    let p = Params::Positional(vec![int(i64::MIN)]);
    assert_eq!(
        push_with("SELECT * FROM t WHERE v > ?", p).and_then(|p| p.filter),
        Some("v >  (-9223372036854775807 - 1)".into())
    );
}

#[test]
fn parameters_without_an_exact_literal_push_nothing() {
    let sql = "SELECT * FROM t WHERE v = ? ORDER BY id LIMIT 2";
    assert_eq!(
        push_with(sql, Params::Positional(vec![Value::Real(0.1)])),
        None
    );
    assert_eq!(push_with(sql, Params::Positional(vec![text("a\0b")])), None);
    assert_eq!(push_with(sql, Params::None), None);
    assert_eq!(push_with(sql, Params::Positional(vec![])), None);
}

#[test]
fn queries_reading_more_than_one_table_push_nothing() {
    for sql in [
        "SELECT * FROM t JOIN u ON t.id = u.id WHERE t.v = 1",
        "SELECT * FROM t, u WHERE t.v = 1",
        "SELECT * FROM t WHERE v IN (SELECT v FROM u)",
        "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
        "SELECT * FROM t WHERE v = (SELECT max(v) FROM t)",
        "SELECT (SELECT count(*) FROM u), v FROM t WHERE v = 1",
        "SELECT * FROM t WHERE v = 1 ORDER BY (SELECT 1), id LIMIT 1",
        "WITH c AS (SELECT 1) SELECT * FROM t WHERE v = 1",
        "SELECT v FROM t WHERE v = 1 UNION SELECT v FROM u WHERE v = 2",
        "SELECT * FROM (SELECT * FROM t) WHERE v = 1",
        "SELECT * FROM json_each('[1]') WHERE value = 1",
        "SELECT * FROM main.t WHERE v = 1",
        "INSERT INTO t SELECT * FROM u WHERE v = 1",
        "DELETE FROM t WHERE v = 1",
        "not sql at all",
    ] {
        assert_eq!(push(sql), None, "{sql}");
    }
}

#[test]
fn conditions_that_could_mean_otherwise_on_a_group_push_nothing() {
    for sql in [
        // Aggregates and windows: SQLite refuses them in WHERE.
        "SELECT * FROM t WHERE count(*) > 1",
        "SELECT * FROM t WHERE max(v) > 1",
        "SELECT * FROM t WHERE row_number() OVER () > 1",
        // Not deterministic, or not SQLite's own.
        "SELECT * FROM t WHERE random() > 0",
        "SELECT * FROM t WHERE v < unixepoch()",
        "SELECT * FROM t WHERE date(s) = '2024-01-01'",
        "SELECT * FROM t WHERE s < CURRENT_TIMESTAMP",
        "SELECT * FROM t WHERE my_function(v)",
        "SELECT * FROM t WHERE s REGEXP 'a.*'",
        "SELECT * FROM t WHERE sqlite_version() > '3'",
        // A name the query gives a result column, which the range's
        // SELECT does not have.
        "SELECT v * 2 AS w FROM t WHERE w > 10",
        "SELECT v AS abc FROM t WHERE s = \"abc\"",
        "SELECT v AS [Abc] FROM t WHERE s = 1 OR abc = 2",
    ] {
        assert_eq!(push(sql), None, "{sql}");
    }
    // Without a WHERE or ORDER BY ... LIMIT there is nothing to push.
    assert_eq!(push("SELECT * FROM t"), None);
    assert_eq!(push("SELECT count(*) FROM t"), None);
}

#[test]
fn order_by_with_the_key_and_limit_is_pushed() {
    assert_eq!(
        push("SELECT * FROM t ORDER BY v, id LIMIT 5 OFFSET 3"),
        Some(Pushdown {
            table: "t".into(),
            alias: None,
            filter: None,
            order_limit: Some("ORDER BY v, id\nLIMIT 8".into()),
        })
    );
    assert_eq!(
        order_limit("SELECT id, v FROM t ORDER BY id DESC LIMIT 3, 5"),
        Some("ORDER BY id DESC\nLIMIT 8".into())
    );
    assert_eq!(
        push("SELECT v FROM t AS x WHERE v > 1 ORDER BY lower(s) NULLS LAST, x.id LIMIT 2"),
        Some(Pushdown {
            table: "t".into(),
            alias: Some("x".into()),
            filter: Some("v > 1".into()),
            order_limit: Some("ORDER BY lower(s) NULLS LAST, x.id\nLIMIT 2".into()),
        })
    );
    assert_eq!(
        order_limit("SELECT * FROM k ORDER BY key LIMIT 1"),
        Some("ORDER BY key\nLIMIT 1".into())
    );
    let p = Params::Positional(vec![int(4), int(1)]);
    assert_eq!(
        push_with("SELECT * FROM t ORDER BY id LIMIT ? OFFSET ?", p).and_then(|p| p.order_limit),
        Some("ORDER BY id\nLIMIT 5".into())
    );
    // A result column named as a column of the table is still pushed when
    // the ORDER BY does not use the name.
    assert_eq!(
        order_limit("SELECT v AS s FROM t ORDER BY id LIMIT 1"),
        Some("ORDER BY id\nLIMIT 1".into())
    );
}

#[test]
fn order_by_limit_is_not_pushed_unless_safe() {
    for sql in [
        // Ties could be broken otherwise than one database would.
        "SELECT * FROM t ORDER BY v LIMIT 5",
        "SELECT * FROM t ORDER BY id COLLATE nocase LIMIT 5",
        "SELECT * FROM n ORDER BY rowid LIMIT 5",
        "SELECT * FROM t ORDER BY rowid LIMIT 5",
        // No limit, or one that is not a literal count.
        "SELECT * FROM t ORDER BY id",
        "SELECT * FROM t ORDER BY id LIMIT -1",
        "SELECT * FROM t ORDER BY id LIMIT 2.0",
        "SELECT * FROM t ORDER BY id LIMIT 1 + 1",
        "SELECT * FROM t ORDER BY id LIMIT 9223372036854775807 OFFSET 1",
        "SELECT * FROM t LIMIT 5",
        // Rows are merged or dropped between WHERE and ORDER BY.
        "SELECT DISTINCT v, id FROM t ORDER BY id LIMIT 5",
        "SELECT id, count(*) FROM t GROUP BY id ORDER BY id LIMIT 5",
        "SELECT id FROM t GROUP BY id HAVING v > 1 ORDER BY id LIMIT 5",
        "SELECT count(*), id FROM t ORDER BY id LIMIT 5",
        "SELECT max(v), id FROM t ORDER BY id LIMIT 5",
        "SELECT id, row_number() OVER (ORDER BY v) FROM t ORDER BY id LIMIT 5",
        // Terms that mean a result column.
        "SELECT v, id FROM t ORDER BY 2 LIMIT 5",
        "SELECT v, id FROM t ORDER BY 1, id LIMIT 5",
        "SELECT -id AS id FROM t ORDER BY id LIMIT 5",
        "SELECT v AS w, id FROM t ORDER BY w, id LIMIT 5",
        // Parameters in ORDER BY, non-scalar functions.
        "SELECT * FROM t ORDER BY v + ?, id LIMIT 5",
        "SELECT * FROM t ORDER BY random(), id LIMIT 5",
    ] {
        assert_eq!(order_limit(sql), None, "{sql}");
    }
    let p = Params::Positional(vec![text("5")]);
    assert_eq!(push_with("SELECT * FROM t ORDER BY id LIMIT ?", p), None);
    // A WHERE that cannot be pushed takes the limit with it.
    assert_eq!(
        push("SELECT * FROM t WHERE random() > 0 ORDER BY id LIMIT 5"),
        None
    );
}

#[test]
fn a_clause_that_does_not_cut_cleanly_pushes_nothing() {
    // `window` is a column here, but also opens a clause.
    assert_eq!(push("SELECT * FROM t WHERE window = 1"), None);
    assert_eq!(
        filter("SELECT * FROM t WHERE \"window\" = 1").as_deref(),
        Some("\"window\" = 1")
    );
}

/// The rows a statement returns on `db`, as a group would hand them over.
fn rows(db: &Connection, sql: &str) -> (Vec<String>, Vec<Vec<Value>>) {
    let mut stmt = db.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let n = columns.len();
    let values = stmt
        .query_map([], |row| {
            (0..n)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Value::Null,
                        ValueRef::Integer(i) => Value::Integer(i),
                        ValueRef::Real(f) => Value::Real(f),
                        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    (columns, values)
}

const SCHEMA: &str =
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, s TEXT COLLATE NOCASE, b BLOB)";

/// One database holding all of `t`, as the groups together do.
fn source() -> Connection {
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(SCHEMA).unwrap();
    for id in 1..=200i64 {
        let v = if id % 11 == 0 {
            None
        } else {
            Some(id * 7 % 23)
        };
        let s = ["ant", "Bee", "cat", "", "bee"][(id % 5) as usize];
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id, v, s, vec![(id % 3) as u8]],
        )
        .unwrap();
    }
    db
}

/// `stmt` answered over the rows gathered from three ranges of `t`, with
/// `push` applied to each range's SELECT (none: whole ranges), and the
/// number of rows copied.
fn gathered(db: &Connection, stmt: &Statement, push: Option<&Pushdown>) -> (StmtResult, usize) {
    let columns: Vec<String> = ["id", "v", "s", "b"]
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    let ranges = [
        Some("\"id\" < 60"),
        Some("\"id\" >= 60 AND \"id\" < 130"),
        Some("\"id\" >= 130"),
    ];
    let mut g = Gather::new(1 << 20).unwrap();
    g.schema(SCHEMA).unwrap();
    let mut copied = 0;
    for key in ranges {
        let sql = match push {
            Some(p) => p.range_select(&columns, key),
            None => format!(
                "SELECT {} FROM t WHERE {}",
                columns.join(", "),
                key.unwrap()
            ),
        };
        let (names, values) = rows(db, &sql);
        copied += values.len();
        g.add_rows("t", &names, values).unwrap();
    }
    (g.query(stmt, 10_000), copied)
}

/// Pushed or not, every query gets the answer it got with whole ranges.
#[test]
fn pushed_queries_answer_as_over_whole_ranges() {
    let db = source();
    let cases: &[(&str, Params, usize)] = &[
        ("SELECT * FROM t WHERE v = 7", Params::None, 9),
        (
            "SELECT id FROM t WHERE s = 'bee' ORDER BY id",
            Params::None,
            80,
        ),
        (
            "SELECT count(*), sum(v) FROM t WHERE v > 10 OR v IS NULL",
            Params::None,
            114,
        ),
        (
            "SELECT s, count(*) FROM t WHERE v < ?1 GROUP BY s HAVING count(*) > 1 ORDER BY s",
            Params::Positional(vec![int(5)]),
            38,
        ),
        (
            "SELECT x.id FROM t x WHERE x.b = :b ORDER BY x.id DESC",
            Params::Named(vec![("b".into(), Value::Blob(vec![2]))]),
            67,
        ),
        ("SELECT * FROM t WHERE v = 0x10 -- sixteen", Params::None, 7),
        (
            "SELECT id, v FROM t ORDER BY v DESC, id LIMIT 4 OFFSET 3",
            Params::None,
            21,
        ),
        (
            "SELECT id, v FROM t ORDER BY v, id DESC LIMIT 2, 3",
            Params::None,
            15,
        ),
        (
            "SELECT id, s FROM t WHERE s > 'a' ORDER BY s, id LIMIT 5",
            Params::None,
            15,
        ),
        ("SELECT id FROM t ORDER BY id DESC LIMIT 0", Params::None, 0),
        (
            "SELECT id, lag(v) OVER (ORDER BY id) FROM t WHERE v IN (1, 2, 3)",
            Params::None,
            23,
        ),
        // Not pushed: whole ranges.
        ("SELECT id, v FROM t ORDER BY v LIMIT 4", Params::None, 200),
        ("SELECT v AS w FROM t WHERE w > 20", Params::None, 200),
        (
            "SELECT * FROM t WHERE v = ?",
            Params::Positional(vec![Value::Real(7.0)]),
            200,
        ),
    ];
    for (sql, params, want_copied) in cases {
        let stmt = Statement {
            sql: (*sql).into(),
            params: params.clone(),
        };
        let (whole, all) = gathered(&db, &stmt, None);
        assert_eq!(all, 200);
        let push = pushdown(&stmt, &pk);
        let (pushed, copied) = gathered(&db, &stmt, push.as_ref());
        assert!(matches!(whole, StmtResult::Rows { .. }), "{sql}: {whole:?}");
        assert_eq!(pushed, whole, "{sql} with {push:?}");
        assert_eq!(copied, *want_copied, "{sql} with {push:?}");
    }
}
