//! The web console at `GET /console`: a page to run SQL and watch the
//! cluster, served by every node.
//!
//! The page is three static files compiled into the binary
//! (`assets/console.{html,css,js}`): plain HTML, CSS and browser
//! JavaScript, no build step and nothing fetched from elsewhere, because
//! the machines it runs on may have no internet. The JavaScript is a client
//! of the same API everyone else uses:
//!
//! - each statement in the SQL box goes to `POST /db/request?level=...`
//!   on its own, in order, and its result slot becomes a table, a count of
//!   rows changed, or the error text;
//! - the cluster panel polls `GET /status` and `GET /nodes` every 1.5 s.
//!   `/nodes` reports every node's address, reachability and leadership,
//!   but the decided and applied indices only of the node serving the page
//!   (from `/status`); the page already shows `decided_index`,
//!   `applied_index` and `role` for every node as soon as `/nodes` entries
//!   carry them.
//! - on a sharded node (`/status` has `sharded` or several `groups`), the
//!   Shards panel shows `GET /shards` at the same refresh: the groups with
//!   their leaders, and every range (table, bounds, group, leader,
//!   generation, rows, bytes). It is hidden on a single-group cluster, which
//!   is never asked for `/shards`. At most one `/shards` request is out at
//!   a time, since it counts the rows of every range on its group.
//!
//! The page shows everything the server sends as text, never as HTML, and
//! its `Content-Security-Policy` allows scripts, styles and requests only
//! from the node itself.

use axum::http::header::{
    HeaderName, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const HTML: &str = include_str!("../assets/console.html");
const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

/// Only what the page needs: its own script, style and API, the inline
/// `data:` favicon, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src data:; base-uri 'none'; \
                      form-action 'none'; frame-ancestors 'none'";

/// The console's routes, to merge into the API's router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(|| asset(HTML, "text/html; charset=utf-8")))
        .route(
            "/console/console.css",
            get(|| asset(CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/console/console.js",
            get(|| asset(JS, "text/javascript; charset=utf-8")),
        )
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers: [(HeaderName, &'static str); 4] = [
        (CONTENT_TYPE, content_type),
        // The files change with the binary; an upgraded node must not be
        // shown with yesterday's script.
        (CACHE_CONTROL, "no-cache"),
        (CONTENT_SECURITY_POLICY, POLICY),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[test]
    fn the_page_loads_only_its_own_files() {
        for needle in [
            "/console/console.css",
            "/console/console.js",
            "href=\"data:,\"",
        ] {
            assert!(HTML.contains(needle), "{needle}");
        }
        for asset in [HTML, CSS, JS] {
            assert!(!asset.contains("http://"), "no absolute URLs");
            assert!(!asset.contains("https://"), "no absolute URLs");
        }
    }

    #[tokio::test]
    async fn each_file_is_served_with_its_type_and_the_policy() {
        for (path, content_type, body) in [
            ("/console", "text/html; charset=utf-8", HTML),
            ("/console/console.css", "text/css; charset=utf-8", CSS),
            ("/console/console.js", "text/javascript; charset=utf-8", JS),
        ] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let response = routes::<()>().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert_eq!(headers[CONTENT_TYPE], content_type, "{path}");
            assert_eq!(headers[CONTENT_SECURITY_POLICY], POLICY, "{path}");
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert_eq!(bytes, body.as_bytes(), "{path}");
        }
    }
}
