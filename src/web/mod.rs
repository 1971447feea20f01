//! The device's web interface (axum): the paper's upload page, a versioned JSON API, a live
//! view of the appliance, health and Prometheus metrics. `router` builds everything so tests
//! drive it without a socket; `serve` runs it with connection and timeout limits.
//!
//! Memory is bounded on every route: upload bodies only after admission
//! (`max_concurrent + queue` at once), every other body at `SMALL_BODY` bytes, connections at
//! `max_connections`, request heads at 64 KiB, decoding by `preprocess::decode_image`'s budget.

mod security;
mod server;

pub use security::token_eq;
pub use server::{per_client_limit, serve};
use security::{Credential, RateLimit, SESSION_COOKIE, Sessions};

use crate::config::WebConfig;
use crate::model::{Model, Timings};
use crate::pipeline::Shared;
use crate::model::preprocess::{ImageError, decode_image, sniff_format};
use crate::pipeline::quality;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;
use std::sync::Arc;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
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
    pub model: Arc<Model>,
    pub live: Option<Arc<Shared>>,
    pub cfg: Arc<WebConfig>,
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
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
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
            crate::sinks::storage::remove_stale_temps(dir);
        }
        let freeze_per_sec = 1000.0 / cfg.freeze_interval_ms.max(1) as f64;
        AppState {
            sessions: Arc::new(Sessions::new(Duration::from_secs(cfg.session_ttl_s.max(1)))),
            auth_limit: Arc::new(RateLimit::new(5.0, 0.5, 20.0, 5.0)),
            freeze_limit: Arc::new(RateLimit::new(1.0, freeze_per_sec, 1.0, freeze_per_sec)),
            frame_cache: Arc::new(tokio::sync::Mutex::new(None)),
            per_client: Arc::new(Mutex::new(HashMap::new())),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            model,
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
    Router::new()
        .route("/", get(index))
        .route("/classify", post(classify_form).layer(upload_limit))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    include_str!("../../assets/web/app.js"),
                )
            }),
        )
        .route(
            "/static/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    include_str!("../../assets/web/style.css"),
                )
            }),
        )
        .route("/api/v1/classify", post(classify_api).layer(upload_limit))
        .route("/api/v1/status", get(status))
        .route("/api/v1/model", get(model_manifest))
        .route("/api/v1/frame.jpg", get(frame_jpeg))
        .route("/api/v1/freeze", post(freeze))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(SMALL_BODY))
        .with_state(state)
}

/// Multipart framing adds a little over the file itself.
fn upload_body_limit(cfg: &WebConfig) -> usize {
    cfg.max_upload_bytes + 64 * 1024
}

fn is_upload_route(path: &str) -> bool {
    matches!(path, "/classify" | "/api/v1/classify")
}

fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Host and origin checks, access control, body size pre-check and security headers for
/// every response.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    st.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let mut resp = if !security::host_allowed(req.headers(), &st.cfg.allowed_hosts) {
        // A DNS-rebinding page reaches the device under the attacker's host name.
        st.counters.refused_origin.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unknown Host: use the device's IP address or a name in web.allowed_hosts",
        )
        .into_response()
    } else if security::cross_origin(req.method(), req.headers()) {
        st.counters.refused_origin.fetch_add(1, Ordering::Relaxed);
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: state changes must come from this device's own pages",
        )
        .into_response()
    } else {
        let open = matches!(
            path.as_str(),
            "/healthz" | "/login" | "/logout" | "/static/style.css"
        );
        match (st.cfg.token.as_deref(), open) {
            (Some(token), false) => match authorise(&st, &req, token) {
                Ok(()) => pre_checked(&st, req, next).await,
                Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => e.into_response(),
                Err(_) if !(path.starts_with("/api/") || path == "/metrics") => {
                    Redirect::to("/login").into_response()
                }
                Err(e) => e.into_response(),
            },
            _ => pre_checked(&st, req, next).await,
        }
    };
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A valid session cookie, or the right bearer token. Wrong tokens are rate-limited per client
/// and overall (a session id is 128 random bits: guessing those needs no limit).
fn authorise(st: &AppState, req: &Request, token: &str) -> Result<(), ApiError> {
    let unauthorised = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "access token required (Authorization: Bearer <token>, or sign in at /login)",
        )
    };
    match security::credential(req.headers()) {
        Some(Credential::Session(id)) if st.sessions.valid(&id) => Ok(()),
        Some(Credential::Bearer(given)) => {
            let ip = client_ip(req);
            if let Err(wait) = st.auth_limit.allowed(ip) {
                st.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::too_many("authentication", wait));
            }
            if token_eq(&given, token) {
                return Ok(());
            }
            st.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            let _ = st.auth_limit.spend(ip);
            Err(unauthorised())
        }
        _ => Err(unauthorised()),
    }
}

