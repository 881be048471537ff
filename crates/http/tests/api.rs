//! The HTTP API driven through the router with a fake [`Db`]: what the
//! node is asked for each request, and the exact JSON rqlite clients get.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use paxsql_http::{router, Db, Limits, ReadOptions, WriteOptions};
use paxsql_types::{
    LogIndex, Params, ReadLevel, RequestError, RequestId, Response, Statement, StmtResult, Value,
};
use serde_json::{json, Value as Json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

// ---------------------------------------------------------------- fake node

/// One call the router made on the node.
#[derive(Clone, Debug, PartialEq)]
enum Call {
    Execute(Vec<Statement>, WriteOptions),
    Query(Vec<Statement>, ReadLevel),
    Request(Vec<Statement>, WriteOptions, ReadLevel),
}

/// What the fake node answers with.
#[derive(Clone, Debug)]
enum Reply {
    Answer(Result<Response, RequestError>),
    /// Never answers.
    Hang,
}

#[derive(Clone)]
struct FakeDb {
    calls: Arc<Mutex<Vec<Call>>>,
    /// The time limit of every read asked for.
    read_timeouts: Arc<Mutex<Vec<Option<Duration>>>>,
    reply: Arc<Mutex<Reply>>,
    ready: Arc<Mutex<Result<(), String>>>,
}

impl FakeDb {
    fn answering(results: Vec<StmtResult>, index: u64) -> Self {
        FakeDb {
            calls: Arc::default(),
            read_timeouts: Arc::default(),
            reply: Arc::new(Mutex::new(Reply::Answer(Ok(Response {
                results,
                index: LogIndex(index),
            })))),
            ready: Arc::new(Mutex::new(Ok(()))),
        }
    }

    fn failing(e: RequestError) -> Self {
        let db = FakeDb::answering(vec![], 0);
        *db.reply.lock().unwrap() = Reply::Answer(Err(e));
        db
    }

    fn hanging() -> Self {
        let db = FakeDb::answering(vec![], 0);
        *db.reply.lock().unwrap() = Reply::Hang;
        db
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn only_call(&self) -> Call {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "expected exactly one call: {calls:?}");
        calls.into_iter().next().unwrap()
    }

    async fn answer(&self, call: Call) -> Result<Response, RequestError> {
        self.calls.lock().unwrap().push(call);
        let reply = self.reply.lock().unwrap().clone();
        match reply {
            Reply::Answer(answer) => answer,
            Reply::Hang => std::future::pending().await,
        }
    }
}

impl Db for FakeDb {
    async fn execute(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
    ) -> Result<Response, RequestError> {
        self.answer(Call::Execute(stmts, opts)).await
    }

    async fn query(
        &self,
        stmts: Vec<Statement>,
        read: ReadOptions,
    ) -> Result<Response, RequestError> {
        self.read_timeouts.lock().unwrap().push(read.timeout);
        self.answer(Call::Query(stmts, read.level)).await
    }

    async fn request(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
        read: ReadOptions,
    ) -> Result<Response, RequestError> {
        self.read_timeouts.lock().unwrap().push(read.timeout);
        self.answer(Call::Request(stmts, opts, read.level)).await
    }

    async fn status(&self) -> Json {
        json!({"node_id": 1, "role": "leader"})
    }

    async fn nodes(&self) -> Json {
        json!([{"id": 1, "address": "127.0.0.1:4001", "reachable": true, "leader": true}])
    }

    async fn backup(&self, _level: ReadLevel) -> Result<(Vec<u8>, u64), RequestError> {
        Ok((b"SQLite format 3\0".to_vec(), 7))
    }

    async fn load(&self, image: Vec<u8>, opts: WriteOptions) -> Result<Response, RequestError> {
        let stmts = vec![Statement::new(format!("load {} bytes", image.len()))];
        self.answer(Call::Execute(stmts, opts)).await
    }

    async fn ready(&self) -> Result<(), String> {
        self.ready.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------- helpers

fn exec(last_insert_id: i64, rows_affected: u64) -> StmtResult {
    StmtResult::Exec {
        last_insert_id,
        rows_affected,
    }
}

fn fiona_rows() -> StmtResult {
    StmtResult::Rows {
        columns: vec!["id".into(), "name".into()],
        types: vec!["integer".into(), "text".into()],
        values: vec![vec![Value::Integer(1), Value::Text("fiona".into())]],
    }
}

fn no_rows() -> StmtResult {
    StmtResult::Rows {
        columns: vec!["id".into(), "name".into()],
        types: vec!["integer".into(), "text".into()],
        values: vec![],
    }
}

fn positional(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.into(),
        params: Params::Positional(params),
    }
}

fn plain_write() -> WriteOptions {
    WriteOptions::default()
}

/// An answer as the client sees it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn error(&self) -> String {
        let body = self.json();
        let obj = body.as_object().expect("an error body is an object");
        assert_eq!(obj.len(), 1, "only `error` in {body}");
        body["error"]
            .as_str()
            .expect("error is a string")
            .to_owned()
    }

    /// Asserts a JSON error with `status` and returns its message.
    fn expect_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.header(header::CONTENT_TYPE),
            Some("application/json; charset=utf-8")
        );
        self.error()
    }

    /// Asserts a 200 JSON answer and returns it.
    fn expect_ok(&self) -> Json {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert_eq!(
            self.header(header::CONTENT_TYPE),
            Some("application/json; charset=utf-8")
        );
        self.json()
    }
}

