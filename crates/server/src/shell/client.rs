//! The shell's side of the HTTP API: one blocking request at a time.
//!
//! Whatever goes wrong comes back as one line of text for the user: the
//! server's own `{"error": "..."}` message when it answered, or why the
//! node could not be reached.

use serde_json::{json, Value};
use std::time::Duration;

/// Longer than the node's own request timeout (30 s), so that the node's
/// "timed out" answer, which says what to do, arrives before ours.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(35);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A read consistency level, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Level {
    Local,
    Leader,
    Linearizable,
}

impl Level {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Local => "local",
            Level::Leader => "leader",
            Level::Linearizable => "linearizable",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Level> {
        match s {
            "local" => Some(Level::Local),
            "leader" => Some(Level::Leader),
            "linearizable" => Some(Level::Linearizable),
            _ => None,
        }
    }
}

/// A node's HTTP API.
#[derive(Debug)]
pub(crate) struct Client {
    /// `http://host:port`, without a trailing `/`.
    base: String,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client of the node at `addr`: `HOST:PORT` or an `http://` URL.
    pub(crate) fn new(addr: &str) -> anyhow::Result<Client> {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_owned()
        } else {
            format!("http://{addr}")
        };
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Client { base, http })
    }

    /// `HOST:PORT` as the user knows the node.
    pub(crate) fn addr(&self) -> &str {
        self.base
            .strip_prefix("http://")
            .or_else(|| self.base.strip_prefix("https://"))
            .unwrap_or(&self.base)
    }

    /// One statement through `POST /db/request`: the node decides whether
    /// it is a read (served at `level`) or a write. The statement's result
    /// object, which may itself be `{"error": ...}`.
    pub(crate) fn request(&self, sql: &str, level: Level) -> Result<Value, String> {
        let path = format!("/db/request?level={}&blob_array", level.as_str());
        self.first_result(&path, json!([sql]))
    }

    /// One read with positional parameters through `POST /db/query`.
    pub(crate) fn query(&self, sql: &str, params: &[&str], level: Level) -> Result<Value, String> {
        let mut stmt = vec![json!(sql)];
        stmt.extend(params.iter().map(|p| json!(p)));
        let path = format!("/db/query?level={}&blob_array", level.as_str());
        self.first_result(&path, json!([stmt]))
    }

    /// `GET path` as JSON.
    pub(crate) fn get(&self, path: &str) -> Result<Value, String> {
        let response = self.http.get(self.url(path)).send();
        self.answer(response)
    }

    fn first_result(&self, path: &str, body: Value) -> Result<Value, String> {
        let response = self.http.post(self.url(path)).json(&body).send();
        let mut answer = self.answer(response)?;
        match answer.get_mut("results").and_then(|r| r.get_mut(0)) {
            Some(result) => Ok(result.take()),
            None => Err(format!("the node answered without a result: {answer}")),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The JSON of a `2xx`, or the error message of anything else.
    fn answer(
        &self,
        response: reqwest::Result<reqwest::blocking::Response>,
    ) -> Result<Value, String> {
        let response = response.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().map_err(|e| self.unreachable(&e))?;
        let json: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return json
                .ok_or_else(|| format!("the node answered with something not JSON: {text}"));
        }
        let message = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| text.trim().to_owned());
        Err(format!("{message} (HTTP {})", status.as_u16()))
    }

    fn unreachable(&self, e: &reqwest::Error) -> String {
        let what = if e.is_timeout() {
            "no answer in time from"
        } else {
            "cannot reach"
        };
        format!("{what} the node at {}: {}", self.base, root_cause(e))
    }
}

/// The innermost cause of `e`: for a refused connection "Connection
/// refused (os error 111)" rather than reqwest's wrapping of it.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut innermost = e;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost.to_string()
}
