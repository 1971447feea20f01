//! The display stage: renders the newest update and presents it; a failing screen is counted,
//! logged once and retried. Records capture -> screen latency for the benchmarks.

use super::{LatencyParts, Shared, Stage, Update};
use crate::screen::Screen;
use crate::screen::render::{Canvas, render};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) struct Display {
    pub screen: Box<dyn Screen>,
    pub shared: Arc<Shared>,
}

impl Display {
    pub fn run(mut self) {
        let shared = self.shared.clone();
        let (w, h) = self.screen.size();
        if w == 0 || h == 0 {
            shared.display_absent.store(true, Ordering::SeqCst);
            shared.stage_done(Stage::Display);
            return;
        }
        let mut canvas = Canvas::new(w, h);
        let mut seen = 0;
        let mut failing = false;
        loop {
            shared.beat(Stage::Display);
            let next = shared.updates.wait_newer(seen, Duration::from_millis(200));
            let Some((v, u)) = next else {
                if shared.display_done() {
                    break;
                }
                continue;
            };
            seen = v;
            let picked = Instant::now();
            render(
                &mut canvas,
                u.frame.as_ref().map(|f| f.image.as_ref()),
                &u.state,
            );
            match self.screen.present(&canvas) {
                Ok(()) => {
                    if failing {
                        log::info!("screen recovered");
                        failing = false;
                    }
                    if u.frame.is_some() {
                        shared.first_frame_present.store(true, Ordering::SeqCst);
                    }
                    keep_copy(&shared, &canvas);
                    self.record_latency(&u, picked);
                }
                Err(e) => {
                    shared
                        .counters
                        .screen_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if !failing {
                        log::warn!("screen: {e}; will retry");
                        failing = true;
                    }
                }
            }
        }
        shared.stage_done(Stage::Display);
    }
}

/// Keep what the screen now shows; reuses the previous copy's buffer unless a reader holds it.
fn keep_copy(shared: &Shared, canvas: &Canvas) {
    let mut slot = shared.screen.lock().unwrap_or_else(|e| e.into_inner());
    match slot.as_mut().and_then(Arc::get_mut) {
        Some(img) if img.dimensions() == canvas.0.dimensions() => {
            img.copy_from_slice(canvas.0.as_raw())
        }
        _ => *slot = Some(Arc::new(canvas.0.clone())),
    }
}

impl Display {
    /// Capture -> on-screen time of a classified frame, and its parts (bounded rings).
    fn record_latency(&self, u: &Update, picked: Instant) {
        let (Some(f), Some(_)) = (&u.frame, &u.prediction) else {
            return;
        };
        let shared = &self.shared;
        let total = f.captured.elapsed().as_secs_f64() * 1e3;
        {
            let mut ring = shared
                .frame_to_screen_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if ring.len() >= 1000 {
                ring.pop_front();
            }
            ring.push_back(total);
        }
        let took = shared
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(s, _)| *s == f.seq)
            .map(|(_, t)| *t);
        if let Some(took) = took {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let age = ms(took.saturating_duration_since(f.captured));
            // `picked` is after the update was published.
            let display = ms(picked.elapsed());
            let mut parts = shared
                .latency_parts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if parts.len() >= 1000 {
                parts.pop_front();
            }
            parts.push_back(LatencyParts {
                age_at_take_ms: age,
                inference_ms: (total - age - display).max(0.0),
                display_ms: display,
                total_ms: total,
            });
        }
    }
}
