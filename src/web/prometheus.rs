//! Prometheus text exposition of the device counters (`/metrics`).

use super::{AppState, BUCKETS_MS};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

pub(super) async fn metrics(State(st): State<AppState>) -> Response {
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
    #[cfg(feature = "fleet")]
    if let Some(f) = st.fleet.get() {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "dermcam_fleet_results_sent_total",
            "Results the MQTT broker acknowledged.",
            g(&f.sent),
        );
        counter(
            "dermcam_fleet_results_dropped_total",
            "Results lost before the broker had them (queue byte limit, full hand-off, disk).",
            g(&f.dropped),
        );
        counter(
            "dermcam_fleet_reconnects_total",
            "Broker connections lost.",
            g(&f.reconnects),
        );
        s += &format!(
            "# HELP dermcam_fleet_queue_results Results waiting in the fleet queue.
# TYPE dermcam_fleet_queue_results gauge
dermcam_fleet_queue_results {}
# HELP dermcam_fleet_queue_bytes Bytes in the fleet queue.
# TYPE dermcam_fleet_queue_bytes gauge
dermcam_fleet_queue_bytes {}
# HELP dermcam_fleet_connected 1 while connected to the broker.
# TYPE dermcam_fleet_connected gauge
dermcam_fleet_connected {}
",
            g(&f.pending),
            g(&f.pending_bytes),
            f.connected.load(Ordering::Relaxed) as u8
        );
    }
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
