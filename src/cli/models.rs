//! `dermcam models`: list the bundles found.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Folder holding bundles.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let (d, from) = dermcam::paths::resolve(dermcam::paths::Kind::Models);
            log::info!("bundles in {} ({from})", d.display());
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
                    m.precision.as_str().to_string(),
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
