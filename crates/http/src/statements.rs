//! Request bodies: rqlite's JSON array of statements, each a string or an
//! array `[sql, params...]`, into [`Statement`]s.
//!
//! Errors are strings meant for the client: they name the statement (and
//! parameter) by its 1-based position and say what was expected.

use paxsql_types::{Params, Statement, Value};
use serde_json::Value as Json;

/// An example to put in error messages.
const EXPECTED_BODY: &str =
    r#"a JSON array of statements, e.g. ["SELECT 1"] or [["SELECT * FROM t WHERE id = ?", 1]]"#;

/// Parses a request body into at most `statements_max` statements.
pub(crate) fn parse_body(body: &[u8], statements_max: usize) -> Result<Vec<Statement>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(format!("request body is empty; expected {EXPECTED_BODY}"));
    }
    let text =
        std::str::from_utf8(body).map_err(|e| format!("request body is not valid UTF-8: {e}"))?;
    let json: Json =
        serde_json::from_str(text).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Json::Array(items) = json else {
        return Err(format!(
            "request body must be {EXPECTED_BODY}; got {}",
            kind(&json)
        ));
    };
    if items.is_empty() {
        return Err("request body has no statements: the array is empty".to_owned());
    }
    if items.len() > statements_max {
        return Err(format!(
            "too many statements: {}, at most {statements_max} in one request",
            items.len()
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_statement(item).map_err(|e| format!("statement {}: {e}", i + 1)))
        .collect()
}

/// A statement without parameters, as `GET /db/query?q=` gives it.
pub(crate) fn from_sql(sql: &str) -> Result<Statement, String> {
    if sql.trim().is_empty() {
        return Err("the SQL text is empty".to_owned());
    }
    Ok(Statement::new(sql))
}

/// One element of the body's array.
fn parse_statement(item: &Json) -> Result<Statement, String> {
    match item {
        Json::String(sql) => from_sql(sql),
        Json::Array(parts) => parse_parameterized(parts),
        other => Err(format!(
            "expected a string or an array [sql, params...], got {}",
            kind(other)
        )),
    }
}

/// `[sql]`, `[sql, p1, p2, ...]` or `[sql, {"name": value, ...}]`.
fn parse_parameterized(parts: &[Json]) -> Result<Statement, String> {
    let Some((first, rest)) = parts.split_first() else {
        return Err("empty array; expected [sql, params...]".to_owned());
    };
    let Json::String(sql) = first else {
        return Err(format!(
            "the first element of [sql, params...] must be the SQL text (a string), got {}",
            kind(first)
        ));
    };
    let mut stmt = from_sql(sql)?;
    stmt.params = match rest {
        [] => Params::None,
        [Json::Object(named)] => Params::Named(
            named
                .iter()
                .map(|(name, v)| Ok((name.clone(), named_value(name, v)?)))
                .collect::<Result<_, String>>()?,
        ),
        positional => Params::Positional(
            positional
                .iter()
                .enumerate()
                .map(|(i, v)| positional_value(i + 1, v))
                .collect::<Result<_, String>>()?,
        ),
    };
    Ok(stmt)
}

fn positional_value(n: usize, v: &Json) -> Result<Value, String> {
    if v.is_object() {
        return Err(format!(
            "parameter {n} is an object; named parameters go alone after the SQL: \
             [sql, {{\"name\": value}}]"
        ));
    }
    param_value(v).map_err(|e| format!("parameter {n}: {e}"))
}

fn named_value(name: &str, v: &Json) -> Result<Value, String> {
    param_value(v).map_err(|e| format!("parameter {name:?}: {e}"))
}

/// A parameter: a JSON scalar, or an array of bytes for a BLOB (as rqlite).
fn param_value(v: &Json) -> Result<Value, String> {
    match v {
        Json::Array(bytes) => blob(bytes),
        Json::Object(_) => Err(
            "expected a string, number, boolean, null or an array of bytes, got an object"
                .to_owned(),
        ),
        scalar => Value::from_json(scalar),
    }
}

fn blob(items: &[Json]) -> Result<Value, String> {
    items
        .iter()
        .map(|item| {
            item.as_u64()
                .and_then(|b| u8::try_from(b).ok())
                .ok_or_else(|| format!("a BLOB is an array of bytes 0 to 255, got {item} in it"))
        })
        .collect::<Result<Vec<u8>, String>>()
        .map(Value::Blob)
}

/// What a JSON value is, for error messages.
fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<Statement>, String> {
        parse_body(body.as_bytes(), 100)
    }

    #[test]
    fn every_statement_form_parses() {
        let stmts =
            parse(r#"["SELECT 1", ["SELECT ?", 2], ["SELECT :a", {"a": 3}], ["SELECT 4"]]"#)
                .unwrap();
        assert_eq!(
            stmts,
            vec![
                Statement::new("SELECT 1"),
                Statement {
                    sql: "SELECT ?".into(),
                    params: Params::Positional(vec![Value::Integer(2)]),
                },
                Statement {
                    sql: "SELECT :a".into(),
                    params: Params::Named(vec![("a".into(), Value::Integer(3))]),
                },
                Statement::new("SELECT 4"),
            ]
        );
    }

    #[test]
    fn byte_arrays_are_blobs_and_other_arrays_are_not() {
        let stmts = parse(r#"[["INSERT INTO t VALUES(?)", [0, 255, 16]]]"#).unwrap();
        assert_eq!(
            stmts[0].params,
            Params::Positional(vec![Value::Blob(vec![0, 255, 16])])
        );
        let err = parse(r#"[["INSERT INTO t VALUES(?)", [256]]]"#).unwrap_err();
        assert_eq!(
            err,
            "statement 1: parameter 1: a BLOB is an array of bytes 0 to 255, got 256 in it"
        );
        let err = parse(r#"[["INSERT INTO t VALUES(:b)", {"b": ["x"]}]]"#).unwrap_err();
        assert!(
            err.starts_with("statement 1: parameter \"b\": a BLOB"),
            "{err}"
        );
    }

    #[test]
    fn named_object_must_be_alone() {
        let err = parse(r#"["SELECT 1", ["SELECT ?, :a", 1, {"a": 2}]]"#).unwrap_err();
        assert!(
            err.starts_with("statement 2: parameter 2 is an object; named parameters go alone"),
            "{err}"
        );
    }

    #[test]
    fn too_many_statements_is_an_error() {
        let err = parse_body(br#"["SELECT 1", "SELECT 2", "SELECT 3"]"#, 2).unwrap_err();
        assert_eq!(err, "too many statements: 3, at most 2 in one request");
    }

    #[test]
    fn blank_sql_is_an_error() {
        assert_eq!(
            parse(r#"["SELECT 1", "  "]"#).unwrap_err(),
            "statement 2: the SQL text is empty"
        );
    }
}