async fn pre_checked(st: &AppState, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let upload = is_upload_route(req.uri().path());
    let limit = if upload {
        upload_body_limit(&st.cfg)
    } else {
        SMALL_BODY
    };
    if declared.is_some_and(|n| n > limit) {
        if upload {
            st.counters.rejected_uploads.fetch_add(1, Ordering::Relaxed);
        }
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            if upload {
                format!("upload larger than {} bytes", st.cfg.max_upload_bytes)
            } else {
                format!("request body larger than {SMALL_BODY} bytes")
            },
        )
        .into_response();
    }
    next.run(req).await
}

#[derive(serde::Serialize)]
pub struct ClassifyResult {
    /// False when the image failed the quality gate (too dark, too bright, blurred): like the
    /// live pipeline, such an image gets no class; `classes` is empty and `headline` says why.
    pub classified: bool,
    pub classes: Vec<crate::model::classifier::ClassScore>,
    pub headline: String,
    pub uncertain: bool,
    /// A clinician should see this lesion (malignant classes likely); null when not classified.
    pub refer: Option<bool>,
    /// Calibrated probability of the refer (malignant) classes; null when not classified.
    pub malignant_probability: Option<f32>,
    pub quality: serde_json::Value,
    pub model: serde_json::Value,
    pub timings: Timings,
    pub total_ms: f64,
}

/// A place among the uploads being received, queued or classified; given back on drop however
/// the request ends (a client that disconnects drops the handler's future mid-way).
struct Place(Arc<AtomicUsize>, Option<(Arc<Mutex<HashMap<IpAddr, usize>>>, IpAddr)>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        if let Some((map, ip)) = &self.1 {
            let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(ip);
                }
            }
        }
    }
}

/// Admission control, before the body is read: at most `max_concurrent + queue` uploads are
/// in memory at once, so memory stays bounded however many clients connect, and one client
/// address holds at most half of those places (so one machine cannot keep every other client
/// out). Beyond that the client is told to come back (503 + Retry-After) without its body
/// being read.
fn admit(st: &AppState, ip: Option<IpAddr>) -> Result<Place, ApiError> {
    let busy = || {
        st.counters.busy.fetch_add(1, Ordering::Relaxed);
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "busy: too many classifications in progress".into(),
            retry_after: Some(1),
        }
    };
    let places = st.cfg.max_concurrent + st.cfg.queue;
    let mut per_client = None;
    if let Some(ip) = ip {
        let mut m = st.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= (places / 2).max(1) {
            return Err(busy());
        }
        *n += 1;
        per_client = Some((st.per_client.clone(), ip));
    }
    let before = st.waiting.fetch_add(1, Ordering::SeqCst);
    let place = Place(st.waiting.clone(), per_client);
    if before >= places {
        drop(place);
        return Err(busy());
    }
    Ok(place)
}

/// Longest side of the result page's preview.
const PREVIEW_PX: u32 = 480;

/// The preview's size: the image scaled to fit PREVIEW_PX x PREVIEW_PX (never up), aspect
/// kept, at least 1 px a side (64-bit arithmetic: 1 x 8,947,849 images exist).
pub fn preview_size(width: u32, height: u32) -> (u32, u32) {
    let long = width.max(height).max(1) as f64;
    let s = (PREVIEW_PX as f64 / long).min(1.0);
    let f = |v: u32| ((v as f64 * s).round() as u32).clamp(1, PREVIEW_PX);
    (f(width), f(height))
}

fn encode_jpeg(img: &image::RgbImage, quality: u8) -> Result<Vec<u8>, image::ImageError> {
    let mut v = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut v, quality).encode_image(img)?;
    Ok(v)
}

