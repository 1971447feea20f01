//! Command-line interface (clap). Exit codes: 0 ok; 1 other error; 2 usage; 3 model bundle
//! invalid; 4 some inputs failed (classify); 5 dataset invalid; 6 config invalid.

mod check;
use check::*;
mod classify;
use classify::*;
#[cfg(feature = "offline")]
mod eval;
#[cfg(feature = "offline")]
use eval::*;
mod bench;
use bench::*;
mod models;
use models::*;
#[cfg(feature = "fleet")]
mod bundle;
#[cfg(feature = "fleet")]
use bundle::*;
pub mod logging;
mod print;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dermcam::model::manifest::BundleError;
use dermcam::model::{BackendKind, LoadOptions, Model, OrtOptions, OrtProvider};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "dermcam",
    version,
    about = "Skin-lesion image classifier appliance. Research/education only: not a medical device."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Engine settings every command takes (`bench` too, so TensorRT can be benchmarked on a Jetson).
#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// ONNX Runtime execution providers in order (ort / auto): tensorrt, cuda, cpu.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
    ort_providers: Vec<OrtProvider>,
    /// libonnxruntime.so to load (default: $ORT_DYLIB_PATH, then /usr/lib/dermcam/, then, for
    /// --backend ort, the loader path).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// CUDA / TensorRT device.
    #[arg(long, default_value_t = 0)]
    ort_device_id: i32,
    /// TensorRT engine cache folder.
    #[arg(long)]
    trt_cache_dir: Option<PathBuf>,
    /// TensorRT fp16 engine.
    #[arg(long)]
    trt_fp16: bool,
}

impl EngineArgs {
    fn options(&self, backend: BackendKind, threads: usize) -> LoadOptions {
        LoadOptions {
            backend,
            threads,
            ort: OrtOptions {
                library: self.ort_library.clone(),
                providers: self.ort_providers.clone(),
                device_id: self.ort_device_id,
                trt_cache_dir: self.trt_cache_dir.clone(),
                trt_fp16: self.trt_fp16,
                ..OrtOptions::default()
            },
        }
    }
}

#[derive(clap::Args, Clone)]
struct ModelArgs {
    /// Model bundle folder (model.onnx + model.json). Default: the shipped default bundle.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Inference engine: auto = ONNX Runtime when its library can be loaded, else tract.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendKind,
    #[command(flatten)]
    engine: EngineArgs,
}

impl ModelArgs {
    fn options(&self) -> LoadOptions {
        self.engine.options(self.backend, self.threads)
    }
    fn dir(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(dermcam::paths::default_model_dir)
    }
    fn load(&self) -> Result<Model> {
        let dir = self.dir();
        let m = Model::load(&dir, &self.options())
            .with_context(|| format!("loading model bundle {}", dir.display()))?;
        log::info!("engine: {}", m.engine.summary());
        Ok(m)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Classify images or folders of images.
    Classify {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        /// How many classes to list per image.
        #[arg(long, default_value_t = 3)]
        top_k: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Average with the horizontally mirrored image (test-time augmentation).
        #[arg(long)]
        tta: bool,
        /// Classify every image: skip the quality gate (too dark / too bright / blurred) and
        /// the "not a lesion" gate that the camera and the upload page apply.
        #[arg(long)]
        no_gates: bool,
    },
    /// Evaluate a bundle on a labelled dataset (manifest.csv or class folders).
    #[cfg(feature = "offline")]
    Eval {
        /// Dataset folders (one or more, e.g. skin9 and skin9-extra); reported together, with
        /// per-source, per-archive, lesion-clean and refer figures.
        #[arg(required = true)]
        dataset: Vec<PathBuf>,
        /// Split to evaluate ("all" = every row).
        #[arg(long, default_value = "val")]
        split: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Folder for report.json, report.md and confusion_matrix.png.
        #[arg(long, default_value = "out/eval")]
        report: PathBuf,
    },
    /// Latency, throughput, load time and peak RSS of one or more bundles and engines, side by
    /// side in one run (each row's p50 also as a ratio to the fastest engine on that bundle).
    Bench {
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
    },
    /// Run the appliance: source -> classify -> screen (+ web UI), until SIGINT/SIGTERM.
    Run {
        /// Config file (TOML) [default: /etc/dermcam/config.toml; with --board, used when it
        /// exists]. A file named here must exist.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Board preset (boards/<name>.toml) merged under the config file.
        #[arg(long)]
        board: Option<String>,
    },
    /// The full pipeline on the bundled sample images as a virtual camera: screen rendered to
    /// out/screen.png, predictions printed, web UI on 127.0.0.1:8080.
    Demo {
        /// One pass over the samples, then exit.
        #[arg(long)]
        once: bool,
        /// Slideshow interval.
        #[arg(long, default_value_t = 1500)]
        interval_ms: u64,
        /// Where the screen PNG goes.
        #[arg(long, default_value = "out/screen.png")]
        screen: PathBuf,
        /// Web UI address ("off" to disable).
        #[arg(long, default_value = "127.0.0.1:8080")]
        web: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Images to show (file, folder or glob). Default: the bundled samples.
        #[arg(long)]
        images: Option<String>,
    },
    /// Validate a config (and board preset) without touching hardware.
    CheckConfig {
        config: Option<PathBuf>,
        #[arg(long)]
        board: Option<String>,
    },
    /// List board presets.
    Boards,
    /// List installed model bundles.
    Models {
        /// Folder holding bundles.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Signed model updates, clinic side: keys, update archives, announcements.
    #[cfg(feature = "fleet")]
    #[command(subcommand)]
    Bundle(BundleCmd),
}

pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<BundleError>() {
            return 3;
        }
        if cause.is::<dermcam::config::ConfigError>() {
            return 6;
        }
        #[cfg(feature = "offline")]
        if cause.is::<dermcam::offline::dataset::DatasetError>()
            || cause.is::<dermcam::offline::eval::EvalError>()
        {
            return 5;
        }
    }
    1
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Classify {
            inputs,
            model,
            top_k,
            json,
            tta,
            no_gates,
        } => classify(&inputs, &model, top_k, json, tta, !no_gates),
        #[cfg(feature = "offline")]
        Cmd::Eval {
            dataset,
            split,
            model,
            report,
        } => eval(&dataset, &split, &model, &report),
        Cmd::Bench {
            models,
            threads,
            iterations,
            backend,
            engine,
            json,
            pipeline_secs,
            pipeline_interval_ms,
            profile,
        } => bench(BenchArgs {
            models,
            threads,
            iterations,
            backends: backend,
            engine,
            json,
            pipeline_secs,
            pipeline_interval_ms,
            profile,
        }),
        Cmd::Models { dir } => list_models(dir),
        Cmd::Run { config, board } => run_appliance(config, board),
        Cmd::Demo {
            once,
            interval_ms,
            screen,
            web,
            model,
            images,
        } => demo(once, interval_ms, screen, web, &model, images),
        Cmd::CheckConfig { config, board } => check_config(config, board),
        #[cfg(feature = "fleet")]
        Cmd::Bundle(c) => bundle(c),
        Cmd::Boards => list_board_presets(),
    }
}

