//! Command-line interface (clap). Exit codes: 0 ok; 1 other error; 2 usage; 3 model bundle
//! invalid; 4 some inputs failed (classify); 5 dataset invalid; 6 config invalid.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dermcam::model::classifier::Prediction;
use dermcam::model::manifest::BundleError;
use dermcam::model::{BackendKind, LoadOptions, Model, OrtOptions, OrtProvider};
use dermcam::model::preprocess::{DEFAULT_MAX_PIXELS, load_image};
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
        eprintln!("engine: {}", m.engine.summary());
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
    },
    /// Evaluate a bundle on a labelled dataset (manifest.csv or class folders).
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
        /// Config file (TOML).
        #[arg(long, default_value = "/etc/dermcam/config.toml")]
        config: PathBuf,
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
}

fn check_config(config: Option<PathBuf>, board: Option<String>) -> Result<ExitCode> {
    let cfg = dermcam::config::Config::load(config.as_deref(), board.as_deref())?;
    let missing = cfg.missing_features();
    let what = match (&config, &board) {
        (Some(c), Some(b)) => format!("{} over board {b}", c.display()),
        (Some(c), None) => c.display().to_string(),
        (None, Some(b)) => format!("board {b}"),
        (None, None) => "defaults".into(),
    };
    if let Err(e) = dermcam::model::manifest::read_manifest(&cfg.model.dir()) {
        println!("{what}: model: {e}");
        return Ok(ExitCode::from(6));
    }
    for m in &missing {
        println!("{what}: {m}");
    }
    if cfg.model.backend == BackendKind::Auto {
        match dermcam::model::auto_ort_library(&cfg.model.ort) {
            (Some(lib), _) => println!(
                "{what}: model.backend = \"auto\": ONNX Runtime from {} if it loads, else tract",
                lib.display()
            ),
            (None, why) => println!("{what}: model.backend = \"auto\": {why}"),
        }
    }
    println!(
        "{what}: OK{}",
        if missing.is_empty() {
            ""
        } else {
            " (but see above: features missing in this build)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn exit_code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<BundleError>() {
            return 3;
        }
        if cause.is::<dermcam::config::ConfigError>() {
            return 6;
        }
        if cause.is::<dermcam::offline::dataset::DatasetError>() || cause.is::<dermcam::offline::eval::EvalError>() {
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
        } => classify(&inputs, &model, top_k, json, tta),
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
        Cmd::Run { config, board } => {
            let file = if config.exists() || board.is_none() {
                Some(config.as_path())
            } else {
                None
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
        Cmd::Demo {
            once,
            interval_ms,
            screen,
            web,
            model,
            images,
        } => {
            let images =
                images.unwrap_or_else(|| dermcam::paths::samples_dir().display().to_string());
            eprintln!("images: {images}; model: {}", model.dir().display());
            let mut cfg = dermcam::config::Config::default();
            cfg.source = dermcam::config::SourceConfig::Images {
                path: images,
                interval_ms,
                repeat: !once,
            };
            cfg.screen = dermcam::config::ScreenConfig::Png {
                path: screen,
                width: 800,
                height: 480,
            };
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
        Cmd::CheckConfig { config, board } => check_config(config, board),
        Cmd::Boards => {
            let (dir, from) = dermcam::paths::resolve(dermcam::paths::Kind::Boards);
            eprintln!("presets in {} ({from})", dir.display());
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
    }
}

/// Expand folders into their image files (sorted, recursive); files are kept as given so a
/// non-image file named on the command line gets its own error line.
fn expand_inputs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for i in inputs {
        if i.is_dir() {
            walk(i, &mut out)
        } else {
            out.push(i.clone())
        }
    }
    out
}

fn bar(p: f32, width: usize) -> String {
    let n = (p * width as f32).round() as usize;
    format!(
        "{}{}",
        "#".repeat(n.min(width)),
        ".".repeat(width - n.min(width))
    )
}

fn print_table(path: &Path, p: &Prediction, model: &Model, top_k: usize) {
    let m = &model.manifest;
    let (top, prob) = p.top1();
    if p.uncertain {
        println!(
            "{}: uncertain (best guess {} {:.1}% < {:.0}% threshold)",
            path.display(),
            m.classes[top].name,
            prob * 100.0,
            m.abstain_threshold * 100.0
        );
    } else {
        println!(
            "{}: {} {:.1}%",
            path.display(),
            m.classes[top].name,
            prob * 100.0
        );
    }
    for s in p.top_k(top_k, m) {
        println!(
            "  {:<32} {:>6.1}%  {}",
            s.name,
            s.probability * 100.0,
            bar(s.probability, 20)
        );
    }
    println!(
        "  {:<32} {:>6.1}%  {}",
        "refer (malignant probability)",
        p.malignant_probability * 100.0,
        if p.refer {
            format!("REFER: see a clinician (>= {:.1}%)", m.refer_threshold() * 100.0)
        } else {
            format!("no referral flag (< {:.1}%)", m.refer_threshold() * 100.0)
        }
    );
}

fn classify(
    inputs: &[PathBuf],
    args: &ModelArgs,
    top_k: usize,
    json: bool,
    tta: bool,
) -> Result<ExitCode> {
    let model = args.load()?;
    let files = expand_inputs(inputs);
    if files.is_empty() {
        anyhow::bail!("no images found in {:?}", inputs);
    }
    let mut failed = 0;
    if !json {
        println!(
            "model {} ({:?}); {}",
            model.manifest.name,
            model.manifest.precision,
            dermcam::DISCLAIMER
        );
    }
    for f in &files {
        match load_image(f, DEFAULT_MAX_PIXELS)
            .map_err(anyhow::Error::from)
            .and_then(|img| Ok(model.classify(&img, tta)?))
        {
            Ok((p, t)) => {
                if json {
                    let v = serde_json::json!({
                        "path": f, "uncertain": p.uncertain, "headline": p.headline(&model.manifest),
                        "refer": p.refer, "malignant_probability": p.malignant_probability,
                        "top": p.top_k(top_k, &model.manifest), "model": model.manifest.name, "timings": t,
                    });
                    println!("{v}");
                } else {
                    print_table(f, &p, &model, top_k);
                }
            }
            Err(e) => {
                failed += 1;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"path": f, "error": format!("{e:#}")})
                    );
                } else {
                    eprintln!("error: {e:#}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} inputs failed", files.len());
        return Ok(ExitCode::from(4));
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(datasets: &[PathBuf], split: &str, args: &ModelArgs, report_dir: &Path) -> Result<ExitCode> {
    let model = args.load()?;
    let samples = dermcam::offline::dataset::read_datasets(datasets)?;
    let leaky = dermcam::offline::dataset::leaky(&samples);
    let chosen = dermcam::offline::eval::select(&samples, split, &model)?;
    let names = datasets
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    eprintln!(
        "evaluating {} on {} images of {names} split {split}",
        model.manifest.name,
        chosen.len(),
    );
    let report = dermcam::offline::eval::evaluate(&model, &chosen, &leaky, &names, split, true);
    report.write(report_dir)?;
    let s = &report.summary;
    println!(
        "{}: n={} accuracy {:.4}  balanced accuracy {:.4}  macro F1 {:.4}  macro AUC {:.4}  ECE {:.4}  melanoma recall {}  abstain {:.3}",
        report.model,
        s.n,
        s.accuracy,
        s.balanced_accuracy,
        s.macro_f1,
        s.macro_auc_ovr,
        s.ece_15,
        report
            .melanoma_recall
            .map_or("n/a".into(), |r| format!("{r:.4}")),
        s.abstain_rate
    );
    if let Some(c) = &report.lesion_clean {
        println!(
            "lesion-clean (without {} images whose lesion is in train): n={} balanced accuracy {:.4}",
            report.lesion_leaky_images, c.n, c.balanced_accuracy
        );
    }
    let r = &report.refer;
    let f = |v: Option<f64>| v.map_or("n/a".into(), |x| format!("{x:.4}"));
    println!(
        "refer (threshold {:.4}): sensitivity {}  specificity {}  benign not flagged {}  AUC {}",
        r.threshold,
        f(r.sensitivity),
        f(r.specificity),
        f(r.benign_not_flagged),
        f(r.auc)
    );
    for (p, e) in &report.failed {
        eprintln!("error: {p}: {e}");
    }
    println!(
        "wrote {}/report.json, report.md, confusion_matrix.png, refer_roc.png",
        report_dir.display()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

struct BenchArgs {
    models: Vec<PathBuf>,
    threads: Vec<usize>,
    iterations: usize,
    backends: Vec<BackendKind>,
    engine: EngineArgs,
    json: bool,
    pipeline_secs: f64,
    pipeline_interval_ms: u64,
    profile: usize,
}

fn bench(a: BenchArgs) -> Result<ExitCode> {
    let models = if a.models.is_empty() {
        dermcam::model::find_bundles(&dermcam::paths::models_dir())
    } else {
        a.models.clone()
    };
    let threads = if a.threads.is_empty() { vec![0] } else { a.threads.clone() };
    let backends = if a.backends.is_empty() {
        vec![BackendKind::Auto]
    } else {
        a.backends.clone()
    };
    if !a.json {
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
    for m in &models {
        for &t in &threads {
            let mut rows = Vec::new();
            for &b in &backends {
                let opts = a.engine.options(b, t);
                let r = dermcam::offline::bench::bench_bundle(m, &opts, a.iterations)
                    .map_err(|e| anyhow::anyhow!("{} ({}): {e}", m.display(), b.name()))?;
                if !a.json {
                    eprintln!("{} {}: engine {}", r.bundle, b.name(), r.engine);
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
            }
        }
    }
    if a.profile > 0 {
        let first = models.first().context("no bundle to profile")?;
        let t = threads[0];
        let prof = dermcam::offline::bench::profile_tract(first, t, a.iterations)
            .map_err(|e| anyhow::anyhow!("{}: {e}", first.display()))?;
        let total: f64 = prof.iter().map(|p| p.2).sum();
        println!(
            "tract per-node profile of {} ({} threads, {} runs): {:.2} ms per run in nodes",
            first.display(),
            dermcam::model::backend::tract::resolve_threads(t),
            a.iterations.max(1),
            total / a.iterations.max(1) as f64
        );
        for (name, op, ms) in prof.iter().take(a.profile) {
            println!(
                "  {:>7.3} ms {:>5.1}%  {:<28} {}",
                ms / a.iterations.max(1) as f64,
                100.0 * ms / total,
                op,
                name
            );
        }
    }
    if a.pipeline_secs > 0.0 {
        let first = models.first().context("no bundle to benchmark")?;
        let opts = a.engine.options(backends[0], threads[0]);
        let r = dermcam::offline::bench::bench_pipeline(
            first,
            &opts,
            &dermcam::paths::samples_dir().display().to_string(),
            a.pipeline_secs,
            std::time::Duration::from_millis(a.pipeline_interval_ms),
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", first.display()))?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "pipeline {} on {} for {:.0} s, camera every {:.0} ms: {} frames, {} inferences, {} dropped",
                r.bundle, r.engine, r.seconds, r.camera_interval_ms, r.frames, r.inferences, r.dropped_frames
            );
            println!(
                "  capture->screen p50 {:.1} ms p99 {:.1} ms = {:.2}x inference p50 {:.1} ms",
                r.frame_to_screen.p50_ms,
                r.frame_to_screen.p99_ms,
                r.latency_ratio,
                r.inference_p50_ms
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
    }
    if !a.json {
        println!(
            "peak RSS of this process: {:.1} MB",
            dermcam::offline::bench::peak_rss_mb().unwrap_or(f64::NAN)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn list_models(dir: Option<PathBuf>) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => {
            let (d, from) = dermcam::paths::resolve(dermcam::paths::Kind::Models);
            eprintln!("bundles in {} ({from})", d.display());
            d
        }
    };
    let default = dermcam::paths::default_model_dir();
    println!(
        "{:<26} {:<18} {:>5} {:>8} {:>8} {:>8} {:>8}  default",
        "bundle", "architecture", "prec", "MB", "val acc", "val bacc", "mel rec"
    );
    for b in dermcam::model::find_bundles(&dir) {
        match dermcam::model::manifest::read_manifest(&b) {
            Ok(m) => {
                let size = std::fs::metadata(b.join("model.onnx"))
                    .map(|m| m.len() as f64 / 1e6)
                    .unwrap_or(f64::NAN);
                let f = |p: &str| m.metric(p).map_or("-".into(), |v| format!("{v:.4}"));
                let is_default = b.canonicalize().ok() == default.canonicalize().ok();
                println!(
                    "{:<26} {:<18} {:>5} {:>8.1} {:>8} {:>8} {:>8}  {}",
                    m.name,
                    m.architecture,
                    format!("{:?}", m.precision).to_lowercase(),
                    size,
                    f("/val/accuracy"),
                    f("/val/balanced_accuracy"),
                    f("/val/melanoma_recall"),
                    if is_default { "*" } else { "" }
                );
            }
            Err(e) => println!("{}: {e}", b.display()),
        }
    }
    Ok(ExitCode::SUCCESS)
}
