//! `dermcam bench`: latency percentiles, throughput, load time and peak RSS for one or more
//! bundles, side by side in one process run.

use crate::model::{LoadOptions, Model};
use image::RgbImage;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(mut ms: Vec<f64>) -> Percentiles {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BenchResult {
    pub bundle: String,
    pub precision: String,
    /// The engine asked for (`auto`, `tract`, `ort`).
    pub requested: String,
    /// The engine that ran (`tract` or `ort`).
    pub backend: String,
    /// Which engine and why (library path, fallback reason).
    pub engine: String,
    /// Inference p50 / the fastest engine's p50 on the same bundle and thread count (set by
    /// the caller that compares them; 1.0 alone).
    pub ratio_to_best: f64,
    pub threads: usize,
    pub load_ms: f64,
    pub first_prediction_ms: f64,
    pub preprocess_640x480: Percentiles,
    pub inference: Percentiles,
    pub throughput_per_s: f64,
    pub preprocess_share_of_inference: f64,
    pub peak_rss_mb: Option<f64>,
}

/// Peak resident set size of this process (Linux VmHWM).
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A deterministic 640x480 camera-like frame (a gradient with texture): the bench measures
/// the same work on every machine without shipping a large image.
pub fn test_frame() -> RgbImage {
    RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([
            (x * 255 / 639) as u8,
            (y * 255 / 479) as u8,
            (((x ^ y) & 0x3f) * 3) as u8,
        ])
    })
}

pub fn bench_bundle(
    dir: &Path,
    opts: &LoadOptions,
    iterations: usize,
) -> Result<BenchResult, Box<dyn std::error::Error + Send + Sync>> {
    let frame = test_frame();
    let t0 = Instant::now();
    let model = Model::load(dir, opts)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    model.classify(&frame, false)?;
    let first_prediction_ms = t0.elapsed().as_secs_f64() * 1e3;
    let iterations = iterations.max(1);
    let mut pre = Vec::with_capacity(iterations);
    let mut inf = Vec::with_capacity(iterations);
    let start = Instant::now();
    for _ in 0..iterations {
        let a = Instant::now();
        let input = model.preprocess(&frame);
        let b = Instant::now();
        model.logits(&input, false)?;
        let c = Instant::now();
        pre.push((b - a).as_secs_f64() * 1e3);
        inf.push((c - b).as_secs_f64() * 1e3);
    }
    let total = start.elapsed().as_secs_f64();
    let preprocess_640x480 = Percentiles::of(pre);
    let inference = Percentiles::of(inf);
    Ok(BenchResult {
        bundle: model.manifest.name.clone(),
        precision: model.manifest.precision.as_str().to_string(),
        requested: opts.backend.name().into(),
        backend: model.engine.backend.name().into(),
        engine: model.engine.summary(),
        ratio_to_best: 1.0,
        threads: crate::model::backend::tract::resolve_threads(opts.threads),
        load_ms,
        first_prediction_ms,
        preprocess_share_of_inference: preprocess_640x480.p50_ms / inference.p50_ms,
        preprocess_640x480,
        inference,
        throughput_per_s: iterations as f64 / total,
        peak_rss_mb: peak_rss_mb(),
    })
}

#[derive(Debug, Serialize)]
pub struct PipelineBench {
    pub bundle: String,
    pub engine: String,
    pub seconds: f64,
    pub camera_interval_ms: f64,
    pub frames: u64,
    pub inferences: u64,
    pub dropped_frames: u64,
    pub frame_to_screen: Percentiles,
    pub inference_p50_ms: f64,
    /// frame_to_screen p50 / inference p50.
    pub latency_ratio: f64,
    /// Capture -> taken by the model (design bound: one camera interval).
    pub age_at_inference: Percentiles,
    /// Taken -> update picked up by the display thread (inference and publishing).
    pub inference_in_pipeline: Percentiles,
    /// Render + present.
    pub render: Percentiles,
    /// Frames whose capture -> screen time exceeded their own bound: camera interval + their
    /// inference + their render (+1 ms scheduling slack).
    pub over_bound: usize,
    pub frames_measured: usize,
    pub rss_start_mb: Option<f64>,
    pub rss_end_mb: Option<f64>,
}

