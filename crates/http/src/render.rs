//! Node answers into rqlite's JSON shapes, and JSON into HTTP responses.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response as HttpResponse;
use paxsql_types::{Response, StmtResult, Value};
use serde::Serialize;
use serde_json::{json, Map, Value as Json};
use std::time::Duration;

/// The content type of every JSON answer.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// How rows and values are to be shown.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Shape {
    /// Rows as objects keyed by column name.
    pub(crate) associative: bool,
    /// BLOBs as arrays of bytes rather than base64 text.
    pub(crate) blob_array: bool,
}

/// What goes at the top level besides `results`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Extras {
    /// Add `raft_index` (answers to requests that may write).
    pub(crate) raft_index: bool,
    /// Add `time`: how long the request took, in seconds.
    pub(crate) elapsed: Option<Duration>,
}

/// `{"results": [...], "raft_index": N, "time": secs}`.
pub(crate) fn results_body(response: &Response, shape: Shape, extras: Extras) -> Json {
    let mut body = Map::new();
    let results = response.results.iter().map(|r| result(r, shape)).collect();
    body.insert("results".into(), Json::Array(results));
    if extras.raft_index {
        body.insert("raft_index".into(), response.index.0.into());
    }
    if let Some(elapsed) = extras.elapsed {
        body.insert("time".into(), elapsed.as_secs_f64().into());
    }
    Json::Object(body)
}

/// One statement's slot in `results`.
fn result(r: &StmtResult, shape: Shape) -> Json {
    match r {
        StmtResult::Exec {
            last_insert_id,
            rows_affected,
        } => json!({ "last_insert_id": last_insert_id, "rows_affected": rows_affected }),
        StmtResult::Rows {
            columns,
            types,
            values,
        } if shape.associative => associative_rows(columns, types, values, shape),
        StmtResult::Rows {
            columns,
            types,
            values,
        } => rows(columns, types, values, shape),
        StmtResult::Error(message) => json!({ "error": message }),
    }
}

/// `{"columns": [...], "types": [...], "values": [[...]]}`; like rqlite,
/// without `values` when there are no rows.
fn rows(columns: &[String], types: &[String], values: &[Vec<Value>], shape: Shape) -> Json {
    let mut out = Map::new();
    out.insert("columns".into(), json!(columns));
    out.insert("types".into(), json!(types));
    if !values.is_empty() {
        let values = values
            .iter()
            .map(|row| Json::Array(row.iter().map(|v| value(v, shape)).collect()))
            .collect();
        out.insert("values".into(), Json::Array(values));
    }
    Json::Object(out)
}

/// `{"types": {"col": "type"}, "rows": [{"col": value}]}`; `"rows": []`
/// when there are none. A name repeated among the columns keeps its last
/// value, as in rqlite.
fn associative_rows(
    columns: &[String],
    types: &[String],
    values: &[Vec<Value>],
    shape: Shape,
) -> Json {
    let types: Map<String, Json> = columns
        .iter()
        .zip(types)
        .map(|(c, t)| (c.clone(), Json::from(t.as_str())))
        .collect();
    let rows: Vec<Json> = values
        .iter()
        .map(|row| {
            let object: Map<String, Json> = columns
                .iter()
                .zip(row)
                .map(|(c, v)| (c.clone(), value(v, shape)))
                .collect();
            Json::Object(object)
        })
        .collect();
    json!({ "types": types, "rows": rows })
}

/// A value as rqlite shows it: BLOBs base64, or arrays of bytes with `blob_array`.
fn value(v: &Value, shape: Shape) -> Json {
    match v {
        Value::Blob(bytes) if shape.blob_array => json!(bytes),
        other => other.to_json(),
    }
}

/// `body` as a JSON response; `pretty` indents it four spaces, as rqlite does.
pub(crate) fn json_response(status: StatusCode, body: &Json, pretty: bool) -> HttpResponse {
    let bytes = if pretty {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        body.serialize(&mut ser)
            .expect("a serde_json::Value always serializes");
        out
    } else {
        serde_json::to_vec(body).expect("a serde_json::Value always serializes")
    };
    let mut response = HttpResponse::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxsql_types::LogIndex;

    fn rows_result() -> StmtResult {
        StmtResult::Rows {
            columns: vec!["id".into(), "data".into()],
            types: vec!["integer".into(), "blob".into()],
            values: vec![vec![Value::Integer(1), Value::Blob(vec![1, 2, 3])]],
        }
    }

    #[test]
    fn blobs_are_base64_unless_blob_array() {
        let shape = Shape::default();
        assert_eq!(
            result(&rows_result(), shape)["values"],
            json!([[1, "AQID"]])
        );
        let shape = Shape {
            blob_array: true,
            ..shape
        };
        assert_eq!(
            result(&rows_result(), shape)["values"],
            json!([[1, [1, 2, 3]]])
        );
    }

    #[test]
    fn extras_are_only_there_when_asked_for() {
        let response = Response {
            results: vec![],
            index: LogIndex(7),
        };
        let body = results_body(&response, Shape::default(), Extras::default());
        assert_eq!(body, json!({"results": []}));
        let extras = Extras {
            raft_index: true,
            elapsed: Some(Duration::from_millis(1500)),
        };
        let body = results_body(&response, Shape::default(), extras);
        assert_eq!(body, json!({"results": [], "raft_index": 7, "time": 1.5}));
    }
}
