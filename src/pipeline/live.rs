//! The live state shared between pipeline stages, the web UI and the watchdog: latest
//! frame/result mailboxes, counters, heartbeats.

use super::view::DisplayState;
use crate::model::classifier::Prediction;
use crate::model::{Model, Timings};
use crate::pipeline::quality::Quality;
use crate::source::Frame;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A single-value mailbox: `put` replaces the value, readers wait for a newer one.
pub struct Latest<T> {
    slot: Mutex<Slot<T>>,
    cv: Condvar,
}

struct Slot<T> {
    /// Bumped by every `put`.
    version: u64,
    value: Option<T>,
    /// Whether a waiting reader has taken the current value (a `put` over an untaken one
    /// counts as a dropped frame).
    taken: bool,
}

impl<T: Clone> Default for Latest<T> {
    fn default() -> Self {
        Latest {
            slot: Mutex::new(Slot {
                version: 0,
                value: None,
                taken: false,
            }),
            cv: Condvar::new(),
        }
    }
}

impl<T: Clone> Latest<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `v`; returns true if an unread value was overwritten.
    pub fn put(&self, v: T) -> bool {
        let mut g = self.lock();
        let replaced = g.value.is_some() && !g.taken;
        g.version += 1;
        g.value = Some(v);
        g.taken = false;
        self.cv.notify_all();
        replaced
    }

    /// Wait up to `timeout` for a value newer than version `after`; returns (version, value).
    pub fn wait_newer(&self, after: u64, timeout: Duration) -> Option<(u64, T)> {
        let (mut g, _) = self
            .cv
            .wait_timeout_while(self.lock(), timeout, |s| s.version <= after)
            .unwrap_or_else(|e| e.into_inner());
        if g.version > after {
            g.taken = true;
            g.value.clone().map(|v| (g.version, v))
        } else {
            None
        }
    }

    /// Look at the current value without taking it (status readers, not the consumer).
    pub fn peek<R>(&self, f: impl FnOnce(Option<&T>) -> R) -> R {
        f(self.lock().value.as_ref())
    }

    pub fn version(&self) -> u64 {
        self.lock().version
    }
}

/// Counters for the status page and /metrics.
#[derive(Default)]
pub struct Counters {
    pub frames: AtomicU64,
    pub inferences: AtomicU64,
    pub dropped_frames: AtomicU64,
    pub quality_rejections: AtomicU64,
    pub errors: AtomicU64,
    pub screen_errors: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CounterSnapshot {
    pub frames: u64,
    pub inferences: u64,
    pub dropped_frames: u64,
    pub quality_rejections: u64,
    pub errors: u64,
    pub screen_errors: u64,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            frames: g(&self.frames),
            inferences: g(&self.inferences),
            dropped_frames: g(&self.dropped_frames),
            quality_rejections: g(&self.quality_rejections),
            errors: g(&self.errors),
            screen_errors: g(&self.screen_errors),
        }
    }
}

/// What the pipeline publishes after each frame it handled.
#[derive(Debug, Clone)]
pub struct Update {
    pub frame: Option<Frame>,
    pub state: DisplayState,
    /// This frame's own (unsmoothed) prediction, when it was classified.
    pub prediction: Option<Prediction>,
    pub timings: Option<Timings>,
    pub quality: Option<Quality>,
    /// The model that made `prediction` (sinks name it and its classes from here, never from a
    /// start-up copy: a fleet update or reload may have swapped it).
    pub model: Option<std::sync::Arc<crate::model::Model>>,
}

impl Update {
    /// The outcome word of this update (None for a status-only change before any result).
    pub fn outcome(&self) -> Option<crate::model::classifier::Outcome> {
        use crate::model::classifier::Outcome;
        match (&self.prediction, self.state.quality) {
            (Some(p), _) => Some(p.outcome()),
            (None, Some(_)) => Some(Outcome::Retake),
            (None, None) => None,
        }
    }

    /// A status-only change (camera lost, source ended): nothing classified.
    pub fn status(frame: Option<Frame>, state: DisplayState) -> Update {
        Update {
            frame,
            state,
            prediction: None,
            timings: None,
            quality: None,
            model: None,
        }
    }

