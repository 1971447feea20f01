//! The fleet link: results and health to an MQTT broker, for a clinic running many devices.
//!
//! Topics (`<prefix>` = `fleet.topic_prefix`, `<id>` = the device id):
//! - `<prefix>/<id>/status`: retained health JSON; the broker's last will sets `online: false`.
//! - `<prefix>/<id>/result`: one JSON per result, QoS 1, with an `id` stable across retries.
//! - `<prefix>/<id>/cmd`: `freeze`, `release`, `capture`, `reload-model` (broker ACLs decide
//!   who may publish there).
//! - `<prefix>/fleet/model`: retained signed model announcements (see `device::update`).
//!
//! The result sink (`sinks::fleet`) only hands results to a bounded channel (the live screen
//! never waits on the network); the fleet thread writes each to the on-disk queue first and
//! deletes it when the broker acknowledged it, so an outage or a power cut loses nothing queued.

mod jobs;
mod mqtt;
pub mod queue;
mod tls;

use crate::config::FleetConfig;
use crate::pipeline::Shared;
pub use crate::sinks::fleet::FleetSink;
use crate::sinks::fleet::Item;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::Receiver;

pub use mqtt::{FleetError, FleetHandle};

/// Results waiting between the sink and the fleet thread (beyond: dropped and counted).
const CHANNEL: usize = 256;

/// Counters shared by the sink, the fleet thread, `/metrics` and the status message.
#[derive(Default)]
pub struct FleetStats {
    pub connected: AtomicBool,
    /// Results acknowledged by the broker.
    pub sent: AtomicU64,
    /// Results written to the queue.
    pub queued_total: AtomicU64,
    /// Results in the queue now, and their bytes.
    pub pending: AtomicU64,
    pub pending_bytes: AtomicU64,
    /// Results lost: queue byte limit, a full hand-off channel, or a disk that refused them.
    pub dropped: AtomicU64,
    pub reconnects: AtomicU64,
    /// Fleet sessions restarted after a panic (the channel and the disk queue survive).
    pub restarts: AtomicU64,
    /// Published results flagged "refer".
    pub refer: AtomicU64,
}

/// The fleet thread's half, started once the pipeline's shared state exists.
pub struct FleetRunner {
    rx: Receiver<Item>,
    cfg: FleetConfig,
    device_id: String,
    stats: Arc<FleetStats>,
}

/// Build the sink and its runner (nothing connects before `FleetRunner::spawn`).
pub fn open(cfg: &FleetConfig) -> (FleetSink, FleetRunner) {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL);
    let stats = Arc::new(FleetStats::default());
    let device_id = cfg.resolved_device_id();
    (
        FleetSink::new(tx, cfg, device_id.clone(), stats.clone()),
        FleetRunner {
            rx,
            cfg: cfg.clone(),
            device_id,
            stats,
        },
    )
}

/// RFC 3339 UTC time of a unix time in milliseconds.
pub fn rfc3339(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Where the fleet thread reports on model updates (the status message carries it). `state`
/// is the install lifecycle and only the update thread moves it (installing, switched,
/// retrying, refused, rolled back, reloaded); an announcement turned away before it took a
/// place (unparsable, a replay, for another device) is reported beside it as
/// `last_ignored`, so a stray message can never make the status say something else happened.
#[derive(Default)]
pub struct UpdateReport {
    state: Mutex<Option<Value>>,
    ignored: Mutex<Option<Value>>,
}

impl UpdateReport {
    pub fn set(&self, v: Value) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }

    /// An announcement turned away before it was queued: `{reason, time}`.
    pub fn ignored(&self, v: Value) {
        *self.ignored.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }

    pub fn get(&self) -> Value {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ignored = self
            .ignored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (state, ignored) {
            (None, None) => Value::Null,
            (s, i) => {
                let mut v = s.unwrap_or_else(|| serde_json::json!({"state": null}));
                if let (Some(i), Some(o)) = (i, v.as_object_mut()) {
                    o.insert("last_ignored".into(), i);
                }
                v
            }
        }
    }
}