async fn send_request(app: Router, request: Request<Body>) -> Answer {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn post_with(db: &FakeDb, limits: Limits, uri: &str, body: impl Into<Body>) -> Answer {
    let request = Request::post(uri).body(body.into()).unwrap();
    send_request(router(db.clone(), limits), request).await
}

async fn post(db: &FakeDb, uri: &str, body: impl Into<Body>) -> Answer {
    post_with(db, Limits::default(), uri, body).await
}

async fn get(db: &FakeDb, uri: &str) -> Answer {
    let request = Request::get(uri).body(Body::empty()).unwrap();
    send_request(router(db.clone(), Limits::default()), request).await
}

// ---------------------------------------------------------------- /db/execute

#[tokio::test]
async fn execute_plain_strings_answers_rqlite_shape_with_raft_index() {
    let db = FakeDb::answering(vec![exec(1, 1), exec(2, 1)], 42);
    let answer = post(
        &db,
        "/db/execute",
        r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO foo(name) VALUES('fiona')"]"#,
    )
    .await;
    assert_eq!(
        answer.expect_ok(),
        json!({
            "results": [
                {"last_insert_id": 1, "rows_affected": 1},
                {"last_insert_id": 2, "rows_affected": 1}
            ],
            "raft_index": 42
        })
    );
    assert_eq!(
        db.only_call(),
        Call::Execute(
            vec![
                Statement::new("CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT)"),
                Statement::new("INSERT INTO foo(name) VALUES('fiona')"),
            ],
            plain_write()
        )
    );
}

#[tokio::test]
async fn execute_positional_parameters() {
    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    post(
        &db,
        "/db/execute",
        r#"[["INSERT INTO foo(name, age) VALUES(?, ?)", "fiona", 20]]"#,
    )
    .await
    .expect_ok();
    assert_eq!(
        db.only_call(),
        Call::Execute(
            vec![positional(
                "INSERT INTO foo(name, age) VALUES(?, ?)",
                vec![Value::Text("fiona".into()), Value::Integer(20)]
            )],
            plain_write()
        )
    );
}

#[tokio::test]
async fn execute_named_parameters() {
    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    post(
        &db,
        "/db/execute",
        r#"[["INSERT INTO foo(name, age) VALUES(:name, :age)", {"name": "fiona", "age": 20}]]"#,
    )
    .await
    .expect_ok();
    let Call::Execute(stmts, _) = db.only_call() else {
        panic!("not an execute")
    };
    let Params::Named(mut named) = stmts[0].params.clone() else {
        panic!("not named: {:?}", stmts[0].params)
    };
    named.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        named,
        vec![
            ("age".to_owned(), Value::Integer(20)),
            ("name".to_owned(), Value::Text("fiona".into())),
        ]
    );
}