    /// A frame the quality gate turned away.
    pub fn rejected(frame: Frame, state: DisplayState, quality: Quality) -> Update {
        Update {
            frame: Some(frame),
            state,
            prediction: None,
            timings: None,
            quality: Some(quality),
            model: None,
        }
    }

    /// A classified frame and the quality measurement that let it through the gate.
    pub fn classified(
        frame: Frame,
        state: DisplayState,
        prediction: Prediction,
        timings: Timings,
        quality: Option<Quality>,
        model: std::sync::Arc<crate::model::Model>,
    ) -> Update {
        Update {
            frame: Some(frame),
            state,
            prediction: Some(prediction),
            timings: Some(timings),
            quality,
            model: Some(model),
        }
    }
}

/// A consumer of pipeline updates (log, web status, ...). Called on the inference thread:
/// must be quick.
pub trait Sink: Send {
    fn publish(&mut self, update: &Update);
}

/// State shared with the web server and the binary.
pub struct Shared {
    /// The live model; the inference thread takes it per frame, so a swap applies at the next.
    model: crate::model::ModelSlot,
    pub(super) counters: Counters,
    /// Every update, once: the display stage waits on it, status readers peek.
    pub(super) updates: Latest<Update>,
    started: Instant,
    pub(super) freeze_requested: AtomicBool,
    pub(super) shutdown: AtomicBool,
    pub(super) source_done: AtomicBool,
    /// Set once a source frame (not only a status screen) has been presented.
    pub(super) first_frame_present: AtomicBool,
    /// Liveness of each stage (the systemd watchdog pings only while all of them tick).
    pub(super) heartbeats: Heartbeats,
    pub(super) display_absent: AtomicBool,
    /// Capture -> on-screen latency (ms) of the last classified frames (bounded ring).
    pub(super) frame_to_screen_ms: Mutex<std::collections::VecDeque<f64>>,
    /// The same frames split into the parts of the design bound (bounded ring).
    pub(super) latency_parts: Mutex<std::collections::VecDeque<LatencyParts>>,
    /// The canvas last presented on the screen (`/api/v1/screen.png`: what the device shows,
    /// for a remote helper and for the board checks that compare it with the framebuffer).
    pub(super) screen: Mutex<Option<Arc<image::RgbImage>>>,
    /// When the inference thread took each recent frame (seq, instant), for `latency_parts`.
    pub(super) taken: Mutex<std::collections::VecDeque<(u64, Instant)>>,
}

/// Where one classified frame's capture -> screen time went. Design bound: a frame is taken by
/// the model at most one camera interval after capture (the inference thread always takes the
/// newest frame the moment it is free), then waits for nothing but its own inference and the
/// render: `age_at_take <= camera interval`, `total <= interval + inference + render`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyParts {
    /// Capture -> the inference thread took the frame.
    pub age_at_take_ms: f64,
    /// Took the frame -> the display thread picked up its update (quality gate,
    /// preprocessing, inference, publishing).
    pub inference_ms: f64,
    /// Render + present.
    pub display_ms: f64,
    pub total_ms: f64,
}

/// A pipeline stage whose liveness is tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Capture,
    Inference,
    Display,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Inference => "inference",
            Stage::Display => "display",
        }
    }
}

/// Last time (ms since start) each stage finished a unit of work or an idle wait. A stage that
/// blocks (a hung camera read, a model that never returns, a stuck SPI write) stops ticking;
/// one that handles faults (camera unplugged and retried, screen errors retried) keeps ticking.
#[derive(Debug, Default)]
pub struct Heartbeats {
    pub(super) ms: [AtomicU64; 3],
    /// Stages that have finished for good (source ended, no screen): never stalled.
    pub(super) done: [AtomicBool; 3],
}