/// Saved uploads are the decoded, orientation-corrected pixels re-encoded (JPEG q95): no EXIF
/// (GPS, device, time), ICC or comment metadata of the original file reaches the disk.
fn save_upload(cfg: &WebConfig, dir: &std::path::Path, img: &image::RgbImage) {
    let r = encode_jpeg(img, 95)
        .map_err(std::io::Error::other)
        .and_then(|jpg| crate::sinks::storage::save_atomic(dir, "upload", "jpg", &jpg))
        .and_then(|_| {
            crate::sinks::storage::enforce_retention(dir, "upload", cfg.save_max_files, cfg.save_max_bytes)
        });
    if let Err(e) = r {
        eprintln!("warning: could not save upload: {e}");
    }
}

/// Give freed heap pages back to the OS after a large decode (glibc keeps them otherwise, so
/// RSS would stay at its peak after a burst of big uploads).
fn release_memory(bytes: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if bytes >= 16 << 20 {
        // SAFETY: malloc_trim only returns free memory to the OS.
        unsafe {
            libc::malloc_trim(0);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = bytes;
}

/// Size/type/decode checks, bounded concurrency, the quality gate, then the shared classifier.
/// With `preview`, a small JPEG of the image for the result page (None when it could not be
/// made). The decoded image never leaves the classification slot.
async fn run_classification(
    st: &AppState,
    bytes: Bytes,
    preview: bool,
) -> Result<(ClassifyResult, Option<Vec<u8>>), ApiError> {
    let reject = |status: StatusCode, msg: String| {
        st.counters.rejected_uploads.fetch_add(1, Ordering::Relaxed);
        ApiError::new(status, msg)
    };
    if bytes.is_empty() {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "no image in the request".into(),
        ));
    }
    if bytes.len() > st.cfg.max_upload_bytes {
        return Err(reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "upload of {} bytes exceeds {} bytes",
                bytes.len(),
                st.cfg.max_upload_bytes
            ),
        ));
    }
    if sniff_format(&bytes).is_none() {
        return Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only JPEG and PNG images are accepted (checked by content, not file name)".into(),
        ));
    }
    let permit = st.slots.clone().acquire_owned().await;
    let t0 = Instant::now();
    let (model, cfg, gate) = (st.model.clone(), st.cfg.clone(), st.quality.clone());
    let out = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let img = decode_image(&bytes, "upload", cfg.max_pixels)?;
        drop(bytes);
        let decoded = img.as_raw().len();
        if let Some(dir) = &cfg.save_uploads {
            save_upload(&cfg, dir, &img);
        }
        let q = quality::measure(&img);
        let issue = quality::check(&q, &gate);
        let thumb = preview.then(|| {
            let (w, h) = preview_size(img.width(), img.height());
            encode_jpeg(&image::imageops::thumbnail(&img, w, h), 85)
                .map_err(|e| eprintln!("warning: upload preview: {e}"))
                .ok()
        });
        // An image the live pipeline would not classify gets no class here either. A model
        // failure is kept apart from a bad image: it is the device's fault, not the client's.
        let r = match issue {
            None => Some(model.classify(&img, false)),
            Some(_) => None,
        };
        drop(img);
        release_memory(decoded);
        Ok::<_, ImageError>((q, issue, r, thumb.flatten()))
    })
    .await;
    let (q, issue, r, thumb) = match out {
        Ok(Ok((q, issue, Some(Err(e)), _))) => {
            st.counters.inference_errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("error: upload: {e:#}");
            let _ = (q, issue);
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                String::from("the device could not classify this image (inference failed; see the device log)"),
            ));
        }
        Ok(Ok((q, issue, r, thumb))) => (q, issue, r.map(|r| r.expect("errors handled above")), thumb),
        Ok(Err(e)) => return Err(reject(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())),
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("classification task failed: {e}"),
            ));
        }
    };
    let total_ms = t0.elapsed().as_secs_f64() * 1e3;
    st.counters.classified.fetch_add(1, Ordering::Relaxed);
    st.counters.observe(total_ms);
    let m = &st.model.manifest;
    let quality = json!({"luma": q.luma, "sharpness": q.sharpness, "warning": issue.map(|i| i.advice())});
    let model = json!({"name": m.name, "sha256": m.sha256, "precision": m.precision});
    let result = match (r, issue) {
        (Some((p, timings)), _) => ClassifyResult {
            classified: true,
            classes: p.top_k(m.classes.len(), m),
            headline: p.headline(m),
            uncertain: p.uncertain,
            refer: Some(p.refer),
            malignant_probability: Some(p.malignant_probability),
            quality,
            model,
            timings,
            total_ms,
        },
        (None, issue) => ClassifyResult {
            classified: false,
            classes: vec![],
            headline: format!(
                "Not classified: {}",
                issue.map_or("image quality", |i| i.advice())
            ),
            uncertain: true,
            refer: None,
            malignant_probability: None,
            quality,
            model,
            timings: Timings::default(),
            total_ms,
        },
    };
    Ok((result, thumb))
}

