//! Fuzzing the HTTP API: random and mutated requests through the real
//! router, in process and over a real TCP socket, against a fake [`Db`]
//! that answers in every way a node may (results, statement errors,
//! unavailable, overloaded, never, not ready) and sometimes in shapes no
//! node gives.
//!
//! What must hold for every request:
//!
//! - nothing panics: not a handler (a panic there drops the connection
//!   without an answer), not hyper, not anything they spawn;
//! - the answer is a well-formed HTTP response whose body can be read, and
//!   a body that says it is JSON is valid JSON; a JSON error is
//!   `{"error": "..."}`;
//! - the status is below 500 unless the fake node asked for it: `503` when
//!   it is unavailable, overloaded, never answers or is not ready, `500`
//!   when it answers statement errors or results of a shape no node gives;
//! - the server keeps serving: after each TCP case `/status` answers.
//!
//! Error answers that are not JSON are not failures here, but they are
//! counted and printed: the API promises JSON errors (except `/readyz`).
//!
//! Seeded: `PAXSQL_FUZZ_SEED` (default fixed, so CI runs are reproducible)
//! and `PAXSQL_FUZZ_CASES` (default 3000; one in ten goes over TCP). Case
//! `i` uses seed `SEED + i`; a failure prints the command that replays that
//! one case.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use axum::Router;
use http_body_util::{BodyExt, Full, Limited};
use paxsql_http::{router, Db, Limits, ReadOptions, WriteOptions};
use paxsql_types::{LogIndex, ReadLevel, RequestError, Response, Statement, StmtResult, Value};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const DEFAULT_SEED: u64 = 0x4854_5450_F022;
const DEFAULT_CASES: u64 = 3000;
/// One case in this many goes over TCP.
const TCP_EVERY: u64 = 10;
/// The body limit of the routers under test: small, so that `413` is cheap to reach.
const BODY_BYTES_MAX: usize = 64 * 1024;

// ---------------------------------------------------------------- randomness

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------- the fake node

/// How the fake node answers during one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Results of the shape the statements ask for.
    Answers,
    /// Like `Answers`, with some statements failing in their own slot.
    StatementErrors,
    /// Results no node gives: too few or too many, rows narrower or wider
    /// than their columns, an exec result for a query.
    Garbage,
    Unavailable,
    Overloaded,
    BadRequest,
    /// Never answers.
    Hangs,
}

impl Behaviour {
    fn pick(rng: &mut Rng) -> Behaviour {
        match rng.below(100) {
            0..=49 => Behaviour::Answers,
            50..=64 => Behaviour::StatementErrors,
            65..=74 => Behaviour::Garbage,
            75..=82 => Behaviour::Unavailable,
            83..=89 => Behaviour::Overloaded,
            90..=96 => Behaviour::BadRequest,
            _ => Behaviour::Hangs,
        }
    }
}

struct NodeState {
    behaviour: Behaviour,
    ready: bool,
    rng: Rng,
    /// Read time limits that were longer than the request timeout.
    bad_timeouts: Vec<String>,
}

#[derive(Clone)]
struct FuzzDb {
    state: Arc<Mutex<NodeState>>,
    /// The request timeout of the router this handle serves.
    request_timeout: Duration,
}

