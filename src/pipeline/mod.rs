//! The live pipeline: capture -> quality gate -> classify -> sinks (screen, web status, log).
//! Three threads joined by "latest value" slots: a slow model never builds a queue of stale
//! frames, it just skips to the newest one (counted as dropped).

mod live;
pub use live::*;

pub mod quality;

use crate::config::PipelineConfig;
use crate::model::classifier::Prediction;
use crate::model::{Model, Timings};
use crate::pipeline::quality::Quality;
use crate::screen::Screen;
use crate::screen::render::{Canvas, DisplayState, SourceStatus, render};
use crate::source::{Frame, FrameSource, SourceError};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Pipeline {
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn initial_state(model: &Model) -> DisplayState {
    DisplayState {
        model_name: model.manifest.name.clone(),
        top: vec![],
        uncertain: false,
        refer: false,
        malignant_probability: 0.0,
        quality: None,
        source: SourceStatus::Starting,
        frozen: false,
        fps: 0.0,
        inference_ms: 0.0,
    }
}

impl Pipeline {
    pub fn start(
        model: Arc<Model>,
        mut source: Box<dyn FrameSource>,
        mut screen: Box<dyn Screen>,
        mut sinks: Vec<Box<dyn Sink>>,
        cfg: PipelineConfig,
    ) -> Pipeline {
        let shared = Arc::new(Shared {
            model: crate::model::ModelSlot::new(model.clone()),
            counters: Counters::default(),
            latest: RwLock::new(None),
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
        });
        let frames: Arc<Latest<Frame>> = Arc::new(Latest::default());
        let source_status: Arc<Mutex<SourceStatus>> = Arc::new(Mutex::new(SourceStatus::Starting));
        let mut threads = Vec::new();

        // Capture thread.
        {
            let (shared, frames, status) = (shared.clone(), frames.clone(), source_status.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("capture".into())
                    .spawn(move || {
                        while !shared.is_shutdown() {
                            let next = source.next_frame();
                            shared.beat(Stage::Capture);
                            match next {
                                Ok(f) => {
                                    *status.lock().unwrap_or_else(|e| e.into_inner()) =
                                        SourceStatus::Live;
                                    shared.counters.frames.fetch_add(1, Ordering::Relaxed);
                                    if frames.put(f) {
                                        shared
                                            .counters
                                            .dropped_frames
                                            .fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                Err(SourceError::BadFrame(m)) => {
                                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                                    log::warn!("{m}");
                                }
                                Err(SourceError::Disconnected(m)) => {
                                    log::warn!("camera disconnected: {m}; retrying");
                                    *status.lock().unwrap_or_else(|e| e.into_inner()) =
                                        SourceStatus::Disconnected(m);
                                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(SourceError::Ended) => {
                                    *status.lock().unwrap_or_else(|e| e.into_inner()) =
                                        SourceStatus::Ended;
                                    break;
                                }
                                Err(SourceError::Config(m)) => {
                                    log::error!("source: {m}");
                                    *status.lock().unwrap_or_else(|e| e.into_inner()) =
                                        SourceStatus::Disconnected(m);
                                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                        shared.stage_done(Stage::Capture);
                        shared.source_done.store(true, Ordering::SeqCst);
                    })
                    .expect("spawn capture thread"),
            );
        }

        // Inference thread.
        {
            let (shared, frames, status) = (shared.clone(), frames.clone(), source_status.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("inference".into())
                    .spawn(move || {
                        let mut model = model;
                        let mut state = initial_state(&model);
                        let mut seen = 0u64;
                        let mut smoothed: Option<(u64, Vec<f32>)> = None;
                        let mut frozen: Option<Update> = None;
                        let mut fps_window: std::collections::VecDeque<Instant> =
                            Default::default();
                        loop {
                            if shared.is_shutdown() {
                                break;
                            }
                            // Ticks at least every 100 ms unless an inference hangs.
                            shared.beat(Stage::Inference);
                            let current = shared.model();
                            if !Arc::ptr_eq(&current, &model) {
                                // A model update or reload: new name on screen, smoothing restarts.
                                model = current;
                                state.model_name = model.manifest.name.clone();
                                smoothed = None;
                            }
                            let next = frames.wait_newer(seen, Duration::from_millis(100));
                            let src_status =
                                status.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            if shared.freeze_requested.swap(false, Ordering::SeqCst) {
                                if frozen.take().is_none() {
                                    // Freeze the newest frame and classify it carefully (flip TTA).
                                    // Bind first: the read guard must be gone before `publish` writes.
                                    let current = shared.latest_frame();
                                    if let Some(f) = current {
                                        match model.classify(&f.image, cfg.freeze_tta) {
                                            Ok((p, t)) => {
                                                let mut st = state.clone();
                                                st.frozen = true;
                                                st.quality = None;
                                                st.show(&p, &model.manifest);
                                                let u = Update {
                                                    frame: Some(f),
                                                    state: st,
                                                    prediction: Some(p),
                                                    timings: Some(t),
                                                    quality: None,
                                                };
                                                publish(&shared, &mut sinks, &u);
                                                frozen = Some(u);
                                            }
                                            Err(e) => {
                                                shared
                                                    .counters
                                                    .errors
                                                    .fetch_add(1, Ordering::Relaxed);
                                                log::error!("{e}");
                                            }
                                        }
                                    }
                                } else {
                                    let last = shared
                                        .latest
                                        .read()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .clone();
                                    if let Some(mut u) = last {
                                        u.state.frozen = false;
                                        publish(&shared, &mut sinks, &u);
                                    }
                                }
                            }
                            if frozen.is_some() {
                                if let Some((v, _)) = next {
                                    seen = v;
                                }
                                continue;
                            }
                            let Some((v, frame)) = next else {
                                if state.source != src_status {
                                    // Status-only change (camera lost, source ended): show it.
                                    state.source = src_status.clone();
                                    let frame = shared.latest_frame();
                                    publish(
                                        &shared,
                                        &mut sinks,
                                        &Update {
                                            frame,
                                            state: state.clone(),
                                            prediction: None,
                                            timings: None,
                                            quality: None,
                                        },
                                    );
                                }
                                if shared.source_done() && frames.version() <= seen {
                                    break;
                                }
                                continue;
                            };
                            seen = v;
                            {
                                let mut t = shared.taken.lock().unwrap_or_else(|e| e.into_inner());
                                if t.len() >= 16 {
                                    t.pop_front();
                                }
                                t.push_back((frame.seq, Instant::now()));
                            }
                            state.source = src_status;
                            let now = Instant::now();
                            fps_window.push_back(now);
                            while fps_window
                                .front()
                                .is_some_and(|t| now - *t > Duration::from_secs(3))
                            {
                                fps_window.pop_front();
                            }
                            if fps_window.len() > 1 {
                                state.fps = (fps_window.len() - 1) as f32
                                    / (now - fps_window[0]).as_secs_f32().max(1e-3);
                            }
                            let q = quality::measure(&frame.image);
                            if let Some(issue) = quality::check(&q, &cfg) {
                                shared
                                    .counters
                                    .quality_rejections
                                    .fetch_add(1, Ordering::Relaxed);
                                state.quality = Some(issue.advice().to_string());
                                publish(
                                    &shared,
                                    &mut sinks,
                                    &Update {
                                        frame: Some(frame),
                                        state: state.clone(),
                                        prediction: None,
                                        timings: None,
                                        quality: Some(q),
                                    },
                                );
                                continue;
                            }
                            state.quality = None;
                            match model.classify(&frame.image, false) {
                                Ok((p, t)) => {
                                    shared.counters.inferences.fetch_add(1, Ordering::Relaxed);
                                    // Exponential moving average within one scene only.
                                    let probs = match smoothed.take() {
                                        Some((scene, prev)) if scene == frame.scene => prev
                                            .iter()
                                            .zip(&p.probabilities)
                                            .map(|(a, b)| {
                                                (1.0 - cfg.ema_alpha) * a + cfg.ema_alpha * b
                                            })
                                            .collect(),
                                        _ => p.probabilities.clone(),
                                    };
                                    smoothed = Some((frame.scene, probs.clone()));
                                    let sp = Prediction::from_probabilities(probs, &model.manifest);
                                    state.show(&sp, &model.manifest);
                                    state.inference_ms = t.inference_ms as f32;
                                    publish(
                                        &shared,
                                        &mut sinks,
                                        &Update {
                                            frame: Some(frame),
                                            state: state.clone(),
                                            prediction: Some(p),
                                            timings: Some(t),
                                            quality: Some(q),
                                        },
                                    );
                                }
                                Err(e) => {
                                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                                    log::error!("{e}");
                                }
                            }
                        }
                        shared.stage_done(Stage::Inference);
                        shared.request_shutdown_display();
                    })
                    .expect("spawn inference thread"),
            );
        }

        // Display thread: renders the newest update; a failing screen is logged and retried.
        {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("display".into())
                    .spawn(move || {
                        let (w, h) = screen.size();
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
                            match screen.present(&canvas) {
                                Ok(()) => {
                                    if failing {
                                        log::info!("screen recovered");
                                        failing = false;
                                    }
                                    if u.frame.is_some() {
                                        shared.first_frame_present.store(true, Ordering::SeqCst);
                                    }
                                    if let (Some(f), Some(_)) = (&u.frame, &u.prediction) {
                                        let mut ring = shared
                                            .frame_to_screen_ms
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner());
                                        if ring.len() >= 1000 {
                                            ring.pop_front();
                                        }
                                        let total = f.captured.elapsed().as_secs_f64() * 1e3;
                                        ring.push_back(total);
                                        drop(ring);
                                        let took = shared
                                            .taken
                                            .lock()
                                            .unwrap_or_else(|e| e.into_inner())
                                            .iter()
                                            .find(|(s, _)| *s == f.seq)
                                            .map(|(_, t)| *t);
                                        if let Some(took) = took {
                                            let ms = |d: Duration| d.as_secs_f64() * 1e3;
                                            let age =
                                                ms(took.saturating_duration_since(f.captured));
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
                    })
                    .expect("spawn display thread"),
            );
        }
        Pipeline { shared, threads }
    }

    /// Wait for all threads (after the source ended or `request_shutdown`).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn publish(shared: &Shared, sinks: &mut [Box<dyn Sink>], u: &Update) {
    for s in sinks.iter_mut() {
        s.publish(u);
    }
    *shared.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(u.clone());
    shared.updates.put(u.clone());
}
