//! Rewrites of an INSERT the router needs before it can route it.

use crate::keys::parse_one;
use sqlparser::ast::{Ident, ObjectName, SetExpr, Statement as Ast};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

/// A keyless `INSERT ... VALUES` into a split table, given keys from its
/// last range `[start, ∞)`: row `i` gets
/// `(SELECT coalesce(max(pk) + 1, start) FROM t WHERE pk >= start) + i`.
/// The group owning that range holds every key at or above `start`, so
/// the keys are unique, and SQLite evaluates the subquery once per
/// statement, before any row is inserted.
pub fn assign_keys(sql: &str, table: &str, pk: &str, start: i64) -> Result<String, String> {
    let mut ast = parse_one(sql).ok_or("the INSERT does not parse")?;
    let Ast::Insert(insert) = &mut ast else {
        return Err("not an INSERT".into());
    };
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let next = format!(
        "(SELECT coalesce(max({pk}) + 1, {start}) FROM {t} WHERE {pk} >= {start})",
        pk = q(pk),
        t = q(table)
    );
    let rows = match insert.source.as_deref_mut().map(|s| s.body.as_mut()) {
        Some(SetExpr::Values(v)) => &mut v.rows,
        _ => return Err("only INSERT ... VALUES can be given keys".into()),
    };
    for (i, row) in rows.iter_mut().enumerate() {
        let expr = Parser::new(&SQLiteDialect {})
            .try_with_sql(&format!("{next} + {i}"))
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| e.to_string())?;
        row.content.push(expr);
    }
    insert
        .columns
        .push(ObjectName::from(vec![Ident::with_quote('"', pk)]));
    Ok(ast.to_string())
}

/// An `INSERT INTO t VALUES (...)` given its column list (the table's
/// columns in order, as `INSERT` without a list fills them).
pub fn name_columns(sql: &str, columns: &[String]) -> Result<String, String> {
    let mut ast = parse_one(sql).ok_or("the INSERT does not parse")?;
    let Ast::Insert(insert) = &mut ast else {
        return Err("not an INSERT".into());
    };
    if !insert.columns.is_empty() {
        return Ok(sql.to_owned());
    }
    insert.columns = columns
        .iter()
        .map(|c| ObjectName::from(vec![Ident::with_quote('"', c)]))
        .collect();
    Ok(ast.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn assigned_keys_are_unique_and_in_the_last_range() {
        let db = Connection::open_in_memory().unwrap();
        db.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (5, 'low');",
        )
        .unwrap();
        let sql = assign_keys(
            "INSERT INTO t (v) VALUES ('a'), ('b'), ('c')",
            "t",
            "id",
            100,
        )
        .unwrap();
        db.execute_batch(&sql).unwrap();
        db.execute_batch(&sql).unwrap();
        let ids: Vec<i64> = db
            .prepare("SELECT id FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, [5, 100, 101, 102, 103, 104, 105]);
    }

    #[test]
    fn named_columns_keep_the_values() {
        let sql =
            name_columns("INSERT INTO t VALUES (1, 'x')", &["id".into(), "v".into()]).unwrap();
        assert_eq!(sql, "INSERT INTO t (\"id\", \"v\") VALUES (1, 'x')");
        assert!(assign_keys("INSERT INTO t (v) SELECT 1", "t", "id", 1).is_err());
    }
}