impl Shared {
    pub fn beat(&self, stage: Stage) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeats.ms[stage as usize].store(ms, Ordering::Relaxed);
    }

    /// True when the pipeline runs without a screen (nothing is ever presented).
    pub fn display_absent(&self) -> bool {
        self.display_absent.load(Ordering::SeqCst)
    }

    pub fn stage_done(&self, stage: Stage) {
        self.heartbeats.done[stage as usize].store(true, Ordering::SeqCst);
    }

    /// The first stage that has not ticked for longer than `limit`, with how long.
    pub fn stalled(&self, limit: Duration) -> Option<(Stage, Duration)> {
        let now = self.started.elapsed().as_millis() as u64;
        [Stage::Capture, Stage::Inference, Stage::Display]
            .into_iter()
            .filter(|s| !self.heartbeats.done[*s as usize].load(Ordering::SeqCst))
            .map(|s| {
                let last = self.heartbeats.ms[s as usize].load(Ordering::Relaxed);
                (s, Duration::from_millis(now.saturating_sub(last)))
            })
            .find(|(_, age)| *age > limit)
    }

    /// The frame of the newest update.
    pub fn latest_frame(&self) -> Option<Frame> {
        self.updates.peek(|u| u.and_then(|u| u.frame.clone()))
    }

    /// The newest update (what the screen shows now).
    pub fn latest(&self) -> Option<Update> {
        self.updates.peek(|u| u.cloned())
    }

    pub fn model(&self) -> Arc<Model> {
        self.model.get()
    }

    /// Puts another model into service (a fleet update, `reload-model`): frames in flight
    /// finish on the old one.
    pub fn set_model(&self, m: Arc<Model>) {
        self.model.set(m)
    }

    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether a source frame (not only a status screen) has been presented.
    pub fn first_frame_shown(&self) -> bool {
        self.first_frame_present.load(Ordering::SeqCst)
    }

    /// The canvas last presented on the screen.
    pub fn screen_image(&self) -> Option<Arc<image::RgbImage>> {
        self.screen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Capture -> on-screen latency (ms) of the last classified frames, oldest first.
    pub fn frame_to_screen_ms(&self) -> Vec<f64> {
        copied(&self.frame_to_screen_ms)
    }

    /// The same frames split into the parts of the design bound, oldest first.
    pub fn latency_parts(&self) -> Vec<LatencyParts> {
        copied(&self.latency_parts)
    }

    /// Whether the screen shows a frozen (point-and-classify) result.
    pub fn is_frozen(&self) -> bool {
        self.updates.peek(|u| u.is_some_and(|u| u.state.frozen))
    }

    /// Point-and-classify: toggle freeze (button, stdin key, HTTP trigger).
    pub fn toggle_freeze(&self) {
        self.freeze_requested.store(true, Ordering::SeqCst);
    }
    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
    pub fn source_done(&self) -> bool {
        self.source_done.load(Ordering::SeqCst)
    }
}

impl Shared {
    pub(super) fn new(model: Arc<Model>) -> Shared {
        Shared {
            model: crate::model::ModelSlot::new(model),
            counters: Counters::default(),
            updates: Latest::default(),
            started: Instant::now(),
            freeze_requested: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            source_done: AtomicBool::new(false),
            first_frame_present: AtomicBool::new(false),
            heartbeats: Heartbeats::default(),
            display_absent: AtomicBool::new(false),
            frame_to_screen_ms: Mutex::new(Default::default()),
            latency_parts: Mutex::new(Default::default()),
            taken: Mutex::new(Default::default()),
            screen: Mutex::new(None),
        }
    }

    /// The newest update, for the web UI and the display thread.
    pub(super) fn set_latest(&self, u: &Update) {
        self.updates.put(u.clone());
    }

    /// When the inference thread took frame `seq` (for `latency_parts`; last 16 kept).
    pub(super) fn note_taken(&self, seq: u64) {
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() >= 16 {
            t.pop_front();
        }
        t.push_back((seq, Instant::now()));
    }

    pub(super) fn request_shutdown_display(&self) {
        self.source_done.store(true, Ordering::SeqCst);
        self.shutdown.store(true, Ordering::SeqCst);
    }
    pub(super) fn display_done(&self) -> bool {
        self.is_shutdown()
    }
}

/// A copy of a bounded window the pipeline records into, oldest first.
fn copied<T: Copy>(window: &Mutex<std::collections::VecDeque<T>>) -> Vec<T> {
    let v = window.lock().unwrap_or_else(|e| e.into_inner());
    v.iter().copied().collect()
}
