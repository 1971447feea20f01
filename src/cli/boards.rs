//! `dermcam boards`: each preset with the first comment line of its file.

use anyhow::Result;
use std::process::ExitCode;

// No arguments; a struct so that every command is `Name(Args)`.
#[derive(clap::Args)]
pub(super) struct Args {}

pub(super) fn run(_: Args) -> Result<ExitCode> {
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
