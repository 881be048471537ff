use paxsql_types::{Params, Statement, Value};

use super::*;

/// The schema the tests run against: `t` and `u` keyed by `id`, `k` by
/// `Key`, `n` without an integer primary key.
fn pk(table: &str) -> Option<String> {
    match table {
        "t" | "u" => Some("id".into()),
        "k" => Some("Key".into()),
        _ => None,
    }
}

fn shape_of(sql: &str) -> Shape {
    shape(&Statement::new(sql), &pk).unwrap()
}

fn shape_with(sql: &str, params: Params) -> Shape {
    let stmt = Statement {
        sql: sql.into(),
        params,
    };
    shape(&stmt, &pk).unwrap()
}

fn keys_of(shape: Shape) -> Keys {
    match shape {
        Shape::Write { keys, .. } | Shape::Read { keys, .. } => keys,
        other => panic!("no keys: {other:?}"),
    }
}

/// The keys of `SELECT * FROM t WHERE <condition>`.
fn where_keys(condition: &str) -> Keys {
    keys_of(shape_of(&format!("SELECT * FROM t WHERE {condition}")))
}

fn points(keys: &[i64]) -> Keys {
    keys.iter()
        .fold(Keys::none(), |all, k| all.union(Keys::point(*k)))
}

#[test]
fn comparisons_with_the_key() {
    assert_eq!(where_keys("id = 5"), Keys::point(5));
    assert_eq!(where_keys("5 = id"), Keys::point(5));
    assert_eq!(where_keys("t.id = -5"), Keys::point(-5));
    assert_eq!(where_keys("\"ID\" = +7"), Keys::point(7));
    assert_eq!(where_keys("id = 5.0"), Keys::point(5));
    assert_eq!(
        where_keys("id IN (3, 1, 2, 9)"),
        Keys::between(1, 3).union(Keys::point(9))
    );
    assert_eq!(where_keys("id BETWEEN 10 AND 20"), Keys::between(10, 20));
    assert_eq!(where_keys("id BETWEEN 20 AND 10"), Keys::none());
    assert_eq!(where_keys("id > 10"), Keys::between(11, i64::MAX));
    assert_eq!(where_keys("id >= 10"), Keys::between(10, i64::MAX));
    assert_eq!(where_keys("id < 10"), Keys::between(i64::MIN, 9));
    assert_eq!(where_keys("id <= 10"), Keys::between(i64::MIN, 10));
    assert_eq!(where_keys("10 < id"), Keys::between(11, i64::MAX));
    assert_eq!(where_keys("10 >= id"), Keys::between(i64::MIN, 10));
    assert_eq!(where_keys("id > 9223372036854775807"), Keys::none());
    assert_eq!(where_keys("id < -9223372036854775807 - 1"), Keys::All);
    assert_eq!(where_keys("(id = 1)"), Keys::point(1));
}

#[test]
fn rowid_names_are_the_key_too() {
    assert_eq!(where_keys("rowid = 1"), Keys::point(1));
    assert_eq!(where_keys("_ROWID_ = 2"), Keys::point(2));
    assert_eq!(where_keys("oid = 3"), Keys::point(3));
    let n = keys_of(shape_of("SELECT * FROM n WHERE rowid = 4 AND id = 5"));
    assert_eq!(
        n,
        Keys::point(4),
        "n has no integer primary key: id is a column"
    );
    let k = keys_of(shape_of("SELECT * FROM k WHERE KEY = 6"));
    assert_eq!(k, Keys::point(6));
}

#[test]
fn and_intersects_and_or_unites() {
    assert_eq!(where_keys("id > 5 AND id < 10"), Keys::between(6, 9));
    assert_eq!(where_keys("id = 1 OR id = 3"), points(&[1, 3]));
    assert_eq!(where_keys("id = 1 AND name = 'x'"), Keys::point(1));
    assert_eq!(
        where_keys("name = 'x' AND id IN (1, 2)"),
        Keys::between(1, 2)
    );
    assert_eq!(
        where_keys("(id = 1 OR id = 2) AND id <> 2"),
        Keys::between(1, 2)
    );
    assert_eq!(where_keys("id = 1 AND id = 2"), Keys::none());
    assert_eq!(
        where_keys("(id < 0 OR id > 100) AND (id = -5 OR id = 50)"),
        Keys::point(-5)
    );
}