impl FuzzDb {
    fn new(state: Arc<Mutex<NodeState>>, request_timeout: Duration) -> Self {
        FuzzDb {
            state,
            request_timeout,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_read(&self, read: &ReadOptions) {
        if let Some(t) = read.timeout {
            if t.is_zero() || t > self.request_timeout {
                self.state().bad_timeouts.push(format!("{t:?}"));
            }
        }
    }

    async fn answer(&self, stmts: &[Statement], write: bool) -> Result<Response, RequestError> {
        let behaviour = self.state().behaviour;
        match behaviour {
            Behaviour::Hangs => std::future::pending().await,
            Behaviour::Unavailable => Err(RequestError::Unavailable("no quorum (fuzz)".into())),
            Behaviour::Overloaded => Err(RequestError::Overloaded("fuzz".into())),
            Behaviour::BadRequest => Err(RequestError::BadRequest("statement 1: fuzz".into())),
            _ => {
                let mut state = self.state();
                let rng = &mut state.rng;
                let mut results: Vec<StmtResult> = stmts
                    .iter()
                    .map(|s| stmt_result(rng, &s.sql, write, behaviour))
                    .collect();
                if behaviour == Behaviour::Garbage {
                    if rng.chance(50) {
                        results.truncate(rng.below(results.len() + 1));
                    } else {
                        results.extend((0..rng.below(3)).map(|_| garbage_result(rng)));
                    }
                }
                Ok(Response {
                    results,
                    index: LogIndex({
                        let any = rng.next();
                        *rng.pick(&[0, 1, 42, u64::MAX, any])
                    }),
                })
            }
        }
    }

    async fn failure(&self) -> Option<RequestError> {
        self.answer(&[], true).await.err()
    }
}

fn stmt_result(rng: &mut Rng, sql: &str, write: bool, behaviour: Behaviour) -> StmtResult {
    if behaviour == Behaviour::Garbage {
        return garbage_result(rng);
    }
    if behaviour == Behaviour::StatementErrors && rng.chance(40) {
        return StmtResult::Error(rng.pick(ERROR_MESSAGES).to_string());
    }
    if write && rng.chance(70) {
        return StmtResult::Exec {
            last_insert_id: *rng.pick(&[0, 1, -1, i64::MIN, i64::MAX]),
            rows_affected: *rng.pick(&[0, 1, 2, u64::MAX]),
        };
    }
    // The key-value endpoints ask for these columns; other queries get any.
    let width = if sql.starts_with("SELECT key, value") {
        2
    } else if sql.starts_with("SELECT value") {
        1
    } else {
        1 + rng.below(4)
    };
    let values = (0..rng.below(5))
        .map(|_| (0..width).map(|_| value(rng)).collect())
        .collect();
    StmtResult::Rows {
        columns: (0..width).map(|_| rng.pick(NAMES).to_string()).collect(),
        types: (0..width).map(|_| rng.pick(NAMES).to_string()).collect(),
        values,
    }
}

fn garbage_result(rng: &mut Rng) -> StmtResult {
    match rng.below(4) {
        0 => StmtResult::Exec {
            last_insert_id: rng.next() as i64,
            rows_affected: rng.next(),
        },
        1 => StmtResult::Error(rng.pick(ERROR_MESSAGES).to_string()),
        _ => StmtResult::Rows {
            columns: (0..rng.below(4))
                .map(|_| rng.pick(NAMES).to_string())
                .collect(),
            types: (0..rng.below(4))
                .map(|_| rng.pick(NAMES).to_string())
                .collect(),
            values: (0..rng.below(4))
                .map(|_| (0..rng.below(4)).map(|_| value(rng)).collect())
                .collect(),
        },
    }
}

const NAMES: &[&str] = &[
    "id", "name", "", "id", "名前", "\"", "a b", "\u{0}", "integer", "text",
];

const ERROR_MESSAGES: &[&str] = &[
    "UNIQUE constraint failed: foo.id",
    "no such table: paxsql_kv",
    "",
    "\"quoted\" \\ and \u{0} and 日本",
    "near \"SELEC\": syntax error",
];

fn value(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => Value::Null,
        1 => {
            let any = rng.next() as i64;
            Value::Integer(*rng.pick(&[0, 1, -1, i64::MIN, i64::MAX, any]))
        }
        2 => Value::Real({
            let any = f64::from_bits(rng.next());
            *rng.pick(&[
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -0.0,
                f64::MAX,
                f64::MIN_POSITIVE,
                5e-324,
                1.0,
                any,
            ])
        }),
        3 => Value::Text(match rng.below(4) {
            0 => "x".repeat(rng.below(10_000)),
            1 => random_unicode(rng, 20),
            _ => rng
                .pick(&["", "fiona", "\u{0}", "</script>", "\u{FEFF}"])
                .to_string(),
        }),
        _ => Value::Blob((0..rng.below(64)).map(|_| rng.next() as u8).collect()),
    }
}

fn random_unicode(rng: &mut Rng, chars: usize) -> String {
    (0..rng.below(chars))
        .map(|_| loop {
            if let Some(c) = char::from_u32(rng.below(0x11_0000) as u32) {
                break c;
            }
        })
        .collect()
}

fn random_json(rng: &mut Rng, depth: u32) -> Json {
    if depth == 0 {
        return json!(null);
    }
    match rng.below(7) {
        0 => json!(u64::MAX),
        1 => json!(i64::MIN),
        2 => json!(random_unicode(rng, 10)),
        3 => Json::Array(
            (0..rng.below(4))
                .map(|_| random_json(rng, depth - 1))
                .collect(),
        ),
        4 => {
            let mut nested = json!(1);
            for _ in 0..100 {
                nested = json!([nested]);
            }
            nested
        }
        5 => Json::Object(
            (0..rng.below(4))
                .map(|_| (random_unicode(rng, 5), random_json(rng, depth - 1)))
                .collect(),
        ),
        _ => json!(f64::from_bits(rng.next())),
    }
}

impl Db for FuzzDb {
    async fn execute(
        &self,
        stmts: Vec<Statement>,
        _opts: WriteOptions,
    ) -> Result<Response, RequestError> {
        self.answer(&stmts, true).await
    }

    async fn query(
        &self,
        stmts: Vec<Statement>,
        read: ReadOptions,
    ) -> Result<Response, RequestError> {
        self.check_read(&read);
        self.answer(&stmts, false).await
    }

    async fn request(
        &self,
        stmts: Vec<Statement>,
        _opts: WriteOptions,
        read: ReadOptions,
    ) -> Result<Response, RequestError> {
        self.check_read(&read);
        let write = self.state().rng.chance(50);
        self.answer(&stmts, write).await
    }

