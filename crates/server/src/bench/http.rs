//! The cluster as a target: rqlite-style JSON over HTTP/1.1 keep-alive.
//!
//! Each client task has its own `reqwest::Client` (so its own connection,
//! reused for every request) and sticks to one node; tasks are spread over
//! the nodes round-robin. Writes go to `/db/execute` at whatever node the
//! task talks to (a follower forwards them to the leader, as it would for
//! any user), reads to `/db/query?level=...`.
//!
//! Nothing is retried: a failed request is one failed operation, counted
//! under a short kind such as `http 503: request timed out` or
//! `statement: UNIQUE constraint failed`.

use super::workload::{Op, Stmt};
use super::Level;
use serde_json::Value;
use std::time::Duration;

/// One client task's connection to one node.
#[derive(Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    execute_url: String,
    query_url: String,
}

impl HttpClient {
    pub fn new(addr: &str, level: Level, timeout: Duration) -> anyhow::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpClient {
            client,
            execute_url: format!("http://{addr}/db/execute"),
            query_url: format!("http://{addr}/db/query?level={}", level.name()),
        })
    }

    /// Sends `op` as one request; `Err` carries the error kind.
    pub async fn run(&self, op: &Op) -> Result<(), String> {
        let url = if op.kind.is_read() {
            &self.query_url
        } else {
            &self.execute_url
        };
        let results = post(&self.client, url, &op.stmts).await?;
        check_results(&results, op.stmts.len(), op.kind.is_read())
    }
}

/// POSTs `stmts` to `url`; the `results` array of a `200`, or the error kind.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    stmts: &[Stmt],
) -> Result<Vec<Value>, String> {
    let body = Value::Array(stmts.iter().map(Stmt::to_json).collect());
    let response = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(transport_kind)?;
    let status = response.status();
    let text = response.text().await.map_err(transport_kind)?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|_| format!("http {}: body is not JSON", status.as_u16()))?;
    if !status.is_success() {
        let msg = json.get("error").and_then(Value::as_str).unwrap_or("");
        return Err(format!("http {}: {}", status.as_u16(), short(msg)));
    }
    match json.get("results") {
        Some(Value::Array(results)) => Ok(results.clone()),
        _ => Err("protocol: no results array".into()),
    }
}

/// Every statement answered and none failed; a read found its row.
pub fn check_results(results: &[Value], expected: usize, read: bool) -> Result<(), String> {
    if results.len() != expected {
        return Err(format!(
            "protocol: {} results for {expected} statements",
            results.len()
        ));
    }
    for r in results {
        if let Some(e) = r.get("error") {
            return Err(format!("statement: {}", short(e.as_str().unwrap_or(""))));
        }
        if read {
            let rows = r
                .get("values")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if rows != 1 {
                return Err(format!("read: {rows} rows for one key"));
            }
        }
    }
    Ok(())
}

/// The kind of a failure below HTTP.
fn transport_kind(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "client timeout".into()
    } else if e.is_connect() {
        "connect failed".into()
    } else if e.is_body() || e.is_decode() {
        "reading the response failed".into()
    } else {
        "transport error".into()
    }
}

/// The stable start of an error message, so kinds group: the text before
/// the first `;` or `(`, at most 60 characters.
pub fn short(msg: &str) -> String {
    let cut = msg.find([';', '(']).unwrap_or(msg.len());
    let s = msg[..cut].trim();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_kinds_group_by_their_stable_start() {
        assert_eq!(
            short("request timed out after 30s; a write may or may not have been applied"),
            "request timed out after 30s"
        );
        assert_eq!(short(&"x".repeat(80)).chars().count(), 61);
    }

    #[test]
    fn results_are_checked_statement_by_statement() {
        let ok = json!([{"rows_affected": 1}, {"rows_affected": 1}]);
        assert_eq!(check_results(ok.as_array().unwrap(), 2, false), Ok(()));
        assert!(check_results(ok.as_array().unwrap(), 3, false).is_err());
        let bad = json!([{"rows_affected": 1}, {"error": "UNIQUE constraint failed: t.id"}]);
        assert_eq!(
            check_results(bad.as_array().unwrap(), 2, false),
            Err("statement: UNIQUE constraint failed: t.id".into())
        );
        let empty = json!([{"columns": ["id", "v"], "types": ["integer", "text"]}]);
        assert_eq!(
            check_results(empty.as_array().unwrap(), 1, true),
            Err("read: 0 rows for one key".into())
        );
    }
}