/// `dermcam run`: the config file over the board preset, then the appliance.
fn run_appliance(config: Option<PathBuf>, board: Option<String>) -> Result<ExitCode> {
    // Only the default file may be absent (a board preset alone is a whole config); a
    // file the user named is always read, so a typo is an error, not ignored.
    let default = PathBuf::from("/etc/dermcam/config.toml");
    let file = match &config {
        Some(named) => Some(named.as_path()),
        None if default.exists() || board.is_none() => Some(default.as_path()),
        None => None,
    };
    let cfg = dermcam::config::Config::load(file, board.as_deref())?;
    crate::app::run(
        cfg,
        crate::app::RunOptions {
            log: true,
            exit_when_source_ends: false,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `dermcam demo`: the appliance with images as the camera and a PNG as the screen.
fn demo(
    once: bool,
    interval_ms: u64,
    screen: PathBuf,
    web: String,
    model: &ModelArgs,
    images: Option<String>,
) -> Result<ExitCode> {
    let images = images.unwrap_or_else(|| dermcam::paths::samples_dir().display().to_string());
    log::info!("images: {images}; model: {}", model.dir().display());
    let mut cfg = dermcam::config::Config::default();
    cfg.source = dermcam::config::SourceConfig::Images(dermcam::config::ImagesSourceConfig {
        path: images,
        interval_ms,
        repeat: !once,
    });
    cfg.screen = dermcam::config::ScreenConfig::Png(dermcam::config::PngScreenConfig {
        path: screen,
        width: 800,
        height: 480,
    });
    cfg.model.path = Some(model.dir());
    cfg.model.threads = model.threads;
    cfg.model.backend = model.backend;
    cfg.model.ort = model.options().ort;
    cfg.button.stdin = !once;
    cfg.web.enabled = web != "off";
    if cfg.web.enabled {
        cfg.web.bind = web;
    }
    // The same validation as every other command: `--web 0.0.0.0:…` without a token
    // is refused here exactly as in a config file.
    cfg.validate(Path::new("dermcam demo (command line)"))?;
    println!("dermcam demo - {}", dermcam::DISCLAIMER);
    crate::app::run(
        cfg,
        crate::app::RunOptions {
            log: true,
            exit_when_source_ends: once,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `dermcam boards`: each preset with the first comment line of its file.
fn list_board_presets() -> Result<ExitCode> {
    let (dir, from) = dermcam::paths::resolve(dermcam::paths::Kind::Boards);
    log::info!("presets in {} ({from})", dir.display());
    for (name, path) in dermcam::config::list_boards() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let summary = text
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or("");
        println!("{name:<24} {summary}");
    }
    Ok(ExitCode::SUCCESS)
}