/// Run the live pipeline for `seconds` on a slideshow at a camera's rate (`interval`, 33 ms =
/// 30 fps, faster than the model), rendering an 800x480 screen in memory: latency from capture
/// to screen against the design bound, and memory growth under a model slower than the camera.
pub fn bench_pipeline(
    dir: &Path,
    opts: &LoadOptions,
    images: &str,
    seconds: f64,
    interval: std::time::Duration,
) -> Result<PipelineBench, Box<dyn std::error::Error + Send + Sync>> {
    let model = std::sync::Arc::new(Model::load(dir, opts)?);
    let inference_p50_ms = inference_alone_p50_ms(&model)?;
    let source = crate::source::ImagesSource::new(images, interval, true)?;
    let rss_start_mb = peak_rss_mb();
    let p = crate::pipeline::Pipeline::start(
        model.clone(),
        Box::new(source),
        Box::new(crate::screen::MemoryScreen(800, 480)),
        vec![],
        Default::default(),
    );
    let shared = p.shared.clone();
    std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
    shared.request_shutdown();
    p.join();
    let c = shared.counters();
    let lat = shared.frame_to_screen_ms();
    if lat.is_empty() {
        return Err("no frame reached the screen".into());
    }
    let frame_to_screen = Percentiles::of(lat);
    let parts = shared.latency_parts();
    if parts.is_empty() {
        return Err("no latency breakdown recorded".into());
    }
    let interval_ms = interval.as_secs_f64() * 1e3;
    let over_bound = parts
        .iter()
        .filter(|p| p.total_ms > interval_ms + p.inference_ms + p.display_ms + 1.0)
        .count();
    let col = |f: fn(&crate::pipeline::LatencyParts) -> f64| {
        Percentiles::of(parts.iter().map(f).collect())
    };
    Ok(PipelineBench {
        bundle: model.manifest.name.clone(),
        engine: model.engine.summary(),
        camera_interval_ms: interval_ms,
        age_at_inference: col(|p| p.age_at_take_ms),
        inference_in_pipeline: col(|p| p.inference_ms),
        render: col(|p| p.display_ms),
        over_bound,
        frames_measured: parts.len(),
        seconds,
        frames: c.frames,
        inferences: c.inferences,
        dropped_frames: c.dropped_frames,
        latency_ratio: frame_to_screen.p50_ms / inference_p50_ms,
        frame_to_screen,
        inference_p50_ms,
        rss_start_mb,
        rss_end_mb: peak_rss_mb(),
    })
}

/// Inference p50 over 10 runs on the test frame, outside the pipeline (the yardstick for
/// its latency).
fn inference_alone_p50_ms(model: &Model) -> Result<f64, Box<dyn std::error::Error + Send + Sync>> {
    let frame = test_frame();
    let mut inf = Vec::new();
    for _ in 0..10 {
        let t = model.preprocess(&frame);
        let a = Instant::now();
        model.logits(&t, false)?;
        inf.push(a.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Percentiles::of(inf).p50_ms)
}

/// Per-node tract timings of a bundle (slowest first: node name, op, ms summed over
/// `iterations` runs) on the bench's test frame.
pub fn profile_tract(
    dir: &Path,
    threads: usize,
    iterations: usize,
) -> Result<Vec<(String, String, f64)>, Box<dyn std::error::Error + Send + Sync>> {
    let manifest = crate::model::manifest::read_manifest(dir)?;
    let c = crate::model::backend::tract::TractClassifier::load(
        &dir.join("model.onnx"),
        &manifest,
        threads,
    )?;
    let input = crate::model::preprocess::preprocess(&test_frame(), &manifest.input);
    // Warm-up, then the measured runs.
    c.profile(&input, 2)?;
    Ok(c.profile(&input, iterations)?)
}