#[test]
fn what_is_not_understood_widens_to_all() {
    for condition in [
        "id = 1 OR name = 'x'",
        "NOT id = 1",
        "id <> 1",
        "id NOT IN (1, 2)",
        "id NOT BETWEEN 1 AND 2",
        "id = '5'",
        "id = NULL",
        "id = 5.5",
        "id = 1 + 1",
        "id IN (1, x)",
        "id = abs(-1)",
        "id = 9223372036854775808",
        "name = 'x'",
        "other.id = 1",
        "id LIKE '1'",
        "id IS NULL",
        "1",
    ] {
        let sql = format!("SELECT * FROM t WHERE {condition}");
        assert_eq!(
            shape_of(&sql),
            Shape::Read {
                tables: vec!["t".into()],
                keys: Keys::All
            },
            "{sql}"
        );
    }
    assert_eq!(keys_of(shape_of("SELECT * FROM t")), Keys::All);
}

#[test]
fn parameters_resolve_by_sqlite_numbering() {
    let positional =
        |sql: &str, values: Vec<Value>| keys_of(shape_with(sql, Params::Positional(values)));
    let ints = |v: &[i64]| v.iter().map(|i| Value::Integer(*i)).collect::<Vec<_>>();
    assert_eq!(
        positional("SELECT * FROM t WHERE id = ?", ints(&[4])),
        Keys::point(4)
    );
    assert_eq!(
        positional("SELECT * FROM t WHERE name = ? AND id = ?", ints(&[0, 8])),
        Keys::point(8)
    );
    assert_eq!(
        positional("SELECT * FROM t WHERE id = ?2 AND name = ?1", ints(&[0, 9])),
        Keys::point(9)
    );
    // A bare `?` after `?3` is parameter 4.
    assert_eq!(
        positional(
            "SELECT * FROM t WHERE a = ?3 AND id = ?",
            ints(&[1, 2, 3, 4])
        ),
        Keys::point(4)
    );
    // A named parameter takes a number too; repeated, it keeps it.
    assert_eq!(
        positional(
            "SELECT * FROM t WHERE a = :x AND b = :x AND id = ?",
            ints(&[1, 2])
        ),
        Keys::point(2)
    );
    // Numbering follows the text across lines.
    assert_eq!(
        positional(
            "SELECT * FROM t\nWHERE a = ?\n  AND id BETWEEN ? AND ?",
            ints(&[0, 3, 6])
        ),
        Keys::between(3, 6)
    );
    assert_eq!(
        positional("SELECT * FROM t WHERE id = ?", vec![Value::Real(3.0)]),
        Keys::point(3)
    );
    for unusable in [
        vec![Value::Real(3.5)],
        vec![Value::Text("3".into())],
        vec![Value::Null],
        vec![],
    ] {
        assert_eq!(
            positional("SELECT * FROM t WHERE id = ?", unusable.clone()),
            Keys::All,
            "{unusable:?}"
        );
    }
    assert_eq!(
        positional("SELECT * FROM t WHERE id = ?0", ints(&[1])),
        Keys::All
    );
}

#[test]
fn named_parameters_resolve_by_name() {
    let named = |sql: &str, pairs: &[(&str, Value)]| {
        let pairs = pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        keys_of(shape_with(sql, Params::Named(pairs)))
    };
    for sigil in [":", "@", "$"] {
        let sql = format!("SELECT * FROM t WHERE id = {sigil}k");
        assert_eq!(
            named(&sql, &[("k", Value::Integer(3))]),
            Keys::point(3),
            "{sigil}"
        );
    }
    assert_eq!(
        named("DELETE FROM t WHERE id = :k", &[(":k", Value::Integer(3))]),
        Keys::point(3)
    );
    assert_eq!(
        named("DELETE FROM t WHERE id = :k", &[("j", Value::Integer(3))]),
        Keys::All
    );
    assert_eq!(
        named("DELETE FROM t WHERE id = ?", &[("k", Value::Integer(3))]),
        Keys::All
    );
    // `:k` and `$k` are two parameters; paxsql binds the name to one.
    assert_eq!(
        named(
            "DELETE FROM t WHERE id = :k OR id = $k",
            &[("k", Value::Integer(3))]
        ),
        Keys::All
    );
}

