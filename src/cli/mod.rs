//! Command-line interface (clap). Exit codes: 0 ok; 1 other error; 2 usage; 3 model bundle
//! invalid; 4 some inputs failed (classify); 5 dataset invalid; 6 config invalid.
//!
//! Each command's file owns its arguments (`Args`) and its `run`; this file only parses the
//! command line and dispatches. `args` holds the argument groups several commands share.

mod args;
mod bench;
mod boards;
#[cfg(feature = "fleet")]
mod bundle;
mod check;
mod classify;
mod demo;
#[cfg(feature = "offline")]
mod eval;
pub mod logging;
mod models;
mod print;
mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};
use dermcam::model::manifest::BundleError;
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

#[derive(Subcommand)]
enum Cmd {
    /// Classify images or folders of images.
    Classify(classify::Args),
    /// Evaluate a bundle on a labelled dataset (manifest.csv or class folders).
    #[cfg(feature = "offline")]
    Eval(eval::Args),
    /// Latency, throughput, load time and peak RSS of one or more bundles and engines, side by
    /// side in one run (each row's p50 also as a ratio to the fastest engine on that bundle).
    Bench(bench::Args),
    /// Run the appliance: source -> classify -> screen (+ web UI), until SIGINT/SIGTERM.
    Run(run::Args),
    /// The full pipeline on the bundled sample images as a virtual camera: screen rendered to
    /// out/screen.png, predictions printed, web UI on 127.0.0.1:8080.
    Demo(demo::Args),
    /// Validate a config (and board preset) without touching hardware.
    CheckConfig(check::Args),
    /// List board presets.
    Boards(boards::Args),
    /// List installed model bundles.
    Models(models::Args),
    /// Signed model updates, clinic side: keys, update archives, announcements.
    #[cfg(feature = "fleet")]
    #[command(subcommand)]
    Bundle(bundle::BundleCmd),
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
    match Cli::parse().cmd {
        Cmd::Classify(a) => classify::run(a),
        #[cfg(feature = "offline")]
        Cmd::Eval(a) => eval::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::CheckConfig(a) => check::run(a),
        Cmd::Boards(a) => boards::run(a),
        Cmd::Models(a) => models::run(a),
        #[cfg(feature = "fleet")]
        Cmd::Bundle(c) => bundle::run(c),
    }
}