async fn first_file(mut mp: Multipart) -> Result<Bytes, ApiError> {
    loop {
        match mp.next_field().await {
            Ok(Some(field)) => {
                let is_file = field.file_name().is_some() || field.name() == Some("image");
                let data = field.bytes().await.map_err(|e| {
                    ApiError::new(e.status(), format!("reading upload: {}", e.body_text()))
                })?;
                if is_file {
                    return Ok(data);
                }
            }
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "multipart form has no file field",
                ));
            }
            Err(e) => {
                return Err(ApiError::new(
                    e.status(),
                    format!("bad multipart body: {}", e.body_text()),
                ));
            }
        }
    }
}

async fn body_image(st: &AppState, req: Request) -> Result<Bytes, ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let r = if is_multipart {
        let mp = Multipart::from_request(req, st)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        first_file(mp).await
    } else {
        Bytes::from_request(req, st)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))
    };
    if let Err(e) = &r {
        if e.status == StatusCode::PAYLOAD_TOO_LARGE {
            st.counters.rejected_uploads.fetch_add(1, Ordering::Relaxed);
        }
    }
    r
}

/// Time a body may take before `web.min_upload_rate` applies.
const BODY_GRACE: Duration = Duration::from_secs(2);

/// The upload's body within `web.body_timeout_ms`, and after the first 2 s at no less than
/// `web.min_upload_rate` bytes/s on average: a client that sends slowly (or stalls) gets 408
/// and its admission place back within seconds, instead of holding it for as long as it likes.
async fn timed_body_image(st: &AppState, req: Request) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let req = req.map(|b| {
        axum::body::Body::new(b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                counter.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
            f
        }))
    });
    let total = Duration::from_millis(st.cfg.body_timeout_ms);
    let min_rate = st.cfg.min_upload_rate as f64;
    let start = Instant::now();
    let read = body_image(st, req);
    tokio::pin!(read);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let too_slow = |why: String| {
        st.counters.rejected_uploads.fetch_add(1, Ordering::Relaxed);
        Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, why))
    };
    loop {
        tokio::select! {
            r = &mut read => return r,
            _ = tick.tick() => {
                let el = start.elapsed();
                if el > total {
                    return too_slow(format!(
                        "upload not received within {:.0} s (web.body_timeout_ms)",
                        total.as_secs_f64()
                    ));
                }
                let got = received.load(Ordering::Relaxed) as f64;
                if min_rate > 0.0 && el > BODY_GRACE && got < min_rate * (el - BODY_GRACE).as_secs_f64() {
                    return too_slow(format!(
                        "upload too slow: {:.0} bytes in {:.1} s (web.min_upload_rate = {} bytes/s)",
                        got,
                        el.as_secs_f64(),
                        st.cfg.min_upload_rate
                    ));
                }
            }
        }
    }
}

async fn classify_api(
    State(st): State<AppState>,
    req: Request,
) -> Result<Json<ClassifyResult>, ApiError> {
    let _place = admit(&st, client_ip(&req))?;
    let bytes = timed_body_image(&st, req).await?;
    Ok(Json(run_classification(&st, bytes, false).await?.0))
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head><body>\
         <header><h1>dermcam</h1></header><div class=\"notice\" id=\"disclaimer\">{d}. Do not use it to make decisions about anyone's health.</div>\
         {body}<footer>Research and education software. Model trained on public ISIC / web images (CC BY-NC); results may be wrong.</footer>\
         <script src=\"/static/app.js\"></script></body></html>",
        t = escape(title),
        d = escape(crate::DISCLAIMER),
    ))
}

