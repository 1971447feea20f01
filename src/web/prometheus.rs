//! Prometheus text exposition of the device counters (`/metrics`).

use super::{AppState, BUCKETS_MS};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::Ordering;

/// One line of the exposition: name, help text, value.
type Metric = (&'static str, &'static str, u64);

fn write_metrics(s: &mut String, kind: &str, rows: &[Metric]) {
    for (name, help, v) in rows {
        *s += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
    }
}

pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let c = &st.counters;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut s = String::new();
    if let Some(live) = &st.live {
        let k = live.counters.snapshot();
        write_metrics(
            &mut s,
            "counter",
            &[
                ("dermcam_frames_total", "Frames captured.", k.frames),
                (
                    "dermcam_inferences_total",
                    "Live frames classified.",
                    k.inferences,
                ),
                (
                    "dermcam_dropped_frames_total",
                    "Frames replaced before inference (model slower than camera).",
                    k.dropped_frames,
                ),
                (
                    "dermcam_quality_rejections_total",
                    "Frames not classified for quality.",
                    k.quality_rejections,
                ),
                ("dermcam_errors_total", "Pipeline errors.", k.errors),
                (
                    "dermcam_screen_errors_total",
                    "Failed screen updates.",
                    k.screen_errors,
                ),
            ],
        );
    }
    write_metrics(
        &mut s,
        "counter",
        &[
            (
                "dermcam_http_requests_total",
                "HTTP requests.",
                g(&c.requests),
            ),
            (
                "dermcam_uploads_classified_total",
                "Uploads classified.",
                g(&c.classified),
            ),
            (
                "dermcam_uploads_rejected_total",
                "Uploads rejected (size, type, decode).",
                g(&c.rejected_uploads),
            ),
            (
                "dermcam_upload_inference_errors_total",
                "Uploads the model failed on (answered 500).",
                g(&c.inference_errors),
            ),
            (
                "dermcam_uploads_busy_total",
                "Uploads refused with 503 (queue full).",
                g(&c.busy),
            ),
            (
                "dermcam_frame_encodes_total",
                "Live frames encoded for /api/v1/frame.jpg.",
                g(&c.frame_encodes),
            ),
            (
                "dermcam_auth_failures_total",
                "Requests with a wrong token.",
                g(&c.auth_failures),
            ),
            (
                "dermcam_rate_limited_total",
                "Requests refused with 429 (sign-in, freeze).",
                g(&c.rate_limited),
            ),
            (
                "dermcam_refused_origin_total",
                "Requests refused for a foreign Host or cross-origin state change.",
                g(&c.refused_origin),
            ),
        ],
    );
    #[cfg(feature = "fleet")]
    if let Some(f) = st.fleet.get() {
        write_metrics(
            &mut s,
            "counter",
            &[
                (
                    "dermcam_fleet_results_sent_total",
                    "Results the MQTT broker acknowledged.",
                    g(&f.sent),
                ),
                (
                    "dermcam_fleet_results_dropped_total",
                    "Results lost before the broker had them (queue byte limit, full hand-off, disk).",
                    g(&f.dropped),
                ),
                (
                    "dermcam_fleet_reconnects_total",
                    "Broker connections lost.",
                    g(&f.reconnects),
                ),
            ],
        );
        write_metrics(
            &mut s,
            "gauge",
            &[
                (
                    "dermcam_fleet_queue_results",
                    "Results waiting in the fleet queue.",
                    g(&f.pending),
                ),
                (
                    "dermcam_fleet_queue_bytes",
                    "Bytes in the fleet queue.",
                    g(&f.pending_bytes),
                ),
                (
                    "dermcam_fleet_connected",
                    "1 while connected to the broker.",
                    f.connected.load(Ordering::Relaxed) as u64,
                ),
            ],
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
