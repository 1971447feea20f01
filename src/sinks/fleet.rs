//! The fleet's result sink: turns pipeline updates into result messages for the fleet link
//! (`crate::fleet`) and hands them over a bounded channel; no I/O here, so the live screen
//! never waits on the network.

use crate::config::{FleetConfig, FleetPublish};
use crate::fleet::{FleetStats, rfc3339};
use crate::pipeline::{Sink, Update};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

/// One result on its way to the queue; the frame only when `include_image` is on.
pub struct Item {
    pub(crate) body: Value,
    pub(crate) frame: Option<Arc<image::RgbImage>>,
}

/// The pipeline side: turns updates into result messages (no I/O here).
pub struct FleetSink {
    tx: Sender<Item>,
    publish: FleetPublish,
    min_interval: Duration,
    last_live: Option<Instant>,
    last_frozen_seq: Option<u64>,
    include_image: bool,
    device_id: String,
    stats: Arc<FleetStats>,
}

impl FleetSink {
    pub(crate) fn new(
        tx: Sender<Item>,
        cfg: &FleetConfig,
        device_id: String,
        stats: Arc<FleetStats>,
    ) -> FleetSink {
        FleetSink {
            tx,
            publish: cfg.publish,
            min_interval: Duration::from_secs_f64(1.0 / cfg.max_rate_hz.max(1e-3)),
            last_live: None,
            last_frozen_seq: None,
            include_image: cfg.include_image,
            device_id,
            stats,
        }
    }
}

/// 128 random bits, hex: a result's id, fixed when it is made, so retries keep it.
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // No randomness: time + counter still never repeats on this device.
        static N: AtomicU64 = AtomicU64::new(0);
        let t = crate::storage::unix_ms() as u64;
        b[..8].copy_from_slice(&t.to_be_bytes());
        b[8..].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    hex::encode(b)
}

impl Sink for FleetSink {
    fn publish(&mut self, u: &Update) {
        let (Some(_), Some(f)) = (&u.prediction, &u.frame) else {
            return;
        };
        if u.state.frozen {
            // One message per frozen frame (a status-only republish of it is not a new result).
            if self.last_frozen_seq == Some(f.seq) {
                return;
            }
            self.last_frozen_seq = Some(f.seq);
        } else {
            if self.publish == FleetPublish::Frozen {
                return;
            }
            let now = Instant::now();
            if self
                .last_live
                .is_some_and(|t| now.duration_since(t) < self.min_interval)
            {
                return;
            }
            self.last_live = Some(now);
        }
        let ms = crate::storage::unix_ms();
        // The screen's smoothed top-3 for live frames; the frozen frame's own (TTA) result.
        let top3: Vec<Value> = u
            .state
            .top
            .iter()
            .map(|(name, prob)| json!({"class": name, "probability": prob}))
            .collect();
        let body = json!({
            "id": new_id(),
            "device_id": self.device_id,
            "time": rfc3339(ms),
            "time_ms": ms as u64,
            "frame_seq": f.seq,
            "label": f.label,
            "frozen": u.state.frozen,
            "outcome": u.state.outcome(),
            "quality_issue": u.state.quality,
            "headline": u.state.result_headline(),
            "top3": top3,
            "uncertain": u.state.uncertain,
            "refer": u.state.refer,
            "malignant_probability": u.state.malignant_probability,
            "ood_score": u.prediction.as_ref().and_then(|p| p.ood_score),
            "quality": u.quality,
            "model": {"name": u.state.model_name, "sha256": u.state.model_sha256},
            "timings": u.timings,
            "disclaimer": crate::DISCLAIMER,
        });
        if u.state.refer {
            self.stats.refer.fetch_add(1, Ordering::Relaxed);
        }
        let item = Item {
            body,
            frame: self.include_image.then(|| f.image.clone()),
        };
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::new_id;

    #[test]
    fn ids_are_unique_hex() {
        let a: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|s| s.len() == 32));
    }
}
