//! Loading a SQLite database file into a cluster (`POST /db/load`).
//!
//! The file is turned into ordinary statements — drop and recreate each of
//! its tables, insert its rows with bound parameters, then its indexes,
//! triggers and views — that go through the log as one all-or-nothing
//! write. Every replica therefore loads it the same way, with the same
//! deduplication and determinism as any other write, and no replica ever
//! needs the file itself. Tables of the cluster that the file does not
//! have are left alone.

use paxsql_types::{Params, Statement, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

/// The statements that load `image` (a SQLite database file's bytes).
pub fn image_to_statements(image: &[u8]) -> Result<Vec<Statement>, String> {
    let dir = tempfile_dir()?;
    let path = dir.join("load.sqlite");
    std::fs::write(&path, image).map_err(|e| format!("staging the file: {e}"))?;
    let result = statements_from(&path);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "paxsql-load-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("staging dir: {e}"))?;
    Ok(dir)
}

fn statements_from(path: &std::path::Path) -> Result<Vec<Statement>, String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("not a SQLite database: {e}"))?;
    let bad = |e: rusqlite::Error| format!("not a readable SQLite database: {e}");
    let objects: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_schema \
             WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
               AND name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
               AND tbl_name NOT LIKE '\\_paxsql\\_%' ESCAPE '\\' \
             ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid",
        )
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(bad)?;
    let mut out = Vec::new();
    for (kind, name, sql) in &objects {
        if kind == "table" {
            out.push(Statement::new(format!(
                "DROP TABLE IF EXISTS {}",
                quote(name)
            )));
            out.push(Statement::new(sql.clone()));
            copy_rows(&conn, name, &mut out).map_err(bad)?;
        }
    }
    for (kind, name, sql) in &objects {
        if kind != "table" {
            out.push(Statement::new(format!(
                "DROP {} IF EXISTS {}",
                kind.to_ascii_uppercase(),
                quote(name)
            )));
            out.push(Statement::new(sql.clone()));
        }
    }
    if out.is_empty() {
        return Err("the database file has no tables".into());
    }
    Ok(out)
}

fn copy_rows(conn: &Connection, table: &str, out: &mut Vec<Statement>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM {}", quote(table)))?;
    let ncols = stmt.column_count();
    let placeholders = vec!["?"; ncols].join(", ");
    let insert = format!("INSERT INTO {} VALUES ({placeholders})", quote(table));
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(ncols);
        for i in 0..ncols {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Integer(v),
                ValueRef::Real(v) => Value::Real(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            });
        }
        out.push(Statement {
            sql: insert.clone(),
            params: Params::Positional(values),
        });
    }
    Ok(())
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
