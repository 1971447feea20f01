//! The appliance run loop shared by `dermcam run` and `dermcam demo`: builds source, screen,
//! sinks and the web server from a config, handles signals, the stdin/GPIO/HTTP button.

use anyhow::{Context, Result, bail};
use dermcam::config::{Config, ScreenConfig};
use dermcam::model::{LoadOptions, Model};
use dermcam::pipeline::{Pipeline, Sink};
use dermcam::screen::ScreenError;
use dermcam::sinks::log::LogSink;
use std::sync::Arc;
use std::time::Duration;

pub struct RunOptions {
    /// Print one line per classified frame.
    pub log: bool,
    /// Stop when the source ends (demo --once) instead of serving until a signal.
    pub exit_when_source_ends: bool,
}

pub fn load_model(cfg: &Config) -> Result<Arc<Model>> {
    load_model_threads(cfg, &cfg.model.dir(), cfg.model.threads)
}

/// The bundle to start with: the configured one, or (fleet model updates on) the fleet's
/// active one with automatic rollback; a report for the fleet status after a rollback.
fn load_startup_model(cfg: &Config) -> Result<(Arc<Model>, Option<serde_json::Value>)> {
    #[cfg(feature = "fleet")]
    if cfg.fleet.enabled() {
        return dermcam::device::update::load_at_startup(
            Some(&cfg.fleet.updates),
            &cfg.model.dir(),
            &|dir| load_model_threads(cfg, dir, cfg.model.threads),
        );
    }
    Ok((load_model(cfg)?, None))
}

fn load_model_threads(cfg: &Config, dir: &std::path::Path, threads: usize) -> Result<Arc<Model>> {
    let m = Model::load(
        dir,
        &LoadOptions {
            backend: cfg.model.backend,
            threads,
            ort: cfg.model.ort.clone(),
        },
    )
    .with_context(|| format!("loading model bundle {}", dir.display()))?;
    log::info!(
        "model: {} ({}, {}) loaded in {:.0} ms",
        m.manifest.name,
        m.manifest.precision.as_str(),
        m.manifest.architecture,
        m.load_time.as_secs_f64() * 1e3
    );
    log::info!("engine: {}", m.engine.summary());
    Ok(Arc::new(m))
}

/// The composition root, in the order the device comes up: check → load → open source and
/// screen → build sinks → start the pipeline → start web, fleet, buttons → wait → shut down.
pub fn run(cfg: Config, opts: RunOptions) -> Result<()> {
    check_startup(&cfg)?;
    #[allow(unused_variables)]
    let (model, rollback) = load_startup_model(&cfg)?;
    let source = dermcam::source::open(&cfg.source)?;
    let screen = open_screen(&cfg)?;
    let (sinks, fleet) = build_sinks(&cfg, &opts)?;
    let pipeline = Pipeline::start(model.clone(), source, screen, sinks, cfg.pipeline.clone());
    let shared = pipeline.shared.clone();
    let switch = Arc::new(AppSwitch {
        cfg: cfg.clone(),
        shared: shared.clone(),
        web: std::sync::Mutex::new(None),
    });
    let notifier = dermcam::device::systemd::spawn(
        shared.clone(),
        Duration::from_millis(cfg.pipeline.stall_timeout_ms),
    );
    let rt = runtime(&cfg)?;
    let fleet_thread = rt.block_on(async {
        #[cfg(feature = "web")]
        start_web(&cfg, &model, &shared, &switch, &fleet).await?;
        let fleet_thread = start_fleet(fleet, rollback, &shared, &switch)?;
        start_buttons(&cfg, &shared)?;
        wait_for_shutdown(&opts, &shared).await?;
        anyhow::Ok(fleet_thread)
    })?;
    shared.request_shutdown();
    pipeline.join();
    // After the pipeline: every result it made is in the fleet's hands.
    stop_fleet(fleet_thread);
    if let Some(n) = notifier {
        let _ = n.join();
    }
    log_counters(&shared);
    Ok(())
}

fn check_startup(cfg: &Config) -> Result<()> {
    // Callers validate with their own file name; this catches any path that forgot to.
    cfg.validate(std::path::Path::new("<configuration>"))?;
    for m in cfg.missing_features() {
        log::warn!("{m}");
    }
    if let (true, Some(dir)) = (cfg.web.enabled, &cfg.web.save_uploads) {
        dermcam::storage::check_dir(dir).context("web.save_uploads")?;
    }
    Ok(())
}

