//! The inference stage: takes the newest frame, gates it on quality, classifies it, smooths
//! within a scene, measures FPS, handles freeze (flip-TTA on the frozen frame) and release, and
//! publishes each result to the sinks and the live state.

use super::quality::{self, Quality, QualityIssue};
use super::view::{DisplayState, SourceStatus};
use super::{Latest, Shared, Sink, Stage, Update, initial_state};
use crate::config::PipelineConfig;
use crate::model::Model;
use crate::model::classifier::Prediction;
use crate::source::Frame;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) struct Infer {
    pub model: Arc<Model>,
    pub shared: Arc<Shared>,
    pub frames: Arc<Latest<Frame>>,
    pub status: Arc<Mutex<SourceStatus>>,
    pub sinks: Vec<Box<dyn Sink>>,
    pub cfg: PipelineConfig,
    /// Test knob (`DERMCAM_TEST_HANG=infer:N`): classifications left before one never returns.
    pub hang_after: Option<u64>,
}

/// What the loop carries from one frame to the next.
struct Run {
    state: DisplayState,
    /// Mailbox version of the last frame taken.
    seen: u64,
    /// (scene, probabilities): the moving average, within one scene only.
    smoothed: Option<(u64, Vec<f32>)>,
    /// The frozen update while frozen.
    frozen: Option<Update>,
    fps_window: VecDeque<Instant>,
}

impl Infer {
    pub fn run(mut self) {
        let shared = self.shared.clone();
        let mut r = Run {
            state: initial_state(&self.model),
            seen: 0,
            smoothed: None,
            frozen: None,
            fps_window: VecDeque::new(),
        };
        loop {
            if shared.is_shutdown() {
                break;
            }
            // Ticks at least every 100 ms unless an inference hangs.
            shared.beat(Stage::Inference);
            let current = shared.model();
            if !Arc::ptr_eq(&current, &self.model) {
                // A model update or reload: new name on screen, smoothing restarts.
                self.model = current;
                r.state.model_name = self.model.manifest.name.clone();
                r.state.model_sha256 = self.model.manifest.sha256.clone();
                r.smoothed = None;
            }
            let next = self.frames.wait_newer(r.seen, Duration::from_millis(100));
            let src_status = self
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if shared.freeze_requested.swap(false, Ordering::SeqCst) {
                self.toggle_freeze(&mut r);
            }
            if r.frozen.is_some() {
                if let Some((v, _)) = next {
                    r.seen = v;
                }
                continue;
            }
            let Some((v, frame)) = next else {
                if r.state.source != src_status {
                    // Status-only change (camera lost, source ended): show it.
                    r.state.source = src_status.clone();
                    let frame = shared.latest_frame();
                    self.publish(&Update::status(frame, r.state.clone()));
                }
                if shared.source_done() && self.frames.version() <= r.seen {
                    break;
                }
                continue;
            };
            r.seen = v;
            shared.note_taken(frame.seq);
            r.state.source = src_status;
            if let Some(f) = fps(&mut r.fps_window) {
                r.state.fps = f;
            }
            self.classify_live(&mut r, frame);
        }
        shared.stage_done(Stage::Inference);
        shared.request_shutdown_display();
    }

