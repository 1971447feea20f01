//! Image uploads: admission, body limits, decoding, classification, saved uploads.

mod result;
pub use result::ClassifyResult;
use result::{ModelIdentity, UploadQuality, classified_result, retake_result};

use super::auth::client_ip;
use super::security::ClientSlot;
use super::{ApiError, AppState};
use crate::config::{PipelineConfig, WebConfig};
use crate::model::classifier::{InferenceError, Prediction};
use crate::model::preprocess::{ImageError, decode_image, sniff_format};
use crate::model::{Model, Timings};
use crate::pipeline::quality::{self, Quality, QualityIssue};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A place among the uploads being received, queued or classified; given back on drop however
/// the request ends (a client that disconnects drops the handler's future mid-way).
pub(super) struct Place(
    Arc<AtomicUsize>,
    /// Held for its `Drop` (gives the client address's share back).
    #[allow(dead_code)]
    Option<ClientSlot>,
);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Admission control, before the body is read: at most `max_concurrent + queue` uploads are
/// in memory at once, so memory stays bounded however many clients connect, and one client
/// address holds at most half of those places (so one machine cannot keep every other client
/// out). Beyond that the client is told to come back (503 + Retry-After) without its body
/// being read.
pub(super) fn admit(st: &AppState, ip: Option<IpAddr>) -> Result<Place, ApiError> {
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
        per_client = Some(
            st.per_client
                .take(ip, (places / 2).max(1))
                .ok_or_else(busy)?,
        );
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
pub(super) const PREVIEW_PX: u32 = 480;

/// The preview's size: the image scaled to fit PREVIEW_PX x PREVIEW_PX (never up), aspect
/// kept, at least 1 px a side (64-bit arithmetic: 1 x 8,947,849 images exist).
pub fn preview_size(width: u32, height: u32) -> (u32, u32) {
    let long = width.max(height).max(1) as f64;
    let s = (PREVIEW_PX as f64 / long).min(1.0);
    let f = |v: u32| ((v as f64 * s).round() as u32).clamp(1, PREVIEW_PX);
    (f(width), f(height))
}

pub(super) fn encode_jpeg(
    img: &image::RgbImage,
    quality: u8,
) -> Result<Vec<u8>, image::ImageError> {
    let mut v = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut v, quality).encode_image(img)?;
    Ok(v)
}

/// Saved uploads are the decoded, orientation-corrected pixels re-encoded (JPEG q95): no EXIF
/// (GPS, device, time), ICC or comment metadata of the original file reaches the disk.
pub(super) fn save_upload(cfg: &WebConfig, dir: &std::path::Path, img: &image::RgbImage) {
    let r = encode_jpeg(img, 95)
        .map_err(std::io::Error::other)
        .and_then(|jpg| crate::storage::save_atomic(dir, "upload", "jpg", &jpg))
        .and_then(|_| {
            crate::storage::enforce_retention(dir, "upload", cfg.save_max_files, cfg.save_max_bytes)
        });
    if let Err(e) = r {
        log::warn!("could not save upload: {e}");
    }
}

/// Give freed heap pages back to the OS after a large decode (glibc keeps them otherwise, so
/// RSS would stay at its peak after a burst of big uploads).
pub(super) fn release_memory(bytes: usize) {
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

/// A rejected upload (counted): the client's fault.
fn rejected(st: &AppState, status: StatusCode, msg: String) -> ApiError {
    st.counters.rejected_uploads.fetch_add(1, Ordering::Relaxed);
    ApiError::new(status, msg)
}

/// The checks that need no decoding: not empty, within the size limit, JPEG or PNG.
fn check_upload(st: &AppState, bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.is_empty() {
        return Err(rejected(
            st,
            StatusCode::BAD_REQUEST,
            "no image in the request".into(),
        ));
    }
    if bytes.len() > st.cfg.max_upload_bytes {
        return Err(rejected(
            st,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "upload of {} bytes exceeds {} bytes",
                bytes.len(),
                st.cfg.max_upload_bytes
            ),
        ));
    }
    if sniff_format(bytes).is_none() {
        return Err(rejected(
            st,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only JPEG and PNG images are accepted (checked by content, not file name)".into(),
        ));
    }
    Ok(())
}