    async fn status(&self) -> Json {
        let mut state = self.state();
        if state.behaviour == Behaviour::Garbage {
            return random_json(&mut state.rng, 4);
        }
        json!({"node_id": 1, "role": "leader"})
    }

    async fn nodes(&self) -> Json {
        let mut state = self.state();
        if state.behaviour == Behaviour::Garbage {
            return random_json(&mut state.rng, 4);
        }
        json!([{"id": 1, "address": "127.0.0.1:4001", "reachable": true, "leader": true}])
    }

    async fn backup(&self, _level: ReadLevel) -> Result<(Vec<u8>, u64), RequestError> {
        if let Some(e) = self.failure().await {
            return Err(e);
        }
        let mut state = self.state();
        let rng = &mut state.rng;
        let bytes = (0..rng.below(1000)).map(|_| rng.next() as u8).collect();
        Ok((bytes, rng.next()))
    }

    async fn load(&self, image: Vec<u8>, _opts: WriteOptions) -> Result<Response, RequestError> {
        let stmts = vec![Statement::new(format!("load {} bytes", image.len()))];
        self.answer(&stmts, true).await
    }

    async fn ready(&self) -> Result<(), String> {
        match self.state().ready {
            true => Ok(()),
            false => Err("no leader (fuzz)".into()),
        }
    }
}

// ---------------------------------------------------------------- requests

/// The API's routes.
const ROUTES: &[&str] = &[
    "/db/execute",
    "/db/query",
    "/db/request",
    "/db/backup",
    "/db/load",
    "/kv",
    "/status",
    "/nodes",
    "/readyz",
    "/console",
    "/console/console.js",
    "/console/console.css",
];

/// The binary's own routes (404 here) and near misses.
const OTHER_PATHS: &[&str] = &[
    "/metrics",
    "/join",
    "/remove",
    "/debug/isolate",
    "/",
    "/db",
    "/db/",
    "/db/execute/",
    "//db/execute",
    "/DB/EXECUTE",
    "/db/query/../execute",
    "/db/%65xecute",
    "/kv/",
    "/kv//",
    "/status/",
];

const KEYS: &[&str] = &[
    "a",
    "config/colour",
    "%FF",
    "%C3%28",
    "%",
    "%zz",
    "%2",
    "..",
    "../../etc/passwd",
    "日本",
    "%E6%97%A5",
    "a%2Fb",
    "%00",
    "~!$&'()*+,;=:@",
    "a?b",
    "a#b",
    " ",
];

const FLAGS: &[&str] = &[
    "level",
    "timeout",
    "transaction",
    "pretty",
    "timings",
    "id",
    "q",
    "associative",
    "blob_array",
    "noleader",
    "queue",
    "request_id",
    "redirect",
    "freshness",
    "freshness_strict",
    "db_timeout",
    "prefix",
    "ver",
    "sync",
    "wait",
    "nonvoters",
    "LEVEL",
    "",
    "a[]",
];

const FLAG_VALUES: &[&str] = &[
    "",
    "true",
    "false",
    "0",
    "1",
    "no",
    "off",
    "local",
    "leader",
    "linearizable",
    "none",
    "weak",
    "strong",
    "auto",
    "LINEARIZABLE",
    "bogus",
    "1s",
    "500ms",
    "0s",
    "-1s",
    "1e9s",
    "99999999999999999999s",
    "18446744073709551615s",
    "18446744073709551615ns",
    "584542046090626y",
    "1h",
    "29s",
    "31s",
    "1y",
    "1 s",
    "2 minutes",
    "1ms 1ns",
    "%FF",
    "%00",
    "%",
    "%2",
    "+",
    "SELECT+1",
    "SELECT%201",
    "SELECT * FROM t",
    "%E6%97%A5",
    "日本",
    "a=b=c",
    "x\u{0}",
];

const QUERY_JUNK: &[&str] = &["&", "&&", "=", "==", "%", "%%", "+", ";", "#", "?", "&=&"];

const SQL: &[&str] = &[
    "SELECT 1",
    "INSERT INTO foo(name) VALUES('fiona')",
    "INSERT INTO t VALUES(?, ?)",
    "SELECT * FROM t WHERE a = :a",
    "CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)",
    "",
    "   ",
    "SELECT random(), datetime('now')",
    "BEGIN",
    "SELECT '日本' -- \u{0}",
    "SELECT 1; SELECT 2",
    "SELECT \"\\",
];

const SCALARS: &[&str] = &[
    "1",
    "-1",
    "0",
    "-0",
    "1.5",
    "1e308",
    "1e999",
    "-1e999",
    "0.1e-400",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "true",
    "false",
    "null",
    "\"x\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\\udc00\\ud800\"",
    "\"日本\"",
    "[0, 255, 16]",
    "[256]",
    "[-1]",
    "[1.5]",
    "[]",
    "{}",
    "{\"a\": 1}",
    "[\"x\"]",
    "[[1]]",
    "[0, 255, {\"a\": 1}]",
];

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// One element of a body's array, in one of rqlite's forms or a near miss.
fn statement_json(rng: &mut Rng) -> String {
    let sql = rng.pick::<&str>(SQL);
    let sql = json_string(sql);
    let params = |rng: &mut Rng| -> Vec<String> {
        (0..rng.below(4))
            .map(|_| rng.pick(SCALARS).to_string())
            .collect()
    };
    match rng.below(10) {
        0 | 1 => sql,
        2 => format!("[{sql}]"),
        3 | 4 => {
            let mut parts = vec![sql];
            parts.extend(params(rng));
            format!("[{}]", parts.join(", "))
        }
        5 | 6 => {
            let named: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    format!(
                        "{}: {}",
                        json_string(rng.pick::<&str>(&["a", "name", "", "日本", "a a", ":a"])),
                        rng.pick(SCALARS)
                    )
                })
                .collect();
            format!("[{sql}, {{{}}}]", named.join(", "))
        }
        7 => format!("{{\"sql\": {sql}}}"),
        8 => format!("[{sql}, 1, {{\"a\": 1}}]"),
        _ => rng.pick(SCALARS).to_string(),
    }
}

