//! `dermcam demo`: the appliance with images as the camera and a PNG as the screen.

use super::args::ModelArgs;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub(super) struct Args {
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
}

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let Args {
        once,
        interval_ms,
        screen,
        web,
        model,
        images,
    } = args;
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
