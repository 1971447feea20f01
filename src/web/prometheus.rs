//! Prometheus text exposition of the device counters (`/metrics`).

use super::{AppState, BUCKETS_MS, WebCounters};
#[cfg(feature = "fleet")]
use crate::fleet::FleetStats;
use crate::pipeline::CounterSnapshot;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::atomic::{AtomicU64, Ordering};

/// One line of the exposition: name, help text, value.
type Metric = (&'static str, &'static str, u64);

fn write_metrics(s: &mut String, kind: &str, rows: &[Metric]) {
    for (name, help, v) in rows {
        *s += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n");
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let mut s = String::new();
    if let Some(live) = &st.live {
        write_metrics(&mut s, "counter", &live_counters(&live.counters()));
    }
    write_metrics(&mut s, "counter", &web_counters(&st.counters));
    #[cfg(feature = "fleet")]
    if let Some(f) = st.fleet.get() {
        write_metrics(&mut s, "counter", &fleet_counters(f));
        write_metrics(&mut s, "gauge", &fleet_gauges(f));
    }
    write_latency_histogram(&mut s, &st.counters);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}

/// The live pipeline's counters.
fn live_counters(k: &CounterSnapshot) -> [Metric; 6] {
    [
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
    ]
}

/// The web server's request and upload counters.
fn web_counters(c: &WebCounters) -> [Metric; 9] {
    [
        (
            "dermcam_http_requests_total",
            "HTTP requests.",
            get(&c.requests),
        ),
        (
            "dermcam_uploads_classified_total",
            "Uploads classified.",
            get(&c.classified),
        ),
        (
            "dermcam_uploads_rejected_total",
            "Uploads rejected (size, type, decode).",
            get(&c.rejected_uploads),
        ),
        (
            "dermcam_upload_inference_errors_total",
            "Uploads the model failed on (answered 500).",
            get(&c.inference_errors),
        ),
        (
            "dermcam_uploads_busy_total",
            "Uploads refused with 503 (queue full).",
            get(&c.busy),
        ),
        (
            "dermcam_frame_encodes_total",
            "Live frames encoded for /api/v1/frame.jpg.",
            get(&c.frame_encodes),
        ),
        (
            "dermcam_auth_failures_total",
            "Requests with a wrong token.",
            get(&c.auth_failures),
        ),
        (
            "dermcam_rate_limited_total",
            "Requests refused with 429 (sign-in, freeze).",
            get(&c.rate_limited),
        ),
        (
            "dermcam_refused_origin_total",
            "Requests refused for a foreign Host or cross-origin state change.",
            get(&c.refused_origin),
        ),
    ]
}

#[cfg(feature = "fleet")]
fn fleet_counters(f: &FleetStats) -> [Metric; 3] {
    [
        (
            "dermcam_fleet_results_sent_total",
            "Results the MQTT broker acknowledged.",
            get(&f.sent),
        ),
        (
            "dermcam_fleet_results_dropped_total",
            "Results lost before the broker had them (queue byte limit, full hand-off, disk).",
            get(&f.dropped),
        ),
        (
            "dermcam_fleet_reconnects_total",
            "Broker connections lost.",
            get(&f.reconnects),
        ),
    ]
}

#[cfg(feature = "fleet")]
fn fleet_gauges(f: &FleetStats) -> [Metric; 3] {
    [
        (
            "dermcam_fleet_queue_results",
            "Results waiting in the fleet queue.",
            get(&f.pending),
        ),
        (
            "dermcam_fleet_queue_bytes",
            "Bytes in the fleet queue.",
            get(&f.pending_bytes),
        ),
        (
            "dermcam_fleet_connected",
            "1 while connected to the broker.",
            f.connected.load(Ordering::Relaxed) as u64,
        ),
    ]
}

/// Upload latency as a cumulative histogram over [`BUCKETS_MS`].
fn write_latency_histogram(s: &mut String, c: &WebCounters) {
    *s += "# HELP dermcam_upload_latency_ms Upload classification latency.\n# TYPE dermcam_upload_latency_ms histogram\n";
    let mut cum = 0;
    for (i, b) in BUCKETS_MS.iter().enumerate() {
        cum += c.latency[i].load(Ordering::Relaxed);
        let le = if b.is_infinite() {
            "+Inf".to_string()
        } else {
            format!("{b}")
        };
        *s += &format!("dermcam_upload_latency_ms_bucket{{le=\"{le}\"}} {cum}\n");
    }
    *s += &format!(
        "dermcam_upload_latency_ms_sum {}\ndermcam_upload_latency_ms_count {cum}\n",
        c.latency_sum_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
}