async fn index(State(st): State<AppState>) -> Html<String> {
    let m = &st.model.manifest;
    let live = if st.live.is_some() {
        "<section><h2>Live device</h2><p class=\"headline\" id=\"live-label\">Connecting...</p><p id=\"live-meta\"></p>\
         <img id=\"live-frame\" class=\"preview\" alt=\"current camera frame\" hidden><p><button id=\"freeze\">Freeze / release</button></p></section>"
    } else {
        ""
    };
    page(
        "dermcam",
        &format!(
            "<main><section><h2>Classify an image</h2><form action=\"/classify\" method=\"post\" enctype=\"multipart/form-data\">\
             <p><input type=\"file\" name=\"image\" accept=\"image/jpeg,image/png,image/*\" capture=\"environment\" required></p>\
             <p><input type=\"submit\" value=\"Classify\"></p></form>\
             <p>JPEG or PNG, up to {mb} MB. Model: <b>{name}</b> ({arch}, {prec:?}). {stored}</p></section>{live}{logout}</main>",
            mb = st.cfg.max_upload_bytes / (1024 * 1024),
            stored = if st.cfg.save_uploads.is_some() {
                format!(
                    "Uploaded images are stored on this device (without their metadata; the newest {} are kept).",
                    st.cfg.save_max_files
                )
            } else {
                "Images are not stored.".into()
            },
            logout = if st.cfg.token.is_some() {
                "<section><form method=\"post\" action=\"/logout\"><p><input type=\"submit\" value=\"Sign out\"></p></form></section>"
            } else {
                ""
            },
            name = escape(&m.name),
            arch = escape(&m.architecture),
            prec = m.precision
        ),
    )
}

async fn classify_form(State(st): State<AppState>, req: Request) -> Response {
    let result = match admit(&st, client_ip(&req)) {
        Ok(_place) => match timed_body_image(&st, req).await {
            Ok(b) => run_classification(&st, b, true).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok((r, thumb)) => {
            let preview = match thumb {
                Some(jpg) => format!(
                    "<img class=\"preview\" alt=\"uploaded image\" src=\"data:image/jpeg;base64,{}\">",
                    base64::engine::general_purpose::STANDARD.encode(&jpg)
                ),
                None => "<p id=\"no-preview\">Preview unavailable for this image.</p>".into(),
            };
            let mut rows = String::new();
            for c in r.classes.iter().take(3) {
                rows += &format!(
                    // <progress>, not inline widths: the CSP forbids inline styles.
                    "<tr><td>{}</td><td class=\"barcell\"><progress max=\"1000\" value=\"{:.0}\">{:.1}%</progress></td><td>{:.1}%</td></tr>",
                    escape(&c.name),
                    c.probability * 1000.0,
                    c.probability * 100.0,
                    c.probability * 100.0
                );
            }
            let warn = r
                .quality
                .get("warning")
                .and_then(|w| w.as_str())
                .map(|w| format!("<p class=\"warn\">Image quality: {}</p>", escape(w)))
                .unwrap_or_default();
            let head = if !r.classified {
                format!(
                    "<p class=\"headline\" id=\"prediction\">Not classified</p><p>{}: the device does not classify images it would refuse from its own camera. Retake the photo.</p>",
                    escape(r.headline.trim_start_matches("Not classified: "))
                )
            } else if r.uncertain {
                "<p class=\"headline\" id=\"prediction\">Uncertain</p><p>The model is not confident about any class for this image.</p>".to_string()
            } else {
                format!(
                    "<p class=\"headline\" id=\"prediction\">{}</p>",
                    escape(&r.headline)
                )
            };
            let refer = match (r.refer, r.malignant_probability) {
                (Some(true), Some(mp)) => format!(
                    "<p class=\"refer\" id=\"refer\">REFER: a clinician should see this lesion (malignant classes {:.0}%).</p>",
                    mp * 100.0
                ),
                (Some(false), Some(mp)) => format!(
                    "<p id=\"refer\">No referral flag (malignant classes {:.0}%). This is not a diagnosis.</p>",
                    mp * 100.0
                ),
                _ => String::new(),
            };
            let head = head + &refer;
            page(
                "dermcam result",
                &format!(
                    "<main><section class=\"{cls}\"><h2>Result</h2>{head}{warn}<table>{rows}</table>\
                     <p>Model {model}; {ms:.0} ms.</p><p><a href=\"/\">Classify another image</a></p></section>\
                     <section>{preview}</section></main>",
                    cls = if r.uncertain { "uncertain" } else { "" },
                    model = escape(r.model["name"].as_str().unwrap_or("")),
                    ms = r.total_ms
                ),
            )
            .into_response()
        }
        Err(e) => {
            let status = e.status;
            let mut resp = page("dermcam error", &format!("<main><section><h2>Could not classify</h2><p class=\"err\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p></section></main>", escape(&e.message))).into_response();
            *resp.status_mut() = status;
            resp
        }
    }
}

async fn login_page() -> Html<String> {
    page(
        "dermcam login",
        "<main><section><h2>Access token</h2><form method=\"post\" action=\"/login\"><p><input type=\"password\" name=\"token\" required autocomplete=\"current-password\"></p><p><input type=\"submit\" value=\"Sign in\"></p></form></section></main>",
    )
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

fn session_cookie(st: &AppState, value: &str, max_age: u64) -> HeaderValue {
    let cookie = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        if st.cfg.cookie_secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static(""))
}

/// Token in, random session id out (the cookie never holds the token). The body is decoded by
/// axum's form extractor (no hand-written percent-decoding), capped at SMALL_BODY, read within
/// the body timeout; wrong tokens are rate-limited and never logged.
async fn login(State(st): State<AppState>, req: Request) -> Response {
    let Some(token) = st.cfg.token.clone() else {
        return Redirect::to("/").into_response();
    };
    let ip = client_ip(&req);
    let wrong = |st: &AppState| {
        st.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        let _ = st.auth_limit.spend(ip);
        (StatusCode::UNAUTHORIZED, page("dermcam login", "<main><section><p class=\"err\">Wrong token.</p><a href=\"/login\">Try again</a></section></main>")).into_response()
    };
    if let Err(wait) = st.auth_limit.allowed(ip) {
        st.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        return ApiError::too_many("sign-in", wait).into_response();
    }
    let limit = Duration::from_millis(st.cfg.body_timeout_ms);
    let form = match tokio::time::timeout(limit, Form::<LoginForm>::from_request(req, &st)).await {
        Err(_) => {
            return ApiError::new(StatusCode::REQUEST_TIMEOUT, "request body not received in time")
                .into_response();
        }
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return rejection.into_response();
        }
        // Undecodable bodies count as wrong tokens (and are not echoed anywhere).
        Ok(Err(_)) => return wrong(&st),
        Ok(Ok(Form(f))) => f,
    };
    if !token_eq(&form.token, &token) {
        return wrong(&st);
    }
    let Some(id) = st.sessions.create() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no randomness for a session id")
            .into_response();
    };
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&st, &id, st.sessions.ttl().as_secs()),
    );
    r
}