fn open_screen(cfg: &Config) -> Result<Box<dyn dermcam::screen::Screen>> {
    let screen = match dermcam::screen::open(&cfg.screen) {
        Err(ScreenError::NotBuilt(_)) => bail!("{}", cfg.missing_features().join("; ")),
        r => r?,
    };
    if let ScreenConfig::Png(png) = &cfg.screen {
        log::info!("screen: rendering to {}", png.path.display());
    }
    Ok(screen)
}

/// The fleet link's runner (started once the web server can show its stats), when the build
/// has one.
#[cfg(feature = "fleet")]
type FleetPart = Option<dermcam::fleet::FleetRunner>;
#[cfg(not(feature = "fleet"))]
type FleetPart = ();
#[cfg(feature = "fleet")]
type FleetThread = Option<dermcam::fleet::FleetHandle>;
#[cfg(not(feature = "fleet"))]
type FleetThread = ();

fn build_sinks(cfg: &Config, opts: &RunOptions) -> Result<(Vec<Box<dyn Sink>>, FleetPart)> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if opts.log {
        sinks.push(Box::new(LogSink));
    }
    if cfg.capture.enabled {
        dermcam::storage::check_dir(&cfg.capture.dir).context("capture.dir")?;
        log::info!(
            "captures: saving frozen frames to {} (max {} captures, {} MB)",
            cfg.capture.dir.display(),
            cfg.capture.max_files,
            cfg.capture.max_bytes >> 20
        );
        sinks.push(Box::new(
            dermcam::sinks::capture::CaptureSink::new(
                cfg.capture.dir.clone(),
                cfg.capture.max_files,
            )
            .with_max_bytes(cfg.capture.max_bytes),
        ));
    }
    #[cfg(feature = "fleet")]
    let fleet = if cfg.fleet.enabled() {
        let (sink, runner) = dermcam::fleet::open(&cfg.fleet);
        sinks.push(Box::new(sink));
        Some(runner)
    } else {
        None
    };
    #[cfg(not(feature = "fleet"))]
    let fleet = ();
    Ok((sinks, fleet))
}

/// The web server's threads (request handling and upload classification) run at a lower
/// priority than the pipeline's, so a burst of uploads cannot starve the live screen.
fn runtime(cfg: &Config) -> Result<tokio::runtime::Runtime> {
    let nice = if cfg.web.enabled { cfg.web.nice } else { 0 };
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking work (upload classification, frame encoding, stdin) is bounded by its own
        // semaphores; this caps the pool whatever happens.
        .max_blocking_threads(16)
        .on_thread_start(move || lower_thread_priority(nice))
        .enable_all()
        .build()?)
}

#[cfg(feature = "web")]
async fn start_web(
    cfg: &Config,
    model: &Arc<Model>,
    shared: &Arc<dermcam::pipeline::Shared>,
    switch: &AppSwitch,
    #[allow(unused_variables)] fleet: &FleetPart,
) -> Result<()> {
    if !cfg.web.enabled {
        return Ok(());
    }
    // One thread budget (`model.threads`) for the process, never a second pool: uploads
    // either run single-threaded on their own (niced) web thread, with their own model
    // instance, or share the live model and its pool.
    let separate = cfg.web.inference_threads == 1 && cfg.model.threads != 1;
    let web_model = if separate {
        load_model_threads(cfg, &model.dir, 1)?
    } else {
        if cfg.web.inference_threads != cfg.model.threads {
            log::info!(
                "web: web.inference_threads = {}: uploads share the live model and its {} inference threads (one thread budget per process)",
                cfg.web.inference_threads,
                dermcam::model::backend::tract::resolve_threads(cfg.model.threads)
            );
        }
        model.clone()
    };
    let state = dermcam::web::AppState::new(
        web_model,
        Some(shared.clone()),
        cfg.web.clone(),
        cfg.pipeline.clone(),
    );
    let listener = tokio::net::TcpListener::bind(&cfg.web.bind)
        .await
        .with_context(|| format!("web.bind {}", cfg.web.bind))?;
    log::info!(
        "web: http://{}/ {}",
        listener.local_addr()?,
        if cfg.web.token.is_some() {
            "(token required)"
        } else {
            ""
        }
    );
    *switch.web.lock().unwrap_or_else(|e| e.into_inner()) = Some((state.model.clone(), separate));
    #[cfg(feature = "fleet")]
    if let Some(r) = fleet {
        let _ = state.fleet.set(r.stats());
    }
    let app = dermcam::web::router(state);
    let web_cfg = cfg.web.clone();
    tokio::spawn(async move {
        if let Err(e) = dermcam::web::serve(listener, app, &web_cfg).await {
            log::error!("web server: {e}");
        }
    });
    Ok(())
}