    /// Freeze the newest frame and classify it carefully (flip TTA), or release.
    fn toggle_freeze(&mut self, r: &mut Run) {
        let shared = self.shared.clone();
        if r.frozen.take().is_some() {
            let last = shared.latest();
            if let Some(mut u) = last {
                // The screen leaves freeze at once; the frozen result is not a new one, so
                // sinks that record results (fleet, log, captures) see a status change only.
                u.state.frozen = false;
                u.prediction = None;
                u.timings = None;
                self.publish(&u);
            }
            return;
        }
        // Bind first: the read guard must be gone before `publish` writes.
        let Some(f) = shared.latest_frame() else {
            return;
        };
        // The frame being frozen goes through the same gate as a live one: it may be exactly
        // the frame the gate just refused (a blurred or blown-out view is frozen as "retake").
        let q = match self.gate(&f.image) {
            Ok(q) => q,
            Err((q, issue)) => {
                log::info!(
                    "freeze: the quality gate held the frame back ({})",
                    issue.as_str()
                );
                let mut st = r.state.clone();
                st.frozen = true;
                st.retake(issue);
                let u = Update::rejected(f, st, q);
                self.publish(&u);
                r.frozen = Some(u);
                return;
            }
        };
        match self.model.classify(&f.image, self.cfg.freeze_tta) {
            Ok((p, t)) => {
                let mut st = r.state.clone();
                st.frozen = true;
                st.quality = None;
                st.show(&p, &self.model.manifest);
                let u = Update::classified(f, st, p, t, Some(q), self.model.clone());
                self.publish(&u);
                r.frozen = Some(u);
            }
            Err(e) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                log::error!("{e}");
            }
        }
    }

    fn classify_live(&mut self, r: &mut Run, frame: Frame) {
        let shared = self.shared.clone();
        let q = match self.gate(&frame.image) {
            Ok(q) => q,
            Err((q, issue)) => {
                r.state.retake(issue);
                self.publish(&Update::rejected(frame, r.state.clone(), q));
                return;
            }
        };
        r.state.quality = None;
        match self.hang_after.as_mut() {
            Some(0) => super::hang_forever(),
            Some(n) => *n -= 1,
            None => {}
        }
        match self.model.classify(&frame.image, false) {
            Ok((p, t)) => {
                shared.counters.inferences.fetch_add(1, Ordering::Relaxed);
                let alpha = self.cfg.ema_alpha;
                let probs: Vec<f32> = match r.smoothed.take() {
                    Some((scene, prev)) if scene == frame.scene => prev
                        .iter()
                        .zip(&p.probabilities)
                        .map(|(a, b)| (1.0 - alpha) * a + alpha * b)
                        .collect(),
                    _ => p.probabilities.clone(),
                };
                r.smoothed = Some((frame.scene, probs.clone()));
                // The gate is per frame: one frame of the room is "not a lesion" at once.
                let sp = Prediction::from_probabilities(probs, &self.model.manifest)
                    .with_ood(p.ood_score, &self.model.manifest);
                r.state.show(&sp, &self.model.manifest);
                r.state.inference_ms = t.inference_ms as f32;
                self.publish(&Update::classified(
                    frame,
                    r.state.clone(),
                    p,
                    t,
                    Some(q),
                    self.model.clone(),
                ));
            }
            Err(e) => {
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                log::error!("{e}");
            }
        }
    }

    /// The quality gate, one code path for live frames and the frame being frozen: the
    /// measurement, or the measurement and why the frame is held back (counted).
    fn gate(&self, image: &image::RgbImage) -> Result<Quality, (Quality, QualityIssue)> {
        let q = quality::measure(image);
        match quality::check(&q, &self.cfg) {
            None => Ok(q),
            Some(issue) => {
                self.shared
                    .counters
                    .quality_rejections
                    .fetch_add(1, Ordering::Relaxed);
                Err((q, issue))
            }
        }
    }

    fn publish(&mut self, u: &Update) {
        for s in self.sinks.iter_mut() {
            s.publish(u);
        }
        self.shared.set_latest(u);
    }
}

/// Frames per second over the last 3 s, counting this one (None until there are two). The
/// previous frame is always kept, so a device slower than one inference per 3 s (an emulated
/// board, a big model on a Pi) still reports its rate instead of 0.
fn fps(window: &mut VecDeque<Instant>) -> Option<f32> {
    fps_at(window, Instant::now())
}

fn fps_at(window: &mut VecDeque<Instant>, now: Instant) -> Option<f32> {
    window.push_back(now);
    while window.len() > 2
        && window
            .front()
            .is_some_and(|t| now - *t > Duration::from_secs(3))
    {
        window.pop_front();
    }
    (window.len() > 1)
        .then(|| (window.len() - 1) as f32 / (now - window[0]).as_secs_f32().max(1e-3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fps_counts_the_last_three_seconds_and_slow_rates_too() {
        let t0 = Instant::now();
        let mut w = VecDeque::new();
        assert_eq!(fps_at(&mut w, t0), None);
        // 10 frames/s for 5 s: the window holds the last 3 s.
        let mut f = None;
        for i in 1..=50 {
            f = fps_at(&mut w, t0 + Duration::from_millis(100 * i));
        }
        assert!((f.unwrap() - 10.0).abs() < 0.5, "{f:?}");
        assert!(w.len() <= 32, "{}", w.len());
        // Then one frame every 5 s: 0.2/s, not 0.
        let mut w = VecDeque::new();
        fps_at(&mut w, t0);
        fps_at(&mut w, t0 + Duration::from_secs(5));
        let f = fps_at(&mut w, t0 + Duration::from_secs(10)).unwrap();
        assert!((f - 0.2).abs() < 1e-3, "{f}");
        assert_eq!(w.len(), 2);
    }
}