/// Ends the session (server side: the id stops working at once) and clears the cookie.
async fn logout(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = security::session_cookie(&headers) {
        st.sessions.revoke(&id);
    }
    let mut r = Redirect::to(if st.cfg.token.is_some() { "/login" } else { "/" }).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&st, "", 0));
    r
}

async fn status(State(st): State<AppState>) -> Json<serde_json::Value> {
    let m = &st.model.manifest;
    let Some(live) = &st.live else {
        return Json(
            json!({"source": "none", "model": m.name, "uptime_s": st.started.elapsed().as_secs_f64(), "frame_version": 0, "display": null, "headline": null}),
        );
    };
    let latest = live
        .latest
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (display, headline, last, version) = match &latest {
        Some(u) => {
            let head = if let Some(q) = &u.state.quality {
                q.clone()
            } else if u.state.uncertain {
                "Uncertain".into()
            } else {
                u.state.top.first().map(|t| t.0.clone()).unwrap_or_default()
            };
            let last = u.prediction.as_ref().map(|p| json!({"classes": p.top_k(3, m), "uncertain": p.uncertain, "refer": p.refer, "malignant_probability": p.malignant_probability, "frame": u.frame.as_ref().map(|f| f.seq)}));
            (
                serde_json::to_value(&u.state).unwrap_or_default(),
                head,
                last,
                u.frame.as_ref().map_or(0, |f| f.seq),
            )
        }
        None => (serde_json::Value::Null, "Starting".into(), None, 0),
    };
    let source = match latest.as_ref().map(|u| &u.state.source) {
        Some(crate::screen::render::SourceStatus::Live) => "live".to_string(),
        Some(crate::screen::render::SourceStatus::Disconnected(m)) => format!("disconnected: {m}"),
        Some(crate::screen::render::SourceStatus::Ended) => "ended".into(),
        _ => "starting".into(),
    };
    Json(json!({
        "source": source, "model": m.name, "uptime_s": live.started.elapsed().as_secs_f64(),
        "fps": latest.as_ref().map_or(0.0, |u| u.state.fps), "headline": headline, "display": display,
        "last_prediction": last, "counters": live.counters.snapshot(), "frame_version": version,
    }))
}