/// Bytes that break JSON and UTF-8.
const BREAKERS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\0",
    b"\xFF",
    b"\xC3",
    b"\xC0\x80",
    b"\xED\xA0\x80",
    b"\xEF\xBB\xBF",
    b"1e999999",
    b"-",
    b"nul",
    b"\n",
];

fn mutate_bytes(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        let other = rng.below(bytes.len() + 1);
        let (lo, hi) = (at.min(other), at.max(other));
        match rng.below(6) {
            0 | 1 => {
                let breaker = rng.pick(BREAKERS);
                bytes.splice(at..at, breaker.iter().copied());
            }
            2 => {
                bytes.drain(lo..hi);
            }
            3 => bytes.truncate(at),
            4 => {
                let copy = bytes[lo..hi].to_vec();
                bytes.splice(hi..hi, copy);
            }
            _ => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    bytes
}

/// A request body for `path`.
fn body(rng: &mut Rng, path: &str) -> Vec<u8> {
    if path.starts_with("/db/load") && rng.chance(60) {
        let mut image = b"SQLite format 3\0".to_vec();
        image.extend((0..rng.below(2000)).map(|_| rng.next() as u8));
        return image;
    }
    if path.starts_with("/kv/") && rng.chance(60) {
        return (0..rng.below(300)).map(|_| rng.next() as u8).collect();
    }
    match rng.below(20) {
        0 => Vec::new(),
        1 => b" \n\t ".to_vec(),
        2 => {
            let n = *rng.pick(&[100, 127, 128, 129, 10_000, 60_000]);
            let open = *rng.pick(&["[", "{\"a\":", "[[\"SELECT 1\", "]);
            let mut b = open.repeat(n).into_bytes();
            if rng.chance(50) {
                b.extend(b"1");
                b.extend("]".repeat(n).as_bytes());
            }
            b
        }
        3 => {
            // Over the body limit.
            let mut b = b"[\"".to_vec();
            b.extend(std::iter::repeat_n(b'x', BODY_BYTES_MAX + rng.below(1000)));
            b.extend(b"\"]");
            b
        }
        4 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        5 => format!(
            "[{}]",
            vec![json_string("SELECT 1"); 100 + rng.below(200)].join(",")
        )
        .into_bytes(),
        6 => rng.pick(SCALARS).as_bytes().to_vec(),
        _ => {
            let stmts: Vec<String> = (0..1 + rng.below(4)).map(|_| statement_json(rng)).collect();
            let mut b = format!("[{}]", stmts.join(", ")).into_bytes();
            if rng.chance(50) {
                b = mutate_bytes(rng, b);
            }
            b
        }
    }
}

/// The method a route serves, or another.
fn method(rng: &mut Rng, path: &str) -> Method {
    if rng.chance(70) {
        return match path {
            "/db/execute" | "/db/request" | "/db/load" | "/join" => Method::POST,
            "/db/query" if rng.chance(50) => Method::POST,
            p if p.starts_with("/kv/") => rng
                .pick(&[Method::GET, Method::PUT, Method::DELETE])
                .clone(),
            "/remove" => Method::DELETE,
            _ => Method::GET,
        };
    }
    let name = *rng.pick(&[
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "get",
        "X-FUZZ",
    ]);
    Method::from_bytes(name.as_bytes()).expect("a valid token")
}

/// Path and query string, as raw text (not necessarily a valid URI).
fn target(rng: &mut Rng) -> String {
    let mut path = if rng.chance(20) {
        let key = match rng.below(4) {
            0 => "k".repeat(rng.below(5000)),
            1 => random_unicode(rng, 10),
            _ => rng.pick(KEYS).to_string(),
        };
        format!("/kv/{key}")
    } else if rng.chance(80) {
        rng.pick(ROUTES).to_string()
    } else {
        rng.pick(OTHER_PATHS).to_string()
    };
    if rng.chance(80) {
        let mut query = Vec::new();
        for _ in 0..rng.below(6) {
            let key = rng.pick(FLAGS);
            let value = match rng.below(10) {
                0 => "v".repeat(rng.below(8000)),
                1 => random_unicode(rng, 8),
                _ => rng.pick(FLAG_VALUES).to_string(),
            };
            query.push(match rng.below(8) {
                0 => key.to_string(),
                1 => rng.pick(QUERY_JUNK).to_string(),
                _ => format!("{key}={value}"),
            });
        }
        path = format!("{path}?{}", query.join("&"));
    }
    path
}

/// `raw` as a URI, percent-encoding what a URI may not hold when it must.
fn uri(raw: &str) -> Uri {
    if let Ok(uri) = Uri::try_from(raw) {
        return uri;
    }
    let mut encoded = String::new();
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/?&=%+".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Uri::try_from(encoded).unwrap_or_else(|_| Uri::from_static("/"))
}

/// Header lines (name, value bytes) for one request.
fn headers(rng: &mut Rng) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    if rng.chance(60) {
        let ct = *rng.pick(&[
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "",
            "application/json; charset=latin1",
        ]);
        out.push(("content-type", ct.as_bytes().to_vec()));
    }
    if rng.chance(25) {
        let id: Vec<u8> = match rng.below(5) {
            0 => Vec::new(),
            1 => vec![b'r'; 300],
            2 => vec![b'r'; 10_000],
            3 => vec![0x80, 0xFF, b'a'],
            _ => b"req-1".to_vec(),
        };
        out.push(("x-request-id", id));
    }
    if rng.chance(10) {
        let cl = *rng.pick(&["0", "5", "99999999999999999999", "-1", "abc", "65537"]);
        out.push(("content-length", cl.as_bytes().to_vec()));
    }
    if rng.chance(5) {
        out.push(("expect", b"100-continue".to_vec()));
    }
    out
}