#[cfg(feature = "fleet")]
fn start_fleet(
    fleet: FleetPart,
    rollback: Option<serde_json::Value>,
    shared: &Arc<dermcam::pipeline::Shared>,
    switch: &Arc<AppSwitch>,
) -> Result<FleetThread> {
    let Some(r) = fleet else { return Ok(None) };
    let report = Arc::new(dermcam::fleet::UpdateReport::default());
    if let Some(v) = rollback {
        report.set(v);
    }
    Ok(Some(
        r.spawn(shared.clone(), switch.clone(), report)
            .context("fleet")?,
    ))
}

#[cfg(not(feature = "fleet"))]
fn start_fleet(
    _: FleetPart,
    _: Option<serde_json::Value>,
    _: &Arc<dermcam::pipeline::Shared>,
    _: &Arc<AppSwitch>,
) -> Result<FleetThread> {
    Ok(())
}

fn stop_fleet(#[allow(unused_variables)] t: FleetThread) {
    #[cfg(feature = "fleet")]
    if let Some(t) = t {
        t.stop_and_join();
    }
}

/// Point-and-classify buttons: Enter on stdin, a GPIO line.
fn start_buttons(cfg: &Config, shared: &Arc<dermcam::pipeline::Shared>) -> Result<()> {
    if cfg.button.stdin {
        let s = shared.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(_)) = lines.next_line().await {
                s.toggle_freeze();
            }
        });
    }
    #[cfg(feature = "gpio")]
    if let (Some(chip), Some(line)) = (&cfg.button.gpiochip, cfg.button.line) {
        dermcam::device::button::spawn(
            chip,
            line,
            cfg.button.active,
            cfg.button.bias,
            shared.clone(),
        )
        .context("button")?;
    }
    Ok(())
}

/// Until SIGINT or SIGTERM (or, for `demo --once`, the end of the source).
async fn wait_for_shutdown(
    opts: &RunOptions,
    shared: &Arc<dermcam::pipeline::Shared>,
) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: shutting down"); break; }
            _ = term.recv() => { log::info!("SIGTERM: shutting down"); break; }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if opts.exit_when_source_ends && shared.is_shutdown() { break; }
            }
        }
    }
    Ok(())
}

fn log_counters(shared: &dermcam::pipeline::Shared) {
    let c = shared.counters();
    log::info!(
        "frames {} inferences {} dropped {} quality-rejected {} errors {} screen-errors {}",
        c.frames,
        c.inferences,
        c.dropped_frames,
        c.quality_rejections,
        c.errors,
        c.screen_errors
    );
}

/// Puts a bundle into service: loads it with the configured engine, then swaps it into the
/// pipeline and the web server (the old one finishes what it is classifying).
#[cfg_attr(not(feature = "fleet"), allow(dead_code))]
struct AppSwitch {
    cfg: Config,
    shared: Arc<dermcam::pipeline::Shared>,
    /// The web server's model slot, and whether it holds its own single-thread instance.
    web: std::sync::Mutex<Option<(Arc<dermcam::model::ModelSlot>, bool)>>,
}

#[cfg(feature = "fleet")]
impl dermcam::device::update::ModelSwitch for AppSwitch {
    fn switch(&self, dir: &std::path::Path) -> Result<(), dermcam::device::update::SwitchError> {
        let err = |e: anyhow::Error| dermcam::device::update::SwitchError(e.into());
        let live = load_model_threads(&self.cfg, dir, self.cfg.model.threads).map_err(err)?;
        let web = self.web.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let web = match web {
            Some((slot, true)) => Some((slot, load_model_threads(&self.cfg, dir, 1).map_err(err)?)),
            Some((slot, false)) => Some((slot, live.clone())),
            None => None,
        };
        self.shared.set_model(live);
        if let Some((slot, m)) = web {
            slot.set(m);
        }
        Ok(())
    }
}

/// Raise the calling thread's niceness (Linux: per thread).
fn lower_thread_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    // SAFETY: plain syscalls on the calling thread's own id.
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            nice as libc::c_int,
        )
    };
    if rc != 0 {
        log::warn!(
            "web threads keep normal priority: setpriority: {}",
            std::io::Error::last_os_error()
        );
    }
}