async fn model_manifest(State(st): State<AppState>) -> Json<crate::model::manifest::Manifest> {
    Json(st.model.manifest.clone())
}

/// The newest live frame as JPEG. Each frame is encoded at most once, by one blocking task at
/// a time; concurrent requests wait for that encode and share its bytes, so polling clients
/// cannot multiply the CPU work or the blocking threads.
async fn frame_jpeg(State(st): State<AppState>) -> Response {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "no live frame").into_response();
    let Some(live) = st.live.clone() else {
        return not_found();
    };
    let mut cache = st.frame_cache.lock().await;
    let Some(f) = live.latest_frame() else {
        return not_found();
    };
    let jpeg = |b: Bytes| ([(header::CONTENT_TYPE, "image/jpeg")], b).into_response();
    if let Some((seq, bytes)) = cache.as_ref() {
        if *seq == f.seq {
            return jpeg(bytes.clone());
        }
    }
    let seq = f.seq;
    let encoded = tokio::task::spawn_blocking(move || encode_jpeg(&f.image, 80)).await;
    st.counters.frame_encodes.fetch_add(1, Ordering::Relaxed);
    match encoded {
        Ok(Ok(v)) => {
            let b = Bytes::from(v);
            *cache = Some((seq, b.clone()));
            jpeg(b)
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "could not encode frame")
            .into_response(),
    }
}

/// Toggle freeze; at most one per `web.freeze_interval_ms` (429 + Retry-After otherwise), so
/// a flood of toggles cannot push real captures out of retention.
async fn freeze(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let live = st
        .live
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "no live pipeline on this device"))?;
    if st.cfg.freeze_interval_ms > 0 {
        if let Err(wait) = st.freeze_limit.spend(None) {
            st.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::too_many("freeze", wait));
        }
    }
    live.toggle_freeze();
    Ok(Json(json!({"toggled": true})))
}

async fn metrics(State(st): State<AppState>) -> Response {
    let c = &st.counters;
    let mut s = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        s += &format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n");
    };
    if let Some(live) = &st.live {
        let k = live.counters.snapshot();
        counter("dermcam_frames_total", "Frames captured.", k.frames);
        counter(
            "dermcam_inferences_total",
            "Live frames classified.",
            k.inferences,
        );
        counter(
            "dermcam_dropped_frames_total",
            "Frames replaced before inference (model slower than camera).",
            k.dropped_frames,
        );
        counter(
            "dermcam_quality_rejections_total",
            "Frames not classified for quality.",
            k.quality_rejections,
        );
        counter("dermcam_errors_total", "Pipeline errors.", k.errors);
        counter(
            "dermcam_screen_errors_total",
            "Failed screen updates.",
            k.screen_errors,
        );
    }
    counter(
        "dermcam_http_requests_total",
        "HTTP requests.",
        c.requests.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_uploads_classified_total",
        "Uploads classified.",
        c.classified.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_uploads_rejected_total",
        "Uploads rejected (size, type, decode).",
        c.rejected_uploads.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_upload_inference_errors_total",
        "Uploads the model failed on (answered 500).",
        c.inference_errors.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_uploads_busy_total",
        "Uploads refused with 503 (queue full).",
        c.busy.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_frame_encodes_total",
        "Live frames encoded for /api/v1/frame.jpg.",
        c.frame_encodes.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_auth_failures_total",
        "Requests with a wrong token.",
        c.auth_failures.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_rate_limited_total",
        "Requests refused with 429 (sign-in, freeze).",
        c.rate_limited.load(Ordering::Relaxed),
    );
    counter(
        "dermcam_refused_origin_total",
        "Requests refused for a foreign Host or cross-origin state change.",
        c.refused_origin.load(Ordering::Relaxed),
    );
    s += "# HELP dermcam_upload_latency_ms Upload classification latency.\n# TYPE dermcam_upload_latency_ms histogram\n";
    let mut cum = 0;
    for (i, b) in BUCKETS_MS.iter().enumerate() {
        cum += c.latency[i].load(Ordering::Relaxed);
        let le = if b.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{b}")
        };
        s += &format!("dermcam_upload_latency_ms_bucket{{le=\"{le}\"}} {cum}\n");
    }
    s += &format!(
        "dermcam_upload_latency_ms_sum {}\ndermcam_upload_latency_ms_count {cum}\n",
        c.latency_sum_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}