/// The retained health message.
pub fn status_json(
    device_id: &str,
    shared: &Shared,
    stats: &FleetStats,
    update: &UpdateReport,
) -> Value {
    let model = shared.model();
    let c = shared.counters();
    let (source, frozen) = match shared.latest() {
        Some(u) => (u.state.source.to_string(), u.state.frozen),
        None => ("starting".into(), false),
    };
    let screen = if shared.display_absent() {
        "none".to_string()
    } else if c.screen_errors > 0 {
        format!("errors: {}", c.screen_errors)
    } else {
        "ok".into()
    };
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "online": true,
        "device_id": device_id,
        "version": env!("CARGO_PKG_VERSION"),
        "time": rfc3339(crate::storage::unix_ms()),
        "uptime_s": shared.uptime().as_secs(),
        "model": {"name": model.manifest.name, "sha256": model.manifest.sha256,
                  "engine": model.engine.summary()},
        "counters": c,
        "camera": source,
        "screen": screen,
        "frozen": frozen,
        "refer_count": g(&stats.refer),
        "queue": {"pending": g(&stats.pending), "bytes": g(&stats.pending_bytes),
                  "sent": g(&stats.sent), "dropped": g(&stats.dropped),
                  "reconnects": g(&stats.reconnects), "session_restarts": g(&stats.restarts)},
        "model_update": update.get(),
    })
}

/// The last will: what the broker publishes (retained) when the device vanishes.
pub fn offline_json(device_id: &str) -> Value {
    json!({"online": false, "device_id": device_id, "version": env!("CARGO_PKG_VERSION")})
}

/// A command from `<prefix>/<id>/cmd`: plain text (`freeze`) or JSON (`{"command": "freeze"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Freeze,
    Release,
    Capture,
    ReloadModel,
}

impl Command {
    /// The wire name (what `parse` accepts and the status reports).
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Freeze => "freeze",
            Command::Release => "release",
            Command::Capture => "capture",
            Command::ReloadModel => "reload-model",
        }
    }

    pub fn parse(payload: &[u8]) -> Result<Command, CommandError> {
        let text = std::str::from_utf8(payload).map_err(|_| CommandError::NotUtf8)?;
        let text = text.trim();
        let word = if text.starts_with('{') {
            let v: Value = serde_json::from_str(text).map_err(CommandError::Json)?;
            v.get("command")
                .and_then(Value::as_str)
                .ok_or(CommandError::NoCommand)?
                .to_string()
        } else {
            text.to_string()
        };
        let all = [
            Command::Freeze,
            Command::Release,
            Command::Capture,
            Command::ReloadModel,
        ];
        match all.into_iter().find(|c| c.as_str() == word) {
            Some(c) => Ok(c),
            None => Err(CommandError::Unknown(word.chars().take(40).collect())),
        }
    }
}

/// Why a command message was refused (the reply's `error` says it).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("not UTF-8")]
    NotUtf8,
    #[error("bad JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("JSON without a \"command\" string")]
    NoCommand,
    #[error("unknown command {0:?} (freeze, release, capture, reload-model)")]
    Unknown(String),
}

impl FleetRunner {
    pub fn stats(&self) -> Arc<FleetStats> {
        self.stats.clone()
    }

    /// Start the fleet thread. `switch` loads a model bundle into the running appliance
    /// (model updates, `reload-model`); `update` receives signed model announcements.
    pub fn spawn(
        self,
        shared: Arc<Shared>,
        switch: Arc<dyn crate::device::update::ModelSwitch>,
        report: Arc<UpdateReport>,
    ) -> Result<FleetHandle, FleetError> {
        mqtt::spawn(self, shared, switch, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_as_text_or_json() {
        assert_eq!(Command::parse(b"freeze\n").ok(), Some(Command::Freeze));
        assert_eq!(
            Command::parse(br#"{"command": "reload-model"}"#).ok(),
            Some(Command::ReloadModel)
        );
        assert!(
            Command::parse(b"rm -rf /")
                .unwrap_err()
                .to_string()
                .contains("unknown")
        );
        assert!(Command::parse(b"{\"cmd\": 1}").is_err());
        assert!(Command::parse(&[0xff, 0xfe]).is_err());
        for c in [
            Command::Freeze,
            Command::Release,
            Command::Capture,
            Command::ReloadModel,
        ] {
            assert_eq!(Command::parse(c.as_str().as_bytes()).ok(), Some(c));
        }
        assert_eq!(Command::ReloadModel.as_str(), "reload-model");
    }

    #[test]
    fn utc_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_694_400_000), "2026-11-26T12:00:00.000Z");
    }
}
