//! `dermcam check-config`: validate a configuration and board preset.

use anyhow::Result;
use dermcam::model::BackendKind;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(super) struct Args {
    config: Option<PathBuf>,
    #[arg(long)]
    board: Option<String>,
}

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let Args { config, board } = args;
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
    let f = &cfg.fleet;
    if let Some(broker) = &f.broker {
        let files = [
            ("fleet.ca_file", &f.ca_file),
            ("fleet.password_file", &f.password_file),
            ("fleet.client_cert", &f.client_cert),
            ("fleet.client_key", &f.client_key),
        ];
        for (field, path) in files {
            if let Some(p) = path {
                // Read as `run` will (regular file, size cap): a FIFO or /dev/zero fails here.
                let cap = dermcam::storage::MAX_CONFIG_FILE_BYTES;
                if let Err(e) = dermcam::storage::read_small_file(p, cap) {
                    println!("{what}: {field}: {}: {e}", p.display());
                    return Ok(ExitCode::from(6));
                }
            }
        }
        println!(
            "{what}: fleet: {broker} as {:?}, publishing {} results{}{}",
            f.resolved_device_id(),
            if f.publish == dermcam::config::FleetPublish::All {
                "all"
            } else {
                "frozen"
            },
            if f.include_image { " with images" } else { "" },
            if f.updates.public_key.is_some() {
                format!(
                    "; signed model updates into {}",
                    f.updates.models_dir.display()
                )
            } else {
                "; model updates off".into()
            }
        );
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