#[tokio::test]
async fn execute_mixed_statement_forms_in_one_body() {
    let db = FakeDb::answering(vec![exec(1, 1), exec(2, 1), exec(3, 1), exec(3, 0)], 9);
    post(
        &db,
        "/db/execute",
        r#"[
            "INSERT INTO foo(name) VALUES('a')",
            ["INSERT INTO foo(name) VALUES(?)", "b"],
            ["INSERT INTO foo(name) VALUES(:n)", {"n": "c"}],
            ["DELETE FROM foo WHERE 0"]
        ]"#,
    )
    .await
    .expect_ok();
    assert_eq!(
        db.only_call(),
        Call::Execute(
            vec![
                Statement::new("INSERT INTO foo(name) VALUES('a')"),
                positional(
                    "INSERT INTO foo(name) VALUES(?)",
                    vec![Value::Text("b".into())]
                ),
                Statement {
                    sql: "INSERT INTO foo(name) VALUES(:n)".into(),
                    params: Params::Named(vec![("n".into(), Value::Text("c".into()))]),
                },
                Statement::new("DELETE FROM foo WHERE 0"),
            ],
            plain_write()
        )
    );
}

#[tokio::test]
async fn parameter_values_of_every_kind() {
    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    post(
        &db,
        "/db/execute",
        r#"[["INSERT INTO t VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
             [0, 1, 255], 1.5, null, true, false, -7, 9223372036854775807, "text"]]"#,
    )
    .await
    .expect_ok();
    let Call::Execute(stmts, _) = db.only_call() else {
        panic!("not an execute")
    };
    assert_eq!(
        stmts[0].params,
        Params::Positional(vec![
            Value::Blob(vec![0, 1, 255]),
            Value::Real(1.5),
            Value::Null,
            Value::Integer(1),
            Value::Integer(0),
            Value::Integer(-7),
            Value::Integer(i64::MAX),
            Value::Text("text".into()),
        ])
    );
}

