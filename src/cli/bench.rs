//! `dermcam bench`: latency/throughput of the engines.

use super::args::EngineArgs;
use anyhow::{Context, Result};
use dermcam::model::{BackendKind, LoadOptions};
use dermcam::offline::bench::{BenchResult, PipelineBench};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Bundles to compare (repeatable). Default: every shipped bundle (`dermcam models`).
    #[arg(long = "model")]
    models: Vec<PathBuf>,
    /// Thread counts to run (comma-separated; 0 = all cores).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    threads: Vec<usize>,
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Engines to compare (comma-separated): auto, tract, ort.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    backend: Vec<BackendKind>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Also run the live pipeline this many seconds on the samples (first bundle, first
    /// engine, first thread count) and report capture -> screen latency against its bound.
    #[arg(long, default_value_t = 0.0)]
    pipeline_secs: f64,
    /// Camera interval of the pipeline run (ms; 33 = 30 fps).
    #[arg(long, default_value_t = 33)]
    pipeline_interval_ms: u64,
    /// Per-node tract timings of the first bundle: the N slowest nodes.
    #[arg(long, default_value_t = 0)]
    profile: usize,
}

pub(super) fn run(a: Args) -> Result<ExitCode> {
    let models = if a.models.is_empty() {
        dermcam::model::find_bundles(&dermcam::paths::models_dir())
    } else {
        a.models.clone()
    };
    let threads = if a.threads.is_empty() {
        vec![0]
    } else {
        a.threads.clone()
    };
    let backends = if a.backend.is_empty() {
        vec![BackendKind::Auto]
    } else {
        a.backend.clone()
    };
    if !a.json {
        print_table_header();
    }
    for m in &models {
        for &t in &threads {
            bench_engines(&a, m, t, &backends)?;
        }
    }
    if a.profile > 0 {
        let first = models.first().context("no bundle to profile")?;
        print_profile(first, threads[0], a.iterations, a.profile)?;
    }
    if a.pipeline_secs > 0.0 {
        let first = models.first().context("no bundle to benchmark")?;
        let opts = a.engine.options(backends[0], threads[0]);
        bench_pipeline(&a, first, &opts)?;
    }
    if !a.json {
        println!(
            "peak RSS of this process: {:.1} MB",
            dermcam::offline::bench::peak_rss_mb().unwrap_or(f64::NAN)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table_header() {
    println!(
        "machine: {} {}, {} logical CPUs",
        std::env::consts::ARCH,
        std::env::consts::OS,
        dermcam::model::backend::tract::resolve_threads(0)
    );
    println!(
        "{:<24} {:>5} {:<11} {:>3} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>7} {:>7}",
        "bundle",
        "prec",
        "engine",
        "thr",
        "load ms",
        "1st ms",
        "inf p50",
        "inf p90",
        "inf p99",
        "x best",
        "pre p50",
        "img/s",
        "RSS MB"
    );
}

/// One bundle at one thread count on every backend: a row each, with its speed relative to
/// the fastest of them.
fn bench_engines(a: &Args, m: &Path, t: usize, backends: &[BackendKind]) -> Result<()> {
    let mut rows = Vec::new();
    for &b in backends {
        let opts = a.engine.options(b, t);
        let r = dermcam::offline::bench::bench_bundle(m, &opts, a.iterations)
            .map_err(|e| anyhow::anyhow!("{} ({}): {e}", m.display(), b.name()))?;
        if !a.json {
            log::info!("{} {}: engine {}", r.bundle, b.name(), r.engine);
        }
        rows.push(r);
    }
    let best = rows
        .iter()
        .map(|r| r.inference.p50_ms)
        .fold(f64::INFINITY, f64::min);
    for mut r in rows {
        r.ratio_to_best = r.inference.p50_ms / best;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print_row(&r);
        }
    }
    Ok(())
}

fn print_row(r: &BenchResult) {
    let engine = if r.requested == r.backend {
        r.backend.clone()
    } else {
        format!("{}>{}", r.requested, r.backend)
    };
    println!(
        "{:<24} {:>5} {:<11} {:>3} {:>8.1} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>6.2}x {:>8.2} {:>7.1} {:>7.1}",
        r.bundle,
        r.precision,
        engine,
        r.threads,
        r.load_ms,
        r.first_prediction_ms,
        r.inference.p50_ms,
        r.inference.p90_ms,
        r.inference.p99_ms,
        r.ratio_to_best,
        r.preprocess_640x480.p50_ms,
        r.throughput_per_s,
        r.peak_rss_mb.unwrap_or(f64::NAN)
    );
}

/// tract's per-node profile of `bundle`: the `top` slowest nodes.
fn print_profile(bundle: &Path, threads: usize, iterations: usize, top: usize) -> Result<()> {
    let prof = dermcam::offline::bench::profile_tract(bundle, threads, iterations)
        .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.display()))?;
    let total: f64 = prof.iter().map(|p| p.2).sum();
    let runs = iterations.max(1);
    println!(
        "tract per-node profile of {} ({} threads, {} runs): {:.2} ms per run in nodes",
        bundle.display(),
        dermcam::model::backend::tract::resolve_threads(threads),
        runs,
        total / runs as f64
    );
    for (name, op, ms) in prof.iter().take(top) {
        println!(
            "  {:>7.3} ms {:>5.1}%  {:<28} {}",
            ms / runs as f64,
            100.0 * ms / total,
            op,
            name
        );
    }
    Ok(())
}

/// The whole pipeline (samples as the camera) on `bundle`.
fn bench_pipeline(a: &Args, bundle: &Path, opts: &LoadOptions) -> Result<()> {
    let r = dermcam::offline::bench::bench_pipeline(
        bundle,
        opts,
        &dermcam::paths::samples_dir().display().to_string(),
        a.pipeline_secs,
        std::time::Duration::from_millis(a.pipeline_interval_ms),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", bundle.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print_pipeline(&r);
    }
    Ok(())
}

fn print_pipeline(r: &PipelineBench) {
    println!(
        "pipeline {} on {} for {:.0} s, camera every {:.0} ms: {} frames, {} inferences, {} dropped",
        r.bundle,
        r.engine,
        r.seconds,
        r.camera_interval_ms,
        r.frames,
        r.inferences,
        r.dropped_frames
    );
    println!(
        "  capture->screen p50 {:.1} ms p99 {:.1} ms = {:.2}x inference p50 {:.1} ms",
        r.frame_to_screen.p50_ms, r.frame_to_screen.p99_ms, r.latency_ratio, r.inference_p50_ms
    );
    println!(
        "  = age when the model took it (bound: one camera interval) + quality gate, preprocessing, inference + render: p50 {:.1} + {:.1} + {:.1} ms; frames over their bound (interval + own processing + render): {} of {}",
        r.age_at_inference.p50_ms,
        r.inference_in_pipeline.p50_ms,
        r.render.p50_ms,
        r.over_bound,
        r.frames_measured
    );
    println!(
        "  frame age when the model took it: p50 {:.1} ms p99 {:.1} ms (bound {:.0} ms); peak RSS {:.1} -> {:.1} MB",
        r.age_at_inference.p50_ms,
        r.age_at_inference.p99_ms,
        r.camera_interval_ms,
        r.rss_start_mb.unwrap_or(f64::NAN),
        r.rss_end_mb.unwrap_or(f64::NAN)
    );
}