// ---------------------------------------------------------------- checking

/// What one case sent, for messages.
#[derive(Debug)]
struct Sent {
    method: String,
    target: String,
    body: Vec<u8>,
    /// The bytes on the wire, for a case sent over TCP.
    wire: Option<Vec<u8>>,
}

/// Counts per outcome, printed at the end.
#[derive(Default)]
struct Stats {
    statuses: BTreeMap<u16, u64>,
    /// Error answers that are not JSON, by how they were sent, status,
    /// content type and body; with one request that got it.
    non_json_errors: BTreeMap<String, (u64, String)>,
    /// How the current case is sent: "in process" or "TCP".
    transport: &'static str,
    tcp_closed_without_answer: u64,
}

/// The status is one the behaviour of the node explains.
fn status_allowed(status: u16, behaviour: Behaviour, ready: bool, path: &str) -> bool {
    match status {
        0..=499 => true,
        503 => {
            matches!(
                behaviour,
                Behaviour::Unavailable | Behaviour::Overloaded | Behaviour::Hangs
            ) || (!ready && path == "/readyz")
        }
        500 => matches!(behaviour, Behaviour::StatementErrors | Behaviour::Garbage),
        _ => false,
    }
}

fn route_of(path: &str) -> &str {
    if path.starts_with("/kv/") {
        "/kv/{key}"
    } else {
        path
    }
}

/// Checks one answer; returns what is wrong with it.
#[allow(clippy::too_many_arguments)]
fn check_answer(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    method: &str,
    path: &str,
    behaviour: Behaviour,
    ready: bool,
    stats: &mut Stats,
) -> Vec<String> {
    let mut wrong = Vec::new();
    *stats.statuses.entry(status).or_default() += 1;
    if !status_allowed(status, behaviour, ready, path) {
        wrong.push(format!(
            "status {status} although the node behaved as {behaviour:?} (ready: {ready}): {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let is_json = content_type.is_some_and(|ct| ct.starts_with("application/json"));
    if is_json && method != "HEAD" {
        match serde_json::from_slice::<Json>(body) {
            Err(e) => wrong.push(format!("says JSON but is not ({e})")),
            Ok(json) if status >= 400 => {
                let error_only = json
                    .as_object()
                    .is_some_and(|o| o.len() == 1 && o.get("error").is_some_and(Json::is_string));
                if !error_only {
                    wrong.push(format!(
                        "a JSON error that is not {{\"error\": \"...\"}}: {json}"
                    ));
                }
            }
            Ok(_) => {}
        }
    }
    if status >= 400 && !is_json && path != "/readyz" {
        let key = format!(
            "{}: {status} {} {:?}",
            stats.transport,
            content_type.unwrap_or("(no content type)"),
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        let example = format!("{method} {}", route_of(path));
        stats.non_json_errors.entry(key).or_insert((0, example)).0 += 1;
    }
    wrong
}

// ---------------------------------------------------------------- panics

static PANICS: AtomicU64 = AtomicU64::new(0);
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts every panic in the process (handlers, hyper, spawned tasks) and
/// remembers where it happened; the default hook would only print it.
fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        PANIC_MESSAGES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{message} at {place}"));
        previous(info);
    }));
}