/// What the blocking half of a classification found.
struct Analysis {
    quality: Quality,
    issue: Option<QualityIssue>,
    /// None when the quality gate refused the image.
    classified: Option<Result<(Prediction, Timings), InferenceError>>,
    preview: Option<Vec<u8>>,
}

/// Decode (optionally save), measure quality, make the preview, classify: the blocking
/// half, run inside a classification slot.
fn analyse(
    model: &Model,
    cfg: &WebConfig,
    gate: &PipelineConfig,
    bytes: Bytes,
    preview: bool,
) -> Result<Analysis, ImageError> {
    let img = decode_image(&bytes, "upload", cfg.max_pixels)?;
    drop(bytes);
    let decoded = img.as_raw().len();
    if let Some(dir) = &cfg.save_uploads {
        save_upload(cfg, dir, &img);
    }
    let q = quality::measure(&img);
    let issue = quality::check(&q, gate);
    let thumb = preview.then(|| {
        let (w, h) = preview_size(img.width(), img.height());
        encode_jpeg(&image::imageops::thumbnail(&img, w, h), 85)
            .map_err(|e| log::warn!("upload preview: {e}"))
            .ok()
    });
    // An image the live pipeline would not classify gets no class here either.
    let r = match issue {
        None => Some(model.classify(&img, false)),
        Some(_) => None,
    };
    drop(img);
    release_memory(decoded);
    Ok(Analysis {
        quality: q,
        issue,
        classified: r,
        preview: thumb.flatten(),
    })
}

/// Size/type/decode checks, bounded concurrency, the quality gate, then the shared classifier.
/// With `preview`, a small JPEG of the image for the result page (None when it could not be
/// made). The decoded image never leaves the classification slot.
pub(super) async fn run_classification(
    st: &AppState,
    bytes: Bytes,
    preview: bool,
) -> Result<(ClassifyResult, Option<Vec<u8>>), ApiError> {
    check_upload(st, &bytes)?;
    let permit = st.slots.clone().acquire_owned().await;
    let t0 = Instant::now();
    // One model for the whole request: a swap meanwhile must not relabel this result.
    let model = st.model.get();
    let (used, cfg, gate) = (model.clone(), st.cfg.clone(), st.quality.clone());
    let out = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        analyse(&used, &cfg, &gate, bytes, preview)
    })
    .await;
    // A model failure is kept apart from a bad image: it is the device's fault, not the
    // client's.
    let (a, r) = match out {
        Ok(Ok(mut a)) => match a.classified.take() {
            Some(Err(e)) => {
                st.counters.inference_errors.fetch_add(1, Ordering::Relaxed);
                log::error!("upload: {e:#}");
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    String::from(
                        "the device could not classify this image (inference failed; see the device log)",
                    ),
                ));
            }
            Some(Ok(r)) => (a, Some(r)),
            None => (a, None),
        },
        Ok(Err(e)) => {
            return Err(rejected(
                st,
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string(),
            ));
        }
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
    let m = &model.manifest;
    let (q, issue) = (a.quality, a.issue);
    let quality = UploadQuality {
        luma: q.luma,
        sharpness: q.sharpness,
        warning: issue.map(|i| i.advice()),
    };
    let result = match r {
        Some((p, timings)) => classified_result(p, timings, m, quality, total_ms),
        None => retake_result(issue, quality, ModelIdentity::of(m), total_ms),
    };
    Ok((result, a.preview))
}

pub(super) async fn first_file(mut mp: Multipart) -> Result<Bytes, ApiError> {
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

pub(super) async fn body_image(st: &AppState, req: Request) -> Result<Bytes, ApiError> {
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
pub(super) const BODY_GRACE: Duration = Duration::from_secs(2);

/// The upload's body within `web.body_timeout_ms`, and after the first 2 s at no less than
/// `web.min_upload_rate` bytes/s on average: a client that sends slowly (or stalls) gets 408
/// and its admission place back within seconds, instead of holding it for as long as it likes.
pub(super) async fn timed_body_image(st: &AppState, req: Request) -> Result<Bytes, ApiError> {
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

pub(super) async fn classify_api(
    State(st): State<AppState>,
    req: Request,
) -> Result<Json<ClassifyResult>, ApiError> {
    let _place = admit(&st, client_ip(&req))?;
    let bytes = timed_body_image(&st, req).await?;
    Ok(Json(run_classification(&st, bytes, false).await?.0))
}
