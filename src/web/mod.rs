//! The device's web interface (axum): the paper's upload page, a versioned JSON API, a live
//! view of the appliance, health and Prometheus metrics. `router` builds everything so tests
//! drive it without a socket; `serve` runs it with connection and timeout limits.
//!
//! Memory is bounded on every route: upload bodies only after admission
//! (`max_concurrent + queue` at once), every other body at `SMALL_BODY` bytes, connections at
//! `max_connections`, request heads at 64 KiB, decoding by `preprocess::decode_image`'s budget.

mod auth;
use auth::*;
mod upload;
pub use upload::*;
mod pages;
pub use pages::*;
mod api;
use api::*;
mod prometheus;
use prometheus::*;

mod security;
mod server;

pub use security::token_eq;
use security::{RateLimit, Sessions};
pub use server::{per_client_limit, serve};

use crate::config::WebConfig;
use crate::model::Model;
use crate::pipeline::Shared;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Body limit of every route but the two upload routes (login form, freeze, ...).
pub const SMALL_BODY: usize = 16 * 1024;

/// Upper bounds (ms) of the latency histogram buckets in /metrics.
const BUCKETS_MS: [f64; 10] = [
    10.0,
    25.0,
    50.0,
    100.0,
    200.0,
    400.0,
    800.0,
    1600.0,
    3200.0,
    f64::INFINITY,
];

#[derive(Default)]
pub struct WebCounters {
    pub requests: AtomicU64,
    pub classified: AtomicU64,
    pub rejected_uploads: AtomicU64,
    /// Uploads that were fine but the model failed on: the device's fault (500), not the client's.
    pub inference_errors: AtomicU64,
    pub busy: AtomicU64,
    /// Live frames encoded to JPEG for `/api/v1/frame.jpg` (at most one per frame).
    pub frame_encodes: AtomicU64,
    /// Requests presenting a wrong token, and those refused by the rate limit.
    pub auth_failures: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Requests refused for a foreign `Host` or a cross-origin state change.
    pub refused_origin: AtomicU64,
    latency: [AtomicU64; 10],
    latency_sum_us: AtomicU64,
}

impl WebCounters {
    fn observe(&self, ms: f64) {
        let i = BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BUCKETS_MS.len() - 1);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct AppState {
    /// The upload model (swapped by fleet model updates).
    pub model: Arc<crate::model::ModelSlot>,
    pub live: Option<Arc<Shared>>,
    pub cfg: Arc<WebConfig>,
    /// Fleet counters for `/metrics`, set once when the fleet sink runs.
    #[cfg(feature = "fleet")]
    pub fleet: Arc<std::sync::OnceLock<Arc<crate::fleet::FleetStats>>>,
    /// The appliance's own quality thresholds, so uploads get the same warnings as the screen.
    quality: Arc<crate::config::PipelineConfig>,
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    pub counters: Arc<WebCounters>,
    started: Instant,
    sessions: Arc<Sessions>,
    /// Failed token checks: 5 per client IP then one per 2 s; 20 over all clients then 5/s.
    auth_limit: Arc<RateLimit>,
    /// HTTP freeze/release: one per `freeze_interval_ms`.
    freeze_limit: Arc<RateLimit>,
    /// The JPEG of the newest live frame (sequence number, bytes); the lock makes concurrent
    /// requests wait for one encode instead of each starting their own.
    frame_cache: Arc<tokio::sync::Mutex<Option<(u64, Bytes)>>>,
    /// Upload places held per client address.
    per_client: security::PerClient,
}

impl AppState {
    pub fn new(
        model: Arc<Model>,
        live: Option<Arc<Shared>>,
        cfg: WebConfig,
        quality: crate::config::PipelineConfig,
    ) -> AppState {
        if let Some(dir) = &cfg.save_uploads {
            // Temp files of uploads a crash or power loss interrupted are never complete.
            crate::storage::remove_stale_temps(dir);
        }
        let freeze_per_sec = 1000.0 / cfg.freeze_interval_ms.max(1) as f64;
        AppState {
            sessions: Arc::new(Sessions::new(Duration::from_secs(cfg.session_ttl_s.max(1)))),
            auth_limit: Arc::new(RateLimit::new(5.0, 0.5, 20.0, 5.0)),
            freeze_limit: Arc::new(RateLimit::new(1.0, freeze_per_sec, 1.0, freeze_per_sec)),
            frame_cache: Arc::new(tokio::sync::Mutex::new(None)),
            per_client: Default::default(),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            model: Arc::new(crate::model::ModelSlot::new(model)),
            #[cfg(feature = "fleet")]
            fleet: Default::default(),
            live,
            cfg: Arc::new(cfg),
            quality: Arc::new(quality),
            waiting: Arc::new(AtomicUsize::new(0)),
            counters: Arc::new(WebCounters::default()),
            started: Instant::now(),
        }
    }
}

/// A request error: status + message, rendered as JSON for the API and HTML for pages.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn too_many(what: &str, wait: Duration) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!("{what}: too many requests, try again later"),
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u32),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.message, "status": self.status.as_u16()})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub fn router(state: AppState) -> Router {
    // Only the two upload routes accept large bodies; everything else (login form included)
    // is capped at SMALL_BODY, so no route lets a client park megabytes in memory.
    let upload_limit = DefaultBodyLimit::max(upload_body_limit(&state.cfg));
    // Deliberately public: health checks, signing in and out, the sign-in page's stylesheet.
    // Every other route goes in `protected`, so a new route needs the token unless it is
    // added here on purpose.
    let public = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/static/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    include_str!("../../assets/web/style.css"),
                )
            }),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::public));
    let protected = Router::new()
        .route("/", get(index))
        .route(auth::UPLOAD_FORM, post(classify_form).layer(upload_limit))
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    include_str!("../../assets/web/app.js"),
                )
            }),
        )
        .route(auth::UPLOAD_API, post(classify_api).layer(upload_limit))
        .route("/api/v1/status", get(status))
        .route("/api/v1/model", get(model_manifest))
        .route("/api/v1/frame.jpg", get(frame_jpeg))
        .route("/api/v1/screen.png", get(screen_png))
        .route("/api/v1/freeze", post(freeze))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_auth));
    public
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(SMALL_BODY))
        .with_state(state)
}
