//! Thin entry point: parse, run, print the whole error chain, map it to an exit code.

mod app;
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Child mode of `dermcam::model::probe_ort_library`: load ONNX Runtime in a throw-away
    // process first, so a library that crashes while loading cannot take the appliance down.
    if let Some(lib) = std::env::var_os(dermcam::model::PROBE_ENV) {
        std::process::exit(dermcam::model::probe_child(std::path::Path::new(&lib)));
    }
    cli::logging::init();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(cli::exit_code_for(&e))
        }
    }
}