#[test]
fn updates_and_deletes_take_their_where_keys() {
    assert_eq!(
        shape_of("UPDATE t SET name = 'x' WHERE id = 3"),
        Shape::Write {
            table: "t".into(),
            keys: Keys::point(3),
            insert: None
        }
    );
    // Setting the key moves the row; the keys are still the WHERE's.
    assert_eq!(
        keys_of(shape_of("UPDATE t SET id = 100 WHERE id = 3")),
        Keys::point(3)
    );
    assert_eq!(
        keys_of(shape_of("UPDATE OR IGNORE t AS x SET a = 1 WHERE x.id < 0")),
        Keys::between(i64::MIN, -1)
    );
    assert_eq!(
        shape_of("DELETE FROM \"T\" WHERE id IN (1, 2) RETURNING *"),
        Shape::Write {
            table: "t".into(),
            keys: Keys::between(1, 2),
            insert: None
        }
    );
    assert_eq!(keys_of(shape_of("DELETE FROM t")), Keys::All);
    assert_eq!(
        keys_of(shape_of("DELETE FROM main.t WHERE t.id = 4")),
        Keys::point(4)
    );
}

#[test]
fn writes_with_subqueries_or_ctes_touch_all_keys() {
    for sql in [
        "DELETE FROM t WHERE id IN (SELECT id FROM u)",
        "DELETE FROM t WHERE id = 1 AND EXISTS (SELECT 1 FROM u)",
        "UPDATE t SET a = (SELECT max(a) FROM u) WHERE id = 1",
        "UPDATE t SET a = u.a FROM u WHERE t.id = 1 AND u.id = t.id",
        "WITH c AS (SELECT 1) DELETE FROM t WHERE id = 1",
        "INSERT INTO t (id, a) VALUES (1, (SELECT max(a) FROM u))",
    ] {
        assert_eq!(keys_of(shape_of(sql)), Keys::All, "{sql}");
    }
    match shape_of("WITH c AS (SELECT 1) INSERT INTO t (a) SELECT * FROM c") {
        Shape::Write {
            table,
            keys: Keys::All,
            insert:
                Some(InsertShape::Keyless {
                    rows: KeylessRows::Other,
                }),
        } => {
            assert_eq!(table, "t")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inserts_naming_the_key_are_keyed() {
    assert_eq!(
        shape_of("INSERT INTO t (id, name) VALUES (1, 'a'), (5, 'b'), (-2, 'c')"),
        Shape::Write {
            table: "t".into(),
            keys: points(&[-2, 1, 5]),
            insert: Some(InsertShape::Keyed),
        }
    );
    assert_eq!(
        keys_of(shape_with(
            "REPLACE INTO t (name, rowid) VALUES (?, ?)",
            Params::Positional(vec![Value::Text("a".into()), Value::Integer(7)])
        )),
        Keys::point(7)
    );
    assert_eq!(
        keys_of(shape_of(
            "INSERT INTO t (id, a) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET a = excluded.a"
        )),
        Keys::point(1)
    );
    assert_eq!(
        keys_of(shape_of("INSERT OR REPLACE INTO k (key) VALUES (3)")),
        Keys::point(3)
    );
    for sql in [
        "INSERT INTO t (id) VALUES (1), (NULL)",
        "INSERT INTO t (id) VALUES ('1')",
        "INSERT INTO t (id) VALUES (1 + 1)",
        "INSERT INTO t (id, a) SELECT id, a FROM u",
    ] {
        match shape_of(sql) {
            Shape::Write {
                keys: Keys::All,
                insert: Some(InsertShape::Keyed),
                ..
            } => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
}

#[test]
fn inserts_without_the_key_are_keyless() {
    let insert = |sql: &str| match shape_of(sql) {
        Shape::Write {
            keys,
            insert: Some(insert),
            ..
        } => {
            assert_eq!(keys, Keys::All, "{sql}");
            insert
        }
        other => panic!("{sql}: {other:?}"),
    };
    let keyless = |rows| InsertShape::Keyless { rows };
    assert_eq!(
        insert("INSERT INTO t (name) VALUES ('a'), ('b')"),
        keyless(KeylessRows::Values(2))
    );
    assert_eq!(
        insert("INSERT INTO t (name) SELECT name FROM u"),
        keyless(KeylessRows::Other)
    );
    assert_eq!(
        insert("INSERT INTO n (id) VALUES (1)"),
        keyless(KeylessRows::Values(1))
    );
    assert_eq!(
        insert("INSERT INTO t DEFAULT VALUES"),
        InsertShape::ColumnsOmitted {
            rows: KeylessRows::Other
        }
    );
    assert_eq!(
        insert("INSERT INTO t VALUES (1, 'a')"),
        InsertShape::ColumnsOmitted {
            rows: KeylessRows::Values(1)
        }
    );
}

#[test]
fn schema_changes_and_integer_primary_keys() {
    let created = |sql: &str| match shape_of(sql) {
        Shape::Schema(SchemaChange::CreateTable { table, pk }) => (table, pk),
        other => panic!("{sql}: {other:?}"),
    };
    let id = Some("id".to_owned());
    assert_eq!(
        created("CREATE TABLE T (id INTEGER PRIMARY KEY, a TEXT)"),
        ("t".into(), id.clone())
    );
    assert_eq!(
        created("CREATE TABLE t (id integer primary key autoincrement)").1,
        id
    );
    assert_eq!(
        created("CREATE TABLE t (ID INTEGER NOT NULL PRIMARY KEY)").1,
        Some("id".into())
    );
    assert_eq!(
        created("CREATE TABLE t (a TEXT, id INTEGER, PRIMARY KEY (id))").1,
        id
    );
    assert_eq!(
        created("CREATE TABLE IF NOT EXISTS main.t (id INTEGER, a, PRIMARY KEY (id DESC))").1,
        id
    );
    for no_alias in [
        "CREATE TABLE t (id INT PRIMARY KEY)",
        "CREATE TABLE t (id BIGINT PRIMARY KEY)",
        "CREATE TABLE t (id INTEGER, a, PRIMARY KEY (id, a))",
        "CREATE TABLE t (id INT, PRIMARY KEY (id))",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, a) WITHOUT ROWID",
        "CREATE TABLE t (id INTEGER UNIQUE)",
        "CREATE TABLE t (a, b)",
        "CREATE TABLE t AS SELECT 1 AS id",
    ] {
        assert_eq!(created(no_alias).1, None, "{no_alias}");
    }
    assert_eq!(
        shape_of("DROP TABLE IF EXISTS T"),
        Shape::Schema(SchemaChange::DropTable { table: "t".into() })
    );
    assert_eq!(
        shape_of("ALTER TABLE t RENAME TO U"),
        Shape::Schema(SchemaChange::AlterTable {
            table: "t".into(),
            renamed_to: Some("u".into())
        })
    );
    assert_eq!(
        shape_of("ALTER TABLE t ADD COLUMN c TEXT"),
        Shape::Schema(SchemaChange::AlterTable {
            table: "t".into(),
            renamed_to: None
        })
    );
    for other in [
        "CREATE INDEX i ON t (a)",
        "CREATE UNIQUE INDEX IF NOT EXISTS i ON t (a)",
        "DROP INDEX i",
        "CREATE VIEW v AS SELECT * FROM t",
        "DROP VIEW v",
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN DELETE FROM u; END",
        "DROP TRIGGER tr",
    ] {
        assert_eq!(
            shape_of(other),
            Shape::Schema(SchemaChange::Other),
            "{other}"
        );
    }
}

#[test]
fn reads_list_every_table_they_reference() {
    let tables = |sql: &str| match shape_of(sql) {
        Shape::Read { tables, .. } => tables,
        other => panic!("{sql}: {other:?}"),
    };
    assert_eq!(tables("SELECT 1"), Vec::<String>::new());
    assert_eq!(tables("VALUES (1), (2)"), Vec::<String>::new());
    assert_eq!(
        tables("SELECT * FROM T JOIN u ON u.id = T.id, t"),
        ["t", "u"]
    );
    assert_eq!(
        tables("SELECT * FROM t WHERE a IN (SELECT a FROM u)"),
        ["t", "u"]
    );
    assert_eq!(
        tables("SELECT (SELECT count(*) FROM u), * FROM t"),
        ["u", "t"]
    );
    assert_eq!(
        tables("SELECT * FROM t WHERE EXISTS (SELECT 1 FROM n WHERE n.a = t.a)"),
        ["t", "n"]
    );
    assert_eq!(
        tables("SELECT a FROM t UNION ALL SELECT a FROM u EXCEPT SELECT a FROM n"),
        ["t", "u", "n"]
    );
    assert_eq!(tables("SELECT * FROM (SELECT * FROM main.u) AS d"), ["u"]);
    assert_eq!(
        tables("WITH c AS (SELECT * FROM u) SELECT * FROM c JOIN t"),
        ["u", "t"]
    );
    assert_eq!(
        tables("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 5) SELECT * FROM r"),
        Vec::<String>::new()
    );
    // A CTE name is only a CTE inside the query that defines it.
    assert_eq!(
        tables("SELECT * FROM c WHERE a IN (WITH c AS (SELECT 1) SELECT * FROM c)"),
        ["c"]
    );
    assert_eq!(
        tables("SELECT * FROM json_each('[1, 2]')"),
        Vec::<String>::new()
    );
    assert_eq!(
        tables("SELECT * FROM \"t\" t1 LEFT JOIN t t2 ON t1.id = t2.id"),
        ["t"]
    );
}

#[test]
fn reads_of_one_table_take_their_where_keys() {
    let read = |sql: &str| keys_of(shape_of(sql));
    assert_eq!(
        read("SELECT a FROM t AS x WHERE x.id = 3 ORDER BY a LIMIT 1"),
        Keys::point(3)
    );
    assert_eq!(
        read("SELECT count(*) FROM t WHERE id BETWEEN 1 AND 9 GROUP BY a"),
        Keys::between(1, 9)
    );
    assert_eq!(read("SELECT * FROM t WHERE id = (SELECT 3)"), Keys::All);
    for all in [
        "SELECT * FROM t JOIN u ON t.id = u.id WHERE t.id = 1",
        "SELECT * FROM t, u WHERE t.id = 1",
        "SELECT * FROM t WHERE id = 1 AND a IN (SELECT a FROM u)",
        "SELECT * FROM t WHERE id = 1 UNION SELECT * FROM t WHERE id = 2",
        "WITH c AS (SELECT * FROM t) SELECT * FROM c WHERE id = 1",
        "SELECT * FROM (SELECT * FROM t) WHERE id = 1",
        "SELECT * FROM t t1 JOIN t t2 WHERE t1.id = 1",
    ] {
        assert_eq!(read(all), Keys::All, "{all}");
    }
}

#[test]
fn other_statements_and_unparsable_text_are_other() {
    for sql in [
        "PRAGMA table_info(t)",
        "EXPLAIN QUERY PLAN SELECT * FROM t WHERE id = 1",
        "VACUUM",
        "ANALYZE",
        "SELECT 1; SELECT 2",
        "",
        "SELEC 1",
        "SELECT 1 END",
        // Valid SQLite that sqlparser does not parse: run everywhere.
        "SELECT * FROM t WHERE id IS 1",
    ] {
        assert_eq!(shape_of(sql), Shape::Other, "{sql}");
    }
    assert_eq!(
        keys_of(shape_of("DELETE FROM t WHERE id = 1;;")),
        Keys::point(1)
    );
}

#[test]
fn text_nested_too_deeply_is_other_and_does_not_overflow() {
    let deep = format!(
        "SELECT * FROM t WHERE id = 1{}",
        " OR id = 1".repeat(50_000)
    );
    assert_eq!(shape_of(&deep), Shape::Other);
    let parens = format!("SELECT {}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(shape_of(&parens), Shape::Other);
    // Just under the bound: parsed and walked without overflowing a test
    // thread's stack.
    let shallow = format!("SELECT * FROM t WHERE id = 0{}", " OR id = 1".repeat(480));
    assert_eq!(keys_of(shape_of(&shallow)), Keys::between(0, 1));
    let long_list = format!("DELETE FROM t WHERE id IN (0{})", ", 1".repeat(50_000));
    assert_eq!(keys_of(shape_of(&long_list)), Keys::between(0, 1));
}
