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
    pub backend: String,
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
        precision: format!("{:?}", model.manifest.precision).to_lowercase(),
        backend: format!("{:?}", opts.backend).to_lowercase(),
        threads: if opts.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            opts.threads
        },
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
    pub seconds: f64,
    pub frames: u64,
    pub inferences: u64,
    pub dropped_frames: u64,
    pub frame_to_screen: Percentiles,
    pub inference_p50_ms: f64,
    /// frame_to_screen p50 / inference p50 (goal <= 1.1).
    pub latency_ratio: f64,
    pub rss_start_mb: Option<f64>,
    pub rss_end_mb: Option<f64>,
}

/// Run the live pipeline for `seconds` on a slideshow at a camera's 30 fps (faster than the
/// model), rendering an 800x480 screen in memory: latency from capture to screen and memory
/// growth under a model slower than the camera.
pub fn bench_pipeline(
    dir: &Path,
    opts: &LoadOptions,
    images: &str,
    seconds: f64,
) -> Result<PipelineBench, Box<dyn std::error::Error + Send + Sync>> {
    let model = std::sync::Arc::new(Model::load(dir, opts)?);
    let frame = test_frame();
    let mut inf = Vec::new();
    for _ in 0..10 {
        let t = model.preprocess(&frame);
        let a = Instant::now();
        model.logits(&t, false)?;
        inf.push(a.elapsed().as_secs_f64() * 1e3);
    }
    let inference_p50_ms = Percentiles::of(inf).p50_ms;
    let source =
        crate::source::ImagesSource::new(images, std::time::Duration::from_millis(33), true)?;
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
    let c = shared.counters.snapshot();
    let lat: Vec<f64> = shared
        .frame_to_screen_ms
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    if lat.is_empty() {
        return Err("no frame reached the screen".into());
    }
    let frame_to_screen = Percentiles::of(lat);
    Ok(PipelineBench {
        bundle: model.manifest.name.clone(),
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
