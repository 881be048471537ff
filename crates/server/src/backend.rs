//! Wires the HTTP API to the node: [`paxsql_http::Db`] over a
//! [`NodeHandle`], plus the fault switch for tests.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use paxsql_http::{Db, Limits, WriteOptions};
use paxsql_node::NodeHandle;
use paxsql_types::{ReadLevel, RequestError, Response, Statement};

/// The node as the HTTP API sees it.
#[derive(Clone, Debug)]
pub struct Backend(pub NodeHandle);

impl Db for Backend {
    async fn execute(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
    ) -> Result<Response, RequestError> {
        self.0.write(stmts, opts.transaction, opts.request_id).await
    }

    async fn query(
        &self,
        stmts: Vec<Statement>,
        level: ReadLevel,
    ) -> Result<Response, RequestError> {
        self.0.read(stmts, level).await
    }

    async fn request(
        &self,
        stmts: Vec<Statement>,
        opts: WriteOptions,
        level: ReadLevel,
    ) -> Result<Response, RequestError> {
        self.0
            .request(stmts, opts.transaction, opts.request_id, level)
            .await
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.0.status()).unwrap_or_default()
    }

    async fn nodes(&self) -> serde_json::Value {
        serde_json::to_value(self.0.nodes()).unwrap_or_default()
    }

    async fn ready(&self) -> Result<(), String> {
        self.0.ready()
    }
}

/// The node's whole HTTP surface.
pub fn app(node: NodeHandle, fault_injection: bool) -> Router {
    let api = paxsql_http::router(Backend(node.clone()), Limits::default());
    if !fault_injection {
        return api;
    }
    let debug = Router::new()
        .route("/debug/isolate", post(isolate))
        .with_state(node);
    debug.merge(api)
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
