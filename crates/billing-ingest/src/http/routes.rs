//! The routes of the HTTP surface and their responses.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text (`billing_ingest_*`, `process_*`) |
//! | `GET /healthz` | `200 ok` while the process serves |
//! | `GET /readyz` | `200 ready` when the store answers its ping within [`READY_TIMEOUT`] and the forward listener is bound; else `503` and a one-line reason |
//! | `GET /api/v1/usage?from=&to=&instance=&type=&by=` | the usage report as `billing report --format json` prints it (byte for byte); `400 {"error": "..."}` for a refused range or filter |
//! | `GET /api/v1/summary` | the store's totals as `billing report --summary --format json` prints them |
//! | `GET /api/v1/key?key=KEY:TYPE` | one key's record, duplicates and conflicts as `billing report --key K --format json` prints them; `404 {"error": ...}` for a key the store does not know, `400` without `key` |
//! | `GET /` | the usage dashboard (`dashboard.rs`) |
//! | `GET /conflicts`, `GET /quarantine` | the newest rows of those tables |
//!
//! Every route answers `HEAD` too (axum), other methods get `405` with `Allow`, unknown paths
//! `404`. Request bodies are never read. HTML pages are sent with a `Content-Security-Policy`
//! that allows no script, no remote resource and no form target other than this server, and
//! `X-Content-Type-Options: nosniff`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::dashboard;
use super::params::Filters;
use super::state::{HttpSurface, READY_TIMEOUT};
use crate::{Format, Granularity, StoreError};

type Shared = Arc<HttpSurface>;
type Pairs = Query<Vec<(String, String)>>;

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The router of every route, over `surface`.
pub(crate) fn router(surface: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/key", get(key))
        .route("/", get(index))
        .route("/conflicts", get(conflicts))
        .route("/quarantine", get(quarantine))
        .fallback(not_found)
        .with_state(surface)
}

fn respond(status: u16, content_type: &'static str, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, body.into()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type == HTML {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    r
}

/// `{"error": message}` with `status`.
fn json_error(status: u16, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(status, JSON, body + "\n")
}

fn store_error(e: &StoreError) -> Response {
    let status = match e {
        StoreError::Range(_) => 400,
        StoreError::Unsupported(_) => 501,
        _ => 500,
    };
    json_error(status, &e.to_string())
}

async fn not_found() -> Response {
    respond(
        404,
        TEXT,
        "not found: try /, /metrics, /healthz, /readyz, /api/v1/usage, /api/v1/summary, /api/v1/key\n",
    )
}

async fn metrics(State(s): State<Shared>) -> Response {
    respond(
        200,
        crate::METRICS_CONTENT_TYPE,
        crate::encode_metrics(&s.registry),
    )
}

async fn healthz() -> Response {
    respond(200, TEXT, "ok\n")
}

/// One line, whatever the error's text holds.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn readyz(State(s): State<Shared>) -> Response {
    if !s.forward_is_bound() {
        return respond(503, TEXT, "not ready: the forward listener is not bound\n");
    }
    match tokio::time::timeout(READY_TIMEOUT, s.store.ping()).await {
        Ok(Ok(())) => respond(200, TEXT, "ready\n"),
        Ok(Err(e)) => respond(
            503,
            TEXT,
            format!("not ready: store: {}\n", one_line(&e.to_string())),
        ),
        Err(_) => respond(
            503,
            TEXT,
            format!("not ready: store did not answer within {READY_TIMEOUT:?}\n"),
        ),
    }
}

async fn usage(State(s): State<Shared>, Query(pairs): Pairs) -> Response {
    let query = match Filters::from_pairs(&pairs).query(Granularity::Hour) {
        Ok(q) => q,
        Err(e) => return json_error(400, &e),
    };
    let rows = match s.store.usage(&query).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let mut out = Vec::new();
    match crate::write_usage(&mut out, &rows, Format::Json) {
        Ok(()) => respond(200, JSON, String::from_utf8_lossy(&out).into_owned()),
        Err(e) => json_error(500, &e.to_string()),
    }
}

async fn summary(State(s): State<Shared>) -> Response {
    let summary = match s.store.summary().await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    let mut out = Vec::new();
    match crate::write_summary(&mut out, &summary, Format::Json) {
        Ok(()) => respond(200, JSON, String::from_utf8_lossy(&out).into_owned()),
        Err(e) => json_error(500, &e.to_string()),
    }
}

async fn key(State(s): State<Shared>, Query(pairs): Pairs) -> Response {
    let Some((_, key)) = pairs.iter().find(|(name, _)| name == "key") else {
        return json_error(400, "missing key: use /api/v1/key?key=KEY:TYPE");
    };
    let report = match s.store.key(key).await {
        Ok(r) => r,
        Err(e) => return store_error(&e),
    };
    if !report.found() {
        return json_error(
            404,
            &format!("no record or conflict with unique key {key:?}"),
        );
    }
    let mut out = Vec::new();
    match crate::write_key(&mut out, &report, Format::Json) {
        Ok(()) => respond(200, JSON, String::from_utf8_lossy(&out).into_owned()),
        Err(e) => json_error(500, &e.to_string()),
    }
}

async fn index(State(s): State<Shared>, Query(pairs): Pairs) -> Response {
    let (status, body) = dashboard::usage(&s, &pairs, std::time::SystemTime::now()).await;
    respond(status, HTML, body)
}

async fn conflicts(State(s): State<Shared>, Query(pairs): Pairs) -> Response {
    let (status, body) = dashboard::conflicts(&s, &pairs).await;
    respond(status, HTML, body)
}

async fn quarantine(State(s): State<Shared>, Query(pairs): Pairs) -> Response {
    let (status, body) = dashboard::quarantine(&s, &pairs).await;
    respond(status, HTML, body)
}