fn last_panic() -> String {
    PANIC_MESSAGES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .last()
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------- one case

/// The routers under test and the node behind them.
struct Harness {
    node: Arc<Mutex<NodeState>>,
    /// Request timeout 10 s: the node answers at once.
    app: Router,
    /// Request timeout 30 ms, for a node that never answers.
    hang_app: Router,
    /// The same API on a real socket, request timeout 200 ms.
    tcp: SocketAddr,
}

fn limits(request_timeout: Duration) -> Limits {
    Limits {
        body_bytes_max: BODY_BYTES_MAX,
        statements_max: 100,
        request_timeout,
    }
}

impl Harness {
    async fn start() -> Harness {
        let node = Arc::new(Mutex::new(NodeState {
            behaviour: Behaviour::Answers,
            ready: true,
            rng: Rng(0),
            bad_timeouts: Vec::new(),
        }));
        let app_timeout = Duration::from_secs(10);
        let hang_timeout = Duration::from_millis(30);
        let tcp_timeout = Duration::from_millis(200);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a local port");
        let tcp = listener.local_addr().expect("the bound address");
        let serve = paxsql_http::serve(
            listener,
            FuzzDb::new(node.clone(), tcp_timeout),
            limits(tcp_timeout),
            std::future::pending(),
        );
        tokio::spawn(serve);
        Harness {
            app: router(FuzzDb::new(node.clone(), app_timeout), limits(app_timeout)),
            hang_app: router(
                FuzzDb::new(node.clone(), hang_timeout),
                limits(hang_timeout),
            ),
            node,
            tcp,
        }
    }

    fn set_node(&self, behaviour: Behaviour, ready: bool, seed: u64) {
        let mut node = self.node.lock().unwrap_or_else(|e| e.into_inner());
        node.behaviour = behaviour;
        node.ready = ready;
        node.rng = Rng(seed);
    }
}

/// Runs one case in process; returns what went wrong.
async fn in_process_case(
    harness: &Harness,
    rng: &mut Rng,
    behaviour: Behaviour,
    ready: bool,
    stats: &mut Stats,
) -> (Sent, Vec<String>) {
    let raw_target = target(rng);
    let uri = uri(&raw_target);
    let method = method(rng, uri.path());
    let body_bytes = body(rng, uri.path());
    let sent = Sent {
        method: method.to_string(),
        target: uri.to_string(),
        body: body_bytes.clone(),
        wire: None,
    };
    let mut request = Request::builder().method(method.clone()).uri(uri.clone());
    for (name, value) in headers(rng) {
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            request = request.header(HeaderName::from_static(name), value);
        }
    }
    let body = if rng.chance(5) && !body_bytes.is_empty() {
        // A body that fails part way, as an upload cut off.
        let cut = rng.below(body_bytes.len());
        Body::new(Limited::new(Full::new(Bytes::from(body_bytes)), cut))
    } else {
        Body::from(body_bytes)
    };
    let request = request.body(body).expect("a request from valid parts");
    let app = match behaviour {
        Behaviour::Hangs => harness.hang_app.clone(),
        _ => harness.app.clone(),
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::spawn(async move {
            let response = app.oneshot(request).await.expect("routers are infallible");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body().collect().await.map(|b| b.to_bytes());
            (status, content_type, body)
        }),
    )
    .await;
    let wrong = match outcome {
        Err(_) => vec!["no answer within 20 s".to_owned()],
        Ok(Err(e)) if e.is_panic() => vec![format!("panicked: {}", last_panic())],
        Ok(Err(e)) => vec![format!("the request task failed: {e}")],
        Ok(Ok((_, _, Err(e)))) => vec![format!("the body could not be read: {e}")],
        Ok(Ok((status, content_type, Ok(body)))) => check_answer(
            status,
            content_type.as_deref(),
            &body,
            method.as_str(),
            uri.path(),
            behaviour,
            ready,
            stats,
        ),
    };
    (sent, wrong)
}

