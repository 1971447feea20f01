//! The device's web interface (axum): the paper's upload page, a versioned JSON API, a live
//! view of the appliance, health and Prometheus metrics. `router` builds everything so tests
//! drive it without a socket.

use crate::config::WebConfig;
use crate::model::{Model, Timings};
use crate::pipeline::Shared;
use crate::preprocess::{ImageError, decode_image, sniff_format};
use crate::quality;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;

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
    pub busy: AtomicU64,
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
        AppState {
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
    let limit = state.cfg.max_upload_bytes;
    Router::new()
        .route("/", get(index))
        .route("/classify", post(classify_form))
        .route("/login", get(login_page).post(login))
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    include_str!("../assets/web/app.js"),
                )
            }),
        )
        .route(
            "/static/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    include_str!("../assets/web/style.css"),
                )
            }),
        )
        .route("/api/v1/classify", post(classify_api))
        .route("/api/v1/status", get(status))
        .route("/api/v1/model", get(model_manifest))
        .route("/api/v1/frame.jpg", get(frame_jpeg))
        .route("/api/v1/freeze", post(freeze))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        // Multipart framing adds a little over the file itself.
        .layer(DefaultBodyLimit::max(limit + 64 * 1024))
        .with_state(state)
}

fn bearer_or_cookie(headers: &HeaderMap) -> Option<String> {
    if let Some(a) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(t) = a.strip_prefix("Bearer ") {
            return Some(t.trim().to_string());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().strip_prefix("dermcam_token="))
        .map(|t| t.to_string())
        .next()
}

/// Constant-time comparison, so response timing does not leak the token.
fn token_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Access control, upload size pre-check and security headers for every response.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    st.counters.requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let open = matches!(path.as_str(), "/healthz" | "/login" | "/static/style.css");
    let mut resp = if let (Some(token), false) = (st.cfg.token.as_deref(), open) {
        match bearer_or_cookie(req.headers()) {
            Some(t) if token_eq(&t, token) => pre_checked(&st, req, next).await,
            _ if path.starts_with("/api/") || path == "/metrics" => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "access token required (Authorization: Bearer <token>)",
            )
            .into_response(),
            _ => Redirect::to("/login").into_response(),
        }
    } else {
        pre_checked(&st, req, next).await
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

async fn pre_checked(st: &AppState, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > st.cfg.max_upload_bytes + 64 * 1024) {
        st.counters.rejected_uploads.fetch_add(1, Ordering::Relaxed);
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("upload larger than {} bytes", st.cfg.max_upload_bytes),
        )
        .into_response();
    }
    next.run(req).await
}

#[derive(serde::Serialize)]
pub struct ClassifyResult {
    pub classes: Vec<crate::classifier::ClassScore>,
    pub headline: String,
    pub uncertain: bool,
    pub quality: serde_json::Value,
    pub model: serde_json::Value,
    pub timings: Timings,
    pub total_ms: f64,
}

/// A place among the uploads being received, queued or classified; given back on drop however
/// the request ends (a client that disconnects drops the handler's future mid-way).
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Admission control, before the body is read: at most `max_concurrent + queue` uploads are
/// in memory at once, so memory stays bounded however many clients connect. Beyond that the
/// client is told to come back (503 + Retry-After) without its body being read.
fn admit(st: &AppState) -> Result<Place, ApiError> {
    let before = st.waiting.fetch_add(1, Ordering::SeqCst);
    let place = Place(st.waiting.clone());
    if before >= st.cfg.max_concurrent + st.cfg.queue {
        drop(place);
        st.counters.busy.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "busy: too many classifications in progress".into(),
            retry_after: Some(1),
        });
    }
    Ok(place)
}

/// Size/type/decode checks, bounded concurrency, then the shared classifier.
async fn run_classification(
    st: &AppState,
    bytes: Bytes,
) -> Result<(ClassifyResult, image::RgbImage), ApiError> {
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
    let (model, max_pixels) = (st.model.clone(), st.cfg.max_pixels);
    let save = st.cfg.save_uploads.clone();
    let out = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let img = decode_image(&bytes, "upload", max_pixels)?;
        if let Some(dir) = save {
            if let Err(e) = crate::storage::save_atomic(&dir, "upload", sniff_ext(&bytes), &bytes) {
                eprintln!("warning: could not save upload: {e}");
            }
        }
        let q = quality::measure(&img);
        let r = model
            .classify(&img, false)
            .map_err(|e| ImageError::Decode {
                what: "upload".into(),
                message: e.to_string(),
            })?;
        Ok::<_, ImageError>((img, q, r))
    })
    .await;
    let (img, q, (p, timings)) = match out {
        Ok(Ok(v)) => v,
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
    let issue = quality::check(&q, &st.quality);
    Ok((
        ClassifyResult {
            classes: p.top_k(m.classes.len(), m),
            headline: p.headline(m),
            uncertain: p.uncertain,
            quality: json!({"luma": q.luma, "sharpness": q.sharpness, "warning": issue.map(|i| i.advice())}),
            model: json!({"name": m.name, "sha256": m.sha256, "precision": m.precision}),
            timings,
            total_ms,
        },
        img,
    ))
}

