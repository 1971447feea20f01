//! The JSON/JPEG API: status, manifest, live frame, freeze.

use super::upload::encode_jpeg;
use super::{ApiError, AppState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use image::ImageEncoder;
use serde_json::json;
use std::sync::atomic::Ordering;

pub(super) async fn status(State(st): State<AppState>) -> Json<serde_json::Value> {
    let model = st.model.get();
    let m = &model.manifest;
    let Some(live) = &st.live else {
        return Json(
            json!({"source": "none", "model": m.name, "uptime_s": st.started.elapsed().as_secs_f64(), "frame_version": 0, "display": null, "headline": null}),
        );
    };
    let latest = live.latest();
    let (display, headline, outcome, last, version) = match &latest {
        Some(u) => {
            let head = u.state.result_headline().unwrap_or_default();
            // Names from the model that made the result, not the one loaded now.
            let made_by = u.model.as_ref().map_or(m, |x| &x.manifest);
            let last = u.prediction.as_ref().map(|p| json!({"outcome": p.outcome(), "classes": p.top_k(3, made_by), "uncertain": p.uncertain, "refer": p.refer, "malignant_probability": p.malignant_probability, "ood_score": p.ood_score, "model": made_by.name, "frame": u.frame.as_ref().map(|f| f.seq)}));
            (
                serde_json::to_value(&u.state).unwrap_or_default(),
                head,
                u.state.outcome(),
                last,
                u.frame.as_ref().map_or(0, |f| f.seq),
            )
        }
        None => (serde_json::Value::Null, "Starting".into(), None, None, 0),
    };
    let source = latest
        .as_ref()
        .map_or_else(|| "starting".to_string(), |u| u.state.source.to_string());
    Json(json!({
        "source": source, "model": m.name, "uptime_s": live.uptime().as_secs_f64(),
        "fps": latest.as_ref().map_or(0.0, |u| u.state.fps), "headline": headline, "outcome": outcome,
        "quality_issue": latest.as_ref().and_then(|u| u.state.quality), "display": display,
        "last_prediction": last, "counters": live.counters(), "frame_version": version,
    }))
}

pub(super) async fn model_manifest(
    State(st): State<AppState>,
) -> Json<crate::model::manifest::Manifest> {
    Json(st.model.get().manifest.clone())
}

/// The newest live frame as JPEG. Each frame is encoded at most once, by one blocking task at
/// a time; concurrent requests wait for that encode and share its bytes, so polling clients
/// cannot multiply the CPU work or the blocking threads.
/// What the attached screen shows now (the renderer's canvas as presented), as PNG.
pub(super) async fn screen_png(State(st): State<AppState>) -> Response {
    let shown = st.live.as_ref().and_then(|l| l.screen_image());
    let Some(img) = shown else {
        return ApiError::new(StatusCode::NOT_FOUND, "nothing on a screen").into_response();
    };
    let encoded = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .map(|()| out)
    })
    .await;
    match encoded {
        Ok(Ok(png)) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the screen",
        )
        .into_response(),
    }
}

pub(super) async fn frame_jpeg(State(st): State<AppState>) -> Response {
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
pub(super) async fn freeze(
    State(st): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