/// A raw HTTP/1.1 request, and whether its bytes were mutated (then the
/// server may also close without answering or time out waiting for bytes).
fn raw_request(rng: &mut Rng) -> (Sent, Vec<u8>, bool) {
    let raw_target = target(rng);
    let path = raw_target.split('?').next().unwrap_or("/").to_owned();
    let method = method(rng, &path);
    let body = body(rng, &path);
    let mut out = format!("{method} {raw_target} HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n")
        .into_bytes();
    let mut has_length = false;
    for (name, value) in headers(rng) {
        has_length |= name == "content-length";
        out.extend(name.as_bytes());
        out.extend(b": ");
        out.extend(&value);
        out.extend(b"\r\n");
    }
    if rng.chance(10) {
        out.extend(b"transfer-encoding: chunked\r\n\r\n");
        out.extend(format!("{:x}\r\n", body.len()).as_bytes());
        out.extend(&body);
        out.extend(b"\r\n0\r\n\r\n");
    } else {
        if !has_length {
            out.extend(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        out.extend(b"\r\n");
        out.extend(&body);
    }
    // A request whose headers or length were chosen wrong is a mutated one too.
    let mut mutated = has_length;
    if rng.chance(40) {
        mutated = true;
        out = match rng.below(6) {
            0 => {
                let n = rng.below(out.len() + 1);
                out[..n].to_vec()
            }
            1 => {
                let mut big = b"GET /status HTTP/1.1\r\nhost: x\r\n".to_vec();
                for i in 0..rng.below(300) {
                    big.extend(format!("x-h{i}: {}\r\n", "v".repeat(rng.below(500))).as_bytes());
                }
                big.extend(b"connection: close\r\n\r\n");
                big
            }
            2 => {
                let line = *rng.pick(&[
                    "GET / HTTP/1.0\r\n\r\n",
                    "GET / HTTP/2.0\r\n\r\n",
                    "GET / HTTP/9\r\n\r\n",
                    "get /status HTTP/1.1\r\nhost: x\r\n\r\n",
                    "GET http://fuzz/db/query?q=SELECT+1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                    "GET * HTTP/1.1\r\nhost: x\r\n\r\n",
                    "\r\n\r\n",
                    "POST /db/execute HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n[\"x\"]",
                    "POST /db/execute HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\nzz\r\n",
                    "POST /db/execute HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
                ]);
                line.as_bytes().to_vec()
            }
            _ => mutate_bytes(rng, out),
        };
    }
    let sent = Sent {
        method: method.to_string(),
        target: raw_target,
        body,
        wire: Some(out.clone()),
    };
    (sent, out, mutated)
}

/// One HTTP answer read off a socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    /// Whether its length was known (`content-length` or chunked), so that
    /// `body` is known to be all of it; otherwise it runs to the end of the
    /// connection.
    framed: bool,
}

/// The final answer in `bytes`, if they hold one whose head is complete and
/// whose framed body is complete (informational `1xx` answers are skipped).
/// An answer to `HEAD` has no body whatever its length says.
fn parse_answer(bytes: &[u8], head: bool) -> Option<Answer> {
    let mut rest = bytes;
    loop {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head_text = std::str::from_utf8(&rest[..end]).ok()?;
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next()?;
        let mut parts = status_line.splitn(3, ' ');
        if !parts.next()?.starts_with("HTTP/1.") {
            return None;
        }
        let status: u16 = parts.next()?.parse().ok()?;
        let mut content_type = None;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (name, value) = line.split_once(':')?;
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(value.to_owned()),
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let body = &rest[end + 4..];
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let (body, framed) = match (length, chunked) {
            _ if head => (Vec::new(), true),
            (Some(n), _) if body.len() >= n => (body[..n].to_vec(), true),
            (Some(_), _) => return None,
            (None, true) => (dechunk(body)?, true),
            (None, false) => (body.to_vec(), false),
        };
        return Some(Answer {
            status,
            content_type,
            body,
            framed,
        });
    }
}

/// Whether `bytes` are informational (`1xx`) answers and nothing else.
fn only_interim(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        if !bytes.starts_with(b"HTTP/1.1 1") {
            return false;
        }
        bytes = &bytes[end + 4..];
    }
    true
}

/// A complete chunked body, decoded.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Sends `request` and reads until a complete answer, the end of the
/// connection, or `wait`. With `end_request`, the client then closes its
/// side, so that the server does not wait for bytes of a request cut short.
async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    end_request: bool,
    head: bool,
    wait: Duration,
) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request).await;
    let _ = stream.flush().await;
    if end_request {
        let _ = stream.shutdown().await;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("no complete answer within {wait:?}")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => {
                out.extend(&buf[..n]);
                if parse_answer(&out, head).is_some_and(|a| a.framed) {
                    return Ok(out);
                }
            }
        }
    }
}