#[tokio::test]
async fn statement_errors_stay_in_their_slot() {
    let db = FakeDb::answering(
        vec![
            exec(1, 1),
            StmtResult::Error("UNIQUE constraint failed: foo.id".into()),
        ],
        3,
    );
    let answer = post(&db, "/db/execute", r#"["INSERT 1", "INSERT 2"]"#).await;
    assert_eq!(
        answer.expect_ok(),
        json!({
            "results": [
                {"last_insert_id": 1, "rows_affected": 1},
                {"error": "UNIQUE constraint failed: foo.id"}
            ],
            "raft_index": 3
        })
    );
}

#[tokio::test]
async fn transaction_flag_bare_or_with_a_value() {
    for (query, on) in [
        ("transaction", true),
        ("transaction=true", true),
        ("transaction=1", true),
        ("transaction=false", false),
        ("transaction=0", false),
        ("", false),
    ] {
        let db = FakeDb::answering(vec![exec(1, 1)], 1);
        post(&db, &format!("/db/execute?{query}"), r#"["INSERT 1"]"#)
            .await
            .expect_ok();
        let Call::Execute(_, opts) = db.only_call() else {
            panic!("not an execute")
        };
        assert_eq!(opts.transaction, on, "?{query}");
    }
}

#[tokio::test]
async fn harmless_rqlite_flags_are_ignored() {
    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    post(
        &db,
        "/db/execute?redirect&freshness=1s&freshness_strict&timeout=5s&db_timeout=2s&wait&whatever=1",
        r#"["INSERT 1"]"#,
    )
    .await
    .expect_ok();
    assert_eq!(
        db.only_call(),
        Call::Execute(vec![Statement::new("INSERT 1")], plain_write())
    );
}

#[tokio::test]
async fn queued_writes_are_refused_with_advice() {
    let db = FakeDb::answering(vec![], 0);
    let msg = post(&db, "/db/execute?queue", r#"["INSERT 1"]"#)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(
        msg.starts_with("queued writes (queue) are not supported"),
        "{msg}"
    );
    assert!(db.calls().is_empty());
}

#[tokio::test]
async fn request_id_from_query_or_header() {
    let with_id = |id: &str| WriteOptions {
        transaction: false,
        request_id: Some(RequestId(id.into())),
    };

    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    post(&db, "/db/execute?request_id=abc-1", r#"["INSERT 1"]"#)
        .await
        .expect_ok();
    assert_eq!(
        db.only_call(),
        Call::Execute(vec![Statement::new("INSERT 1")], with_id("abc-1"))
    );

    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    let request = Request::post("/db/execute")
        .header("X-Request-Id", "from-header")
        .body(Body::from(r#"["INSERT 1"]"#))
        .unwrap();
    send_request(router(db.clone(), Limits::default()), request)
        .await
        .expect_ok();
    assert_eq!(
        db.only_call(),
        Call::Execute(vec![Statement::new("INSERT 1")], with_id("from-header"))
    );

    // The query parameter wins over the header (a proxy may add the header).
    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    let request = Request::post("/db/request?request_id=from-query")
        .header("X-Request-Id", "from-header")
        .body(Body::from(r#"["INSERT 1"]"#))
        .unwrap();
    send_request(router(db.clone(), Limits::default()), request)
        .await
        .expect_ok();
    assert_eq!(
        db.only_call(),
        Call::Request(
            vec![Statement::new("INSERT 1")],
            with_id("from-query"),
            ReadLevel::Linearizable
        )
    );
}

#[tokio::test]
async fn bad_request_ids_are_400() {
    let db = FakeDb::answering(vec![], 0);
    let msg = post(&db, "/db/execute?request_id=", r#"["INSERT 1"]"#)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        msg,
        "bad request id: request id must be 1 to 128 bytes, got 0"
    );

    let long = "x".repeat(129);
    let msg = post(
        &db,
        &format!("/db/execute?request_id={long}"),
        r#"["INSERT 1"]"#,
    )
    .await
    .expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(
        msg,
        "bad request id: request id must be 1 to 128 bytes, got 129"
    );

    let request = Request::post("/db/execute")
        .header("X-Request-Id", &b"caf\xc3\xa9"[..])
        .body(Body::from(r#"["INSERT 1"]"#))
        .unwrap();
    let msg = send_request(router(db.clone(), Limits::default()), request)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(msg, "X-Request-Id header must be printable ASCII");
    assert!(db.calls().is_empty());
}

#[tokio::test]
async fn timings_adds_top_level_time_in_seconds() {
    let db = FakeDb::answering(vec![exec(1, 1)], 5);
    let body = post(&db, "/db/execute?timings", r#"["INSERT 1"]"#)
        .await
        .expect_ok();
    let time = body["time"].as_f64().expect("time is a float");
    assert!((0.0..10.0).contains(&time), "{time}");
    assert_eq!(body["raft_index"], 5);
    assert_eq!(body["results"][0].get("time"), None);
}

#[tokio::test]
async fn pretty_indents_four_spaces() {
    let db = FakeDb::answering(vec![exec(1, 1)], 5);
    let answer = post(&db, "/db/execute?pretty", r#"["INSERT 1"]"#).await;
    let body = answer.expect_ok();
    assert_eq!(
        body,
        json!({"results": [{"last_insert_id": 1, "rows_affected": 1}], "raft_index": 5})
    );
    assert!(
        answer.text().contains("\n    \"results\": ["),
        "{}",
        answer.text()
    );

    let compact = post(&db, "/db/execute", r#"["INSERT 1"]"#).await;
    assert!(!compact.text().contains('\n'));
}

// ---------------------------------------------------------------- /db/query

#[tokio::test]
async fn query_get_defaults_to_linearizable_and_has_no_raft_index() {
    let db = FakeDb::answering(vec![fiona_rows()], 8);
    let answer = get(&db, "/db/query?q=SELECT%20*%20FROM%20foo").await;
    assert_eq!(
        answer.expect_ok(),
        json!({"results": [{
            "columns": ["id", "name"],
            "types": ["integer", "text"],
            "values": [[1, "fiona"]]
        }]})
    );
    assert_eq!(
        db.only_call(),
        Call::Query(
            vec![Statement::new("SELECT * FROM foo")],
            ReadLevel::Linearizable
        )
    );
}

#[tokio::test]
async fn read_levels_by_every_name() {
    for (name, level) in [
        ("local", ReadLevel::Local),
        ("none", ReadLevel::Local),
        ("leader", ReadLevel::Leader),
        ("weak", ReadLevel::Leader),
        ("auto", ReadLevel::Leader),
        ("linearizable", ReadLevel::Linearizable),
        ("strong", ReadLevel::Linearizable),
        ("STRONG", ReadLevel::Linearizable),
        ("", ReadLevel::Linearizable),
    ] {
        let db = FakeDb::answering(vec![fiona_rows()], 1);
        get(&db, &format!("/db/query?q=SELECT+1&level={name}"))
            .await
            .expect_ok();
        assert_eq!(
            db.only_call(),
            Call::Query(vec![Statement::new("SELECT 1")], level),
            "level={name}"
        );
    }
}

#[tokio::test]
async fn read_timeout_is_passed_on_and_checked() {
    let db = FakeDb::answering(vec![no_rows()], 0);
    get(&db, "/db/query?q=SELECT+1&timeout=2s")
        .await
        .expect_ok();
    post(&db, "/db/query?timeout=500ms", r#"["SELECT 1"]"#)
        .await
        .expect_ok();
    post(&db, "/db/request", r#"["SELECT 1"]"#)
        .await
        .expect_ok();
    assert_eq!(
        *db.read_timeouts.lock().unwrap(),
        vec![
            Some(Duration::from_secs(2)),
            Some(Duration::from_millis(500)),
            None
        ]
    );
    for bad in ["soon", "0s", "1h"] {
        let msg = get(&db, &format!("/db/query?q=SELECT+1&timeout={bad}"))
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert!(msg.starts_with("timeout=") && msg.contains(bad), "{msg}");
    }
    assert_eq!(db.calls().len(), 3);
}

#[tokio::test]
async fn unknown_level_is_400_naming_the_levels() {
    let db = FakeDb::answering(vec![], 0);
    for answer in [
        get(&db, "/db/query?q=SELECT+1&level=eventual").await,
        post(&db, "/db/query?level=eventual", r#"["SELECT 1"]"#).await,
        post(&db, "/db/request?level=eventual", r#"["SELECT 1"]"#).await,
    ] {
        let msg = answer.expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(
            msg,
            "unknown read level \"eventual\": use local, leader or linearizable \
             (rqlite's none, weak, strong and auto are accepted too)"
        );
    }
    assert!(db.calls().is_empty());
}

#[tokio::test]
async fn query_post_takes_the_execute_body_and_level() {
    let db = FakeDb::answering(vec![fiona_rows(), fiona_rows()], 1);
    post(
        &db,
        "/db/query?level=weak",
        r#"["SELECT * FROM foo", ["SELECT * FROM foo WHERE name = :name", {"name": "fiona"}]]"#,
    )
    .await
    .expect_ok();
    assert_eq!(
        db.only_call(),
        Call::Query(
            vec![
                Statement::new("SELECT * FROM foo"),
                Statement {
                    sql: "SELECT * FROM foo WHERE name = :name".into(),
                    params: Params::Named(vec![("name".into(), Value::Text("fiona".into()))]),
                },
            ],
            ReadLevel::Leader
        )
    );
}

#[tokio::test]
async fn zero_rows_omit_values() {
    let db = FakeDb::answering(vec![no_rows()], 1);
    let body = get(&db, "/db/query?q=SELECT+*+FROM+foo").await.expect_ok();
    assert_eq!(
        body,
        json!({"results": [{"columns": ["id", "name"], "types": ["integer", "text"]}]})
    );
}

#[tokio::test]
async fn associative_rows_are_objects() {
    let db = FakeDb::answering(vec![fiona_rows(), no_rows()], 1);
    let body = post(
        &db,
        "/db/query?associative",
        r#"["SELECT * FROM foo", "SELECT * FROM foo WHERE 0"]"#,
    )
    .await
    .expect_ok();
    assert_eq!(
        body,
        json!({"results": [
            {"types": {"id": "integer", "name": "text"}, "rows": [{"id": 1, "name": "fiona"}]},
            {"types": {"id": "integer", "name": "text"}, "rows": []}
        ]})
    );
}

#[tokio::test]
async fn query_statement_error_in_its_slot() {
    let db = FakeDb::answering(
        vec![fiona_rows(), StmtResult::Error("no such table: bar".into())],
        1,
    );
    let body = post(
        &db,
        "/db/query",
        r#"["SELECT * FROM foo", "SELECT * FROM bar"]"#,
    )
    .await
    .expect_ok();
    assert_eq!(body["results"][1], json!({"error": "no such table: bar"}));
}

#[tokio::test]
async fn blob_values_are_base64_or_byte_arrays() {
    let blob_rows = StmtResult::Rows {
        columns: vec!["b".into(), "r".into(), "n".into()],
        types: vec!["blob".into(), "real".into(), "".into()],
        values: vec![vec![
            Value::Blob(b"hi!".to_vec()),
            Value::Real(2.5),
            Value::Null,
        ]],
    };
    let db = FakeDb::answering(vec![blob_rows], 1);
    let body = get(&db, "/db/query?q=SELECT+b,r,n+FROM+t")
        .await
        .expect_ok();
    assert_eq!(body["results"][0]["values"], json!([["aGkh", 2.5, null]]));
    let body = get(&db, "/db/query?q=SELECT+b,r,n+FROM+t&blob_array")
        .await
        .expect_ok();
    assert_eq!(
        body["results"][0]["values"],
        json!([[[104, 105, 33], 2.5, null]])
    );
}

#[tokio::test]
async fn query_get_needs_q() {
    let db = FakeDb::answering(vec![], 0);
    let msg = get(&db, "/db/query")
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(msg.starts_with("missing query parameter q"), "{msg}");
    let msg = get(&db, "/db/query?q=")
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(msg, "q: the SQL text is empty");
    assert!(db.calls().is_empty());
}

// ---------------------------------------------------------------- /db/request

#[tokio::test]
async fn request_mixes_reads_and_writes() {
    let db = FakeDb::answering(vec![exec(1, 1), fiona_rows()], 12);
    let body = post(
        &db,
        "/db/request?transaction&level=none&associative",
        r#"[["INSERT INTO foo(id, name) VALUES(?, ?)", 1, "fiona"], ["SELECT * FROM foo WHERE name=?", "fiona"]]"#,
    )
    .await
    .expect_ok();
    assert_eq!(
        body,
        json!({
            "results": [
                {"last_insert_id": 1, "rows_affected": 1},
                {"types": {"id": "integer", "name": "text"}, "rows": [{"id": 1, "name": "fiona"}]}
            ],
            "raft_index": 12
        })
    );
    assert_eq!(
        db.only_call(),
        Call::Request(
            vec![
                positional(
                    "INSERT INTO foo(id, name) VALUES(?, ?)",
                    vec![Value::Integer(1), Value::Text("fiona".into())]
                ),
                positional(
                    "SELECT * FROM foo WHERE name=?",
                    vec![Value::Text("fiona".into())]
                ),
            ],
            WriteOptions {
                transaction: true,
                request_id: None
            },
            ReadLevel::Local
        )
    );
}

// ---------------------------------------------------------------- bad input

/// Posts `body` to every statement endpoint; each must be a 400 with `msg`.
async fn assert_bad_body(body: &[u8], msg: &str) {
    for uri in ["/db/execute", "/db/query", "/db/request"] {
        let db = FakeDb::answering(vec![], 0);
        let got = post(&db, uri, body.to_vec())
            .await
            .expect_error(StatusCode::BAD_REQUEST);
        assert_eq!(got, msg, "{uri}");
        assert!(db.calls().is_empty(), "{uri} called the node");
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let db = FakeDb::answering(vec![], 0);
    let msg = post(&db, "/db/execute", r#"["SELECT 1""#)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(msg.starts_with("request body is not valid JSON: "), "{msg}");
}

#[tokio::test]
async fn each_kind_of_bad_body_is_400_with_its_reason() {
    let expected_body =
        r#"a JSON array of statements, e.g. ["SELECT 1"] or [["SELECT * FROM t WHERE id = ?", 1]]"#;
    assert_bad_body(
        b"",
        &format!("request body is empty; expected {expected_body}"),
    )
    .await;
    assert_bad_body(
        br#"{"q": "SELECT 1"}"#,
        &format!("request body must be {expected_body}; got an object"),
    )
    .await;
    assert_bad_body(
        br#""SELECT 1""#,
        &format!("request body must be {expected_body}; got a string"),
    )
    .await;
    assert_bad_body(b"[]", "request body has no statements: the array is empty").await;
    assert_bad_body(
        br#"["SELECT 1", 2]"#,
        "statement 2: expected a string or an array [sql, params...], got a number",
    )
    .await;
    assert_bad_body(
        br#"["SELECT 1", {"sql": "SELECT 2"}]"#,
        "statement 2: expected a string or an array [sql, params...], got an object",
    )
    .await;
    assert_bad_body(
        br#"[[]]"#,
        "statement 1: empty array; expected [sql, params...]",
    )
    .await;
    assert_bad_body(
        br#"[[1, "SELECT ?"]]"#,
        "statement 1: the first element of [sql, params...] must be the SQL text (a string), got a number",
    )
    .await;
    assert_bad_body(
        br#"[["SELECT ?", {"a": 1}, 2]]"#,
        "statement 1: parameter 1 is an object; named parameters go alone after the SQL: [sql, {\"name\": value}]",
    )
    .await;
    assert_bad_body(
        br#"[["SELECT :a", {"a": {"b": 1}}]]"#,
        "statement 1: parameter \"a\": expected a string, number, boolean, null or an array of bytes, got an object",
    )
    .await;
    assert_bad_body(
        br#"[["SELECT ?", [1, -1]]]"#,
        "statement 1: parameter 1: a BLOB is an array of bytes 0 to 255, got -1 in it",
    )
    .await;
    assert_bad_body(br#"[""]"#, "statement 1: the SQL text is empty").await;
}

#[tokio::test]
async fn non_utf8_body_is_400() {
    let db = FakeDb::answering(vec![], 0);
    let msg = post(&db, "/db/execute", &b"[\"SELECT '\xff'\"]"[..])
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert!(
        msg.starts_with("request body is not valid UTF-8: "),
        "{msg}"
    );
}

#[tokio::test]
async fn too_many_statements_is_400() {
    let db = FakeDb::answering(vec![], 0);
    let limits = Limits {
        statements_max: 2,
        ..Limits::default()
    };
    let msg = post_with(&db, limits, "/db/execute", r#"["A", "B", "C"]"#)
        .await
        .expect_error(StatusCode::BAD_REQUEST);
    assert_eq!(msg, "too many statements: 3, at most 2 in one request");
    assert!(db.calls().is_empty());
}

#[tokio::test]
async fn oversized_body_is_413_json_with_or_without_content_length() {
    let limits = Limits {
        body_bytes_max: 64,
        ..Limits::default()
    };
    let big = format!(r#"["{}"]"#, "x".repeat(100));
    let expected =
        "request body is larger than 64 bytes; split the statements over several requests";

    // No Content-Length: cut off while reading.
    let db = FakeDb::answering(vec![], 0);
    let msg = post_with(&db, limits.clone(), "/db/execute", big.clone())
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(msg, expected);

    // A declared Content-Length over the limit: refused before reading.
    let request = Request::post("/db/query")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .unwrap();
    let msg = send_request(router(db.clone(), limits.clone()), request)
        .await
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(msg, expected);
    assert!(db.calls().is_empty());

    // Exactly at the limit is fine.
    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    let fits = format!(r#"["{}"]"#, "x".repeat(60));
    assert_eq!(fits.len(), 64);
    post_with(&db, limits, "/db/execute", fits)
        .await
        .expect_ok();
}

#[tokio::test]
async fn default_limits_replace_axums_two_megabytes() {
    assert_eq!(
        Limits::default(),
        Limits {
            body_bytes_max: 16 * 1024 * 1024,
            statements_max: 10_000,
            request_timeout: Duration::from_secs(30),
        }
    );
    let db = FakeDb::answering(vec![exec(1, 1)], 1);
    let three_megabytes = format!(r#"["{}"]"#, "x".repeat(3 << 20));
    post(&db, "/db/execute", three_megabytes).await.expect_ok();
}

// ---------------------------------------------------------------- node errors

#[tokio::test]
async fn unavailable_is_503() {
    let db = FakeDb::failing(RequestError::Unavailable("no leader".into()));
    let answer = post(&db, "/db/execute", r#"["INSERT 1"]"#).await;
    assert_eq!(
        answer.expect_error(StatusCode::SERVICE_UNAVAILABLE),
        "no leader"
    );
    assert_eq!(answer.header(header::RETRY_AFTER), None);
}

#[tokio::test]
async fn overloaded_is_503_with_retry_after() {
    let db = FakeDb::failing(RequestError::Overloaded("1000 proposals in flight".into()));
    let answer = get(&db, "/db/query?q=SELECT+1").await;
    assert_eq!(
        answer.expect_error(StatusCode::SERVICE_UNAVAILABLE),
        "overloaded: 1000 proposals in flight"
    );
    assert_eq!(answer.header(header::RETRY_AFTER), Some("1"));
}

#[tokio::test]
async fn node_bad_request_is_400() {
    let db = FakeDb::failing(RequestError::BadRequest(
        "random() is not deterministic".into(),
    ));
    let answer = post(&db, "/db/request", r#"["INSERT 1"]"#).await;
    assert_eq!(
        answer.expect_error(StatusCode::BAD_REQUEST),
        "random() is not deterministic"
    );
}

#[tokio::test]
async fn a_request_that_outlasts_its_time_is_503() {
    let db = FakeDb::hanging();
    let limits = Limits {
        request_timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    let msg = post_with(&db, limits, "/db/execute", r#"["INSERT 1"]"#)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(msg.starts_with("request timed out after 50ms"), "{msg}");
    assert_eq!(db.calls().len(), 1);
}

// ---------------------------------------------------------------- routing

#[tokio::test]
async fn unknown_path_is_404_json() {
    let db = FakeDb::answering(vec![], 0);
    let msg = get(&db, "/db/nothing")
        .await
        .expect_error(StatusCode::NOT_FOUND);
    assert!(
        msg.starts_with("no such endpoint: GET /db/nothing"),
        "{msg}"
    );
}

#[tokio::test]
async fn wrong_method_is_405_json_with_allow() {
    let db = FakeDb::answering(vec![], 0);
    let answer = get(&db, "/db/execute").await;
    let msg = answer.expect_error(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(msg, "method not allowed on this endpoint; use POST");
    assert_eq!(answer.header(header::ALLOW), Some("POST"));

    let request = Request::builder()
        .method(Method::DELETE)
        .uri("/db/query")
        .body(Body::empty())
        .unwrap();
    let answer = send_request(router(db.clone(), Limits::default()), request).await;
    answer.expect_error(StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        answer.error(),
        "method not allowed on this endpoint; use GET or POST"
    );
    let allow = answer.header(header::ALLOW).unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let request = Request::post("/status").body(Body::empty()).unwrap();
    let answer = send_request(router(db.clone(), Limits::default()), request).await;
    assert_eq!(
        answer.expect_error(StatusCode::METHOD_NOT_ALLOWED),
        "method not allowed on this endpoint; use GET"
    );
    assert!(db.calls().is_empty());
}

// ---------------------------------------------------------------- status

#[tokio::test]
async fn status_and_nodes_pass_the_node_json_through() {
    let db = FakeDb::answering(vec![], 0);
    assert_eq!(
        get(&db, "/status").await.expect_ok(),
        json!({"node_id": 1, "role": "leader"})
    );
    let answer = get(&db, "/nodes?pretty").await;
    assert_eq!(
        answer.expect_ok(),
        json!([{"id": 1, "address": "127.0.0.1:4001", "reachable": true, "leader": true}])
    );
    assert!(answer.text().contains("\n    {"), "{}", answer.text());
}

#[tokio::test]
async fn readyz_is_text_200_when_ready_and_503_with_the_reason() {
    let db = FakeDb::answering(vec![], 0);
    let answer = get(&db, "/readyz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header(header::CONTENT_TYPE),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(answer.text(), "[+]node ok\n[+]leader ok\n[+]store ok\n");

    *db.ready.lock().unwrap() = Err("no leader elected yet".into());
    let answer = get(&db, "/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.text(),
        "[+]node ok\n[-]not ready: no leader elected yet\n"
    );

    let answer = get(&db, "/readyz?noleader").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "[+]node ok\n");
}

// ---------------------------------------------------------------- serve

#[tokio::test]
async fn serve_answers_over_tcp_and_stops_on_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let db = FakeDb::answering(vec![fiona_rows()], 1);
    let server = tokio::spawn(paxsql_http::serve(
        listener,
        db,
        Limits::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /db/query?q=SELECT+1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.ends_with(r#""values":[[1,"fiona"]]}]}"#), "{raw}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
