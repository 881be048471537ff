//! Wires the fronts to the node: [`paxsql_http::Db`] and
//! [`paxsql_pgwire::Db`] over the [`Router`] above the node, plus
//! membership and the fault switch for tests.

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use paxsql_http::{Db, Limits, ReadOptions, WriteOptions};
use paxsql_node::NodeHandle;
use paxsql_router::Router as Shards;
use paxsql_types::{ReadLevel, RequestError, Response, Statement};
use std::time::Instant;

/// The database as the fronts see it.
#[derive(Clone, Debug)]
pub struct Backend(pub Shards);

impl paxsql_pgwire::Db for Backend {
    async fn write(
        &self,
        stmts: Vec<Statement>,
        transaction: bool,
    ) -> Result<Response, RequestError> {
        self.0.execute(stmts, transaction, None).await
    }

    async fn read(
        &self,
        stmts: Vec<Statement>,
        level: ReadLevel,
        timeout: Option<std::time::Duration>,
    ) -> Result<Response, RequestError> {
        self.0.query(stmts, level, timeout).await
    }

    async fn probe(
        &self,
        stmts: Vec<Statement>,
        env: paxsql_types::ApplyEnv,
        timeout: Option<std::time::Duration>,
    ) -> Result<Response, RequestError> {
        self.0.probe(stmts, env, timeout).await
    }

    async fn commit(
        &self,
        stmts: Vec<Statement>,
        digests: Vec<u64>,
        env: paxsql_types::ApplyEnv,
    ) -> Result<Response, RequestError> {
        self.0.commit(stmts, digests, env).await
    }
}

impl Db for Backend {
    async fn execute(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
    ) -> Result<Response, RequestError> {
        self.0
            .execute(stmts, opts.transaction, opts.request_id)
            .await
    }

    async fn query(
        &self,
        stmts: Vec<Statement>,
        read: ReadOptions,
    ) -> Result<Response, RequestError> {
        self.0.query(stmts, read.level, read.timeout).await
    }

    async fn request(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
        read: ReadOptions,
    ) -> Result<Response, RequestError> {
        self.0
            .request(
                stmts,
                opts.transaction,
                opts.request_id,
                read.level,
                read.timeout,
            )
            .await
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.0.node().status()).unwrap_or_default()
    }

    async fn nodes(&self) -> serde_json::Value {
        serde_json::to_value(self.0.node().nodes()).unwrap_or_default()
    }

    async fn backup(&self, level: ReadLevel) -> Result<(Vec<u8>, u64), RequestError> {
        if self.0.is_sharded() {
            return Err(RequestError::BadRequest(
                "a backup of a sharded cluster (one file per data group) is not supported yet"
                    .into(),
            ));
        }
        self.0
            .node()
            .backup(level)
            .await
            .map(|(bytes, index)| (bytes, index.0))
    }

    async fn load(&self, image: Vec<u8>, opts: WriteOptions) -> Result<Response, RequestError> {
        if self.0.is_sharded() {
            return Err(RequestError::BadRequest(
                "loading a database file into a sharded cluster is not supported yet".into(),
            ));
        }
        self.0.node().load(image, opts.request_id).await
    }

    async fn ready(&self) -> Result<(), String> {
        self.0.node().ready()
    }

    async fn shards(&self) -> Result<serde_json::Value, RequestError> {
        self.0.shards().await
    }
}

/// The node's whole HTTP surface.
pub fn app(router: Shards, fault_injection: bool, metrics: PrometheusHandle) -> Router {
    let node = router.node().clone();
    let api = paxsql_http::router(Backend(router), Limits::default());
    let scrape = Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics);
    let members = Router::new()
        .route("/join", post(join))
        .route("/remove", axum::routing::delete(remove))
        .with_state(node.clone());
    let mut app = scrape.merge(members).merge(api);
    if fault_injection {
        let debug = Router::new()
            .route("/debug/isolate", post(isolate))
            .with_state(node);
        app = debug.merge(app);
    }
    app.layer(middleware::from_fn(count_requests))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    id: u64,
    addr: String,
    /// rqlite clients send it; every member votes here.
    #[serde(default)]
    #[allow(dead_code)]
    voter: Option<bool>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    id: u64,
}

/// `POST /join` `{"id": N, "addr": "HOST:PORT"}`: adds a node (its peer
/// address) to the cluster; answers the configuration it joins.
async fn join(State(node): State<NodeHandle>, body: axum::body::Bytes) -> HttpResponse {
    let body: JoinBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return member_error(RequestError::BadRequest(format!(
                "body must be {{\"id\": N, \"addr\": \"HOST:PORT\"}}: {e}"
            )))
        }
    };
    if body.id == 0 || !body.addr.contains(':') {
        return member_error(RequestError::BadRequest(
            "id must be 1 or more and addr HOST:PORT".into(),
        ));
    }
    tracing::info!(id = body.id, addr = %body.addr, "join asked");
    match node.join(paxsql_types::NodeId(body.id), body.addr).await {
        Ok(m) => Json(m).into_response(),
        Err(e) => member_error(e),
    }
}

/// `DELETE /remove` `{"id": N}`: removes a node from the cluster.
async fn remove(State(node): State<NodeHandle>, body: axum::body::Bytes) -> HttpResponse {
    let body: RemoveBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return member_error(RequestError::BadRequest(format!(
                "body must be {{\"id\": N}}: {e}"
            )))
        }
    };
    tracing::info!(id = body.id, "remove asked");
    match node.remove(paxsql_types::NodeId(body.id)).await {
        Ok(m) => Json(m).into_response(),
        Err(e) => member_error(e),
    }
}

fn member_error(e: RequestError) -> HttpResponse {
    let status = match &e {
        RequestError::BadRequest(_) => axum::http::StatusCode::BAD_REQUEST,
        _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

/// Installs the Prometheus recorder (once per process).
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    const LATENCY_BUCKETS: &[f64] = &[
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
    ];
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))
}

/// `GET /metrics`: Prometheus text format.
async fn render_metrics(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// Counts HTTP requests by endpoint and status, and times them.
async fn count_requests(req: Request, next: Next) -> HttpResponse {
    let endpoint = endpoint_label(req.uri().path());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("paxsql_http_requests_total", "endpoint" => endpoint, "status" => status)
        .increment(1);
    metrics::histogram!("paxsql_http_request_duration_seconds", "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
    response
}

/// A bounded set of endpoint labels (keys and unknown paths folded).
fn endpoint_label(path: &str) -> &'static str {
    match path {
        "/db/execute" => "/db/execute",
        "/db/query" => "/db/query",
        "/db/request" => "/db/request",
        "/status" => "/status",
        "/nodes" => "/nodes",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/kv" => "/kv",
        "/console" => "/console",
        "/join" => "/join",
        "/remove" => "/remove",
        p if p.starts_with("/kv/") => "/kv/{key}",
        p if p.starts_with("/debug/") => "/debug",
        _ => "other",
    }
}

#[derive(serde::Deserialize)]
struct Isolate {
    isolated: bool,
}

/// `POST /debug/isolate {"isolated": true|false}`: cuts this node off from
/// its peers, or reconnects it, while it keeps running.
async fn isolate(
    State(node): State<NodeHandle>,
    Json(body): Json<Isolate>,
) -> Json<serde_json::Value> {
    node.set_isolated(body.isolated);
    Json(serde_json::json!({"isolated": body.isolated}))
}