/// Runs one case over TCP; returns what went wrong.
async fn tcp_case(
    harness: &Harness,
    rng: &mut Rng,
    behaviour: Behaviour,
    ready: bool,
    stats: &mut Stats,
) -> (Sent, Vec<String>) {
    let (sent, request, mutated) = raw_request(rng);
    let path = sent.target.split('?').next().unwrap_or("/").to_owned();
    let head = sent.method == "HEAD";
    let wait = Duration::from_secs(if mutated { 1 } else { 5 });
    let mut wrong = Vec::new();
    match exchange(harness.tcp, &request, mutated, head, wait).await {
        Err(e) if !mutated => wrong.push(e),
        Err(_) => {}
        // Closed, or closed after `100 Continue` only: the client ended its
        // side early, and the server may give up on such a request.
        Ok(bytes) if bytes.is_empty() || only_interim(&bytes) => {
            stats.tcp_closed_without_answer += 1;
            if !mutated {
                wrong.push("the server closed the connection without answering".into());
            }
        }
        Ok(bytes) => match parse_answer(&bytes, head) {
            None => wrong.push(format!(
                "not a well-formed HTTP answer: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )),
            // A request cut short is answered with the request timeout.
            Some(a)
                if a.status == 503
                    && mutated
                    && String::from_utf8_lossy(&a.body).contains("timed out") => {}
            Some(a) => wrong.extend(check_answer(
                a.status,
                a.content_type.as_deref(),
                &a.body,
                &sent.method,
                &path,
                behaviour,
                ready,
                stats,
            )),
        },
    }
    // Whatever happened, the server still serves.
    let probe = b"GET /status HTTP/1.1\r\nhost: fuzz\r\nconnection: close\r\n\r\n";
    let alive = exchange(harness.tcp, probe, false, false, Duration::from_secs(5)).await;
    match alive.ok().as_deref().and_then(|b| parse_answer(b, false)) {
        Some(a) if a.status == 200 => {}
        other => wrong.push(format!("the server no longer serves /status: {other:?}")),
    }
    (sent, wrong)
}

// ---------------------------------------------------------------- the test

struct Failure {
    case_seed: u64,
    over_tcp: bool,
    behaviour: Behaviour,
    sent: Sent,
    wrong: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_panics_the_api_or_gets_an_unexplained_5xx() {
    let seed = env_u64("PAXSQL_FUZZ_SEED", DEFAULT_SEED);
    let cases = env_u64("PAXSQL_FUZZ_CASES", DEFAULT_CASES);
    eprintln!(
        "http fuzz: seed {seed}, {cases} cases; replay: PAXSQL_FUZZ_SEED={seed} \
         PAXSQL_FUZZ_CASES={cases} cargo test -p paxsql-http --test fuzz -- --nocapture"
    );
    count_panics();
    let harness = Harness::start().await;
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    let mut tcp_cases = 0;
    for i in 0..cases {
        let case_seed = seed.wrapping_add(i);
        let mut rng = Rng(case_seed);
        let behaviour = Behaviour::pick(&mut rng);
        let ready = rng.chance(80);
        harness.set_node(behaviour, ready, rng.next());
        let panics_before = PANICS.load(Ordering::SeqCst);
        // Over TCP for one case in TCP_EVERY (by its seed, so a replay does the same).
        let over_tcp = case_seed % TCP_EVERY == 0;
        stats.transport = if over_tcp { "TCP" } else { "in process" };
        let (sent, mut wrong) = if over_tcp {
            tcp_cases += 1;
            tcp_case(&harness, &mut rng, behaviour, ready, &mut stats).await
        } else {
            in_process_case(&harness, &mut rng, behaviour, ready, &mut stats).await
        };
        if PANICS.load(Ordering::SeqCst) != panics_before
            && !wrong.iter().any(|w| w.starts_with("panicked"))
        {
            wrong.push(format!("panicked: {}", last_panic()));
        }
        let bad_timeouts = std::mem::take(
            &mut harness
                .node
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .bad_timeouts,
        );
        if !bad_timeouts.is_empty() {
            wrong.push(format!(
                "read time limits outside (0, request timeout] reached the node: {bad_timeouts:?}"
            ));
        }
        if !wrong.is_empty() {
            failures.push(Failure {
                case_seed,
                over_tcp,
                behaviour,
                sent,
                wrong,
            });
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "http fuzz: {cases} cases ({tcp_cases} over TCP) in {secs:.2}s; statuses {:?}; \
         {} TCP connections closed without an answer (to garbled requests)",
        stats.statuses, stats.tcp_closed_without_answer
    );
    if !stats.non_json_errors.is_empty() {
        eprintln!("error answers that are not JSON (the API promises JSON errors):");
        for (key, (count, example)) in &stats.non_json_errors {
            eprintln!("  {count:5} x {key}, e.g. to {example}");
        }
    }
    for f in failures.iter().take(20) {
        eprintln!(
            "case {} ({}, node {:?}): {} {} with {} body bytes {:?}\n  wrong: {}\n  replay: \
             PAXSQL_FUZZ_SEED={} PAXSQL_FUZZ_CASES=1 cargo test -p paxsql-http --test fuzz -- --nocapture",
            f.case_seed,
            if f.over_tcp { "TCP" } else { "in process" },
            f.behaviour,
            f.sent.method,
            &f.sent.target.chars().take(200).collect::<String>(),
            f.sent.body.len(),
            String::from_utf8_lossy(&f.sent.body[..f.sent.body.len().min(200)]),
            f.wrong.join("\n         "),
            f.case_seed
        );
        if let Some(wire) = &f.sent.wire {
            eprintln!(
                "  on the wire: {:?}",
                String::from_utf8_lossy(&wire[..wire.len().min(400)])
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed (above)",
        failures.len()
    );
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "panics: {:?}",
        PANIC_MESSAGES.lock().unwrap_or_else(|e| e.into_inner())
    );
}