fn sniff_ext(bytes: &[u8]) -> &'static str {
    match sniff_format(bytes) {
        Some(image::ImageFormat::Png) => "png",
        _ => "jpg",
    }
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

async fn classify_api(
    State(st): State<AppState>,
    req: Request,
) -> Result<Json<ClassifyResult>, ApiError> {
    let _place = admit(&st)?;
    let bytes = body_image(&st, req).await?;
    Ok(Json(run_classification(&st, bytes).await?.0))
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
             <p>JPEG or PNG, up to {mb} MB. Model: <b>{name}</b> ({arch}, {prec:?}). Images are not stored.</p></section>{live}</main>",
            mb = st.cfg.max_upload_bytes / (1024 * 1024),
            name = escape(&m.name),
            arch = escape(&m.architecture),
            prec = m.precision
        ),
    )
}

async fn classify_form(State(st): State<AppState>, req: Request) -> Response {
    let result = match admit(&st) {
        Ok(_place) => match body_image(&st, req).await {
            Ok(b) => run_classification(&st, b).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok((r, img)) => {
            let thumb = image::imageops::thumbnail(
                &img,
                480.min(img.width()),
                (480 * img.height() / img.width().max(1))
                    .max(1)
                    .min(img.height()),
            );
            let mut jpg = Vec::new();
            let _ = thumb.write_to(
                &mut std::io::Cursor::new(&mut jpg),
                image::ImageFormat::Jpeg,
            );
            let b64 = base64::engine::general_purpose::STANDARD.encode(&jpg);
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
            let head = if r.uncertain {
                "<p class=\"headline\" id=\"prediction\">Uncertain</p><p>The model is not confident about any class for this image.</p>".to_string()
            } else {
                format!(
                    "<p class=\"headline\" id=\"prediction\">{}</p>",
                    escape(&r.headline)
                )
            };
            page(
                "dermcam result",
                &format!(
                    "<main><section class=\"{cls}\"><h2>Result</h2>{head}{warn}<table>{rows}</table>\
                     <p>Model {model}; {ms:.0} ms.</p><p><a href=\"/\">Classify another image</a></p></section>\
                     <section><img class=\"preview\" alt=\"uploaded image\" src=\"data:image/jpeg;base64,{b64}\"></section></main>",
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

async fn login(State(st): State<AppState>, body: Bytes) -> Response {
    let given = std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.split('&').find_map(|kv| kv.strip_prefix("token=")))
        .map(|t| t.replace('+', " "))
        .map(|t| percent_decode(&t))
        .unwrap_or_default();
    match st.cfg.token.as_deref() {
        Some(token) if token_eq(&given, token) => {
            let cookie = format!("dermcam_token={token}; HttpOnly; SameSite=Strict; Path=/");
            let mut r = Redirect::to("/").into_response();
            r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static("")));
            r
        }
        Some(_) => (StatusCode::UNAUTHORIZED, page("dermcam login", "<main><section><p class=\"err\">Wrong token.</p><a href=\"/login\">Try again</a></section></main>")).into_response(),
        None => Redirect::to("/").into_response(),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
            let last = u.prediction.as_ref().map(|p| json!({"classes": p.top_k(3, m), "uncertain": p.uncertain, "frame": u.frame.as_ref().map(|f| f.seq)}));
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
        Some(crate::render::SourceStatus::Live) => "live".to_string(),
        Some(crate::render::SourceStatus::Disconnected(m)) => format!("disconnected: {m}"),
        Some(crate::render::SourceStatus::Ended) => "ended".into(),
        _ => "starting".into(),
    };
    Json(json!({
        "source": source, "model": m.name, "uptime_s": live.started.elapsed().as_secs_f64(),
        "fps": latest.as_ref().map_or(0.0, |u| u.state.fps), "headline": headline, "display": display,
        "last_prediction": last, "counters": live.counters.snapshot(), "frame_version": version,
    }))
}

async fn model_manifest(State(st): State<AppState>) -> Json<crate::manifest::Manifest> {
    Json(st.model.manifest.clone())
}

async fn frame_jpeg(State(st): State<AppState>) -> Response {
    let frame = st.live.as_ref().and_then(|l| l.latest_frame());
    let Some(f) = frame else {
        return ApiError::new(StatusCode::NOT_FOUND, "no live frame").into_response();
    };
    let jpg = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        f.image
            .write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
            .map(|_| v)
    })
    .await;
    match jpg {
        Ok(Ok(v)) => ([(header::CONTENT_TYPE, "image/jpeg")], v).into_response(),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "could not encode frame")
            .into_response(),
    }
}

async fn freeze(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let live = st
        .live
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "no live pipeline on this device"))?;
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
        "dermcam_uploads_busy_total",
        "Uploads refused with 503 (queue full).",
        c.busy.load(Ordering::Relaxed),
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
