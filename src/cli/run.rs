//! `dermcam run`: the config file over the board preset, then the appliance.

use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Config file (TOML) [default: /etc/dermcam/config.toml; with --board, used when it
    /// exists]. A file named here must exist.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Board preset (boards/<name>.toml) merged under the config file.
    #[arg(long)]
    board: Option<String>,
}

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let Args { config, board } = args;
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
