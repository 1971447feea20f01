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
    init_logging();
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

/// Diagnostics on stderr through `log` (level from `RUST_LOG`, default info): plain lines for
/// info, `warning:` / `error:` prefixes otherwise; env_logger colours only a terminal.
fn init_logging() {
    use std::io::Write;
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rumqttc=warn,ureq=warn,rustls=warn"),
    )
    .format(|buf, r| match r.level() {
        log::Level::Info => writeln!(buf, "{}", r.args()),
        log::Level::Warn => writeln!(buf, "warning: {}", r.args()),
        l => writeln!(buf, "{}: {}", l.as_str().to_lowercase(), r.args()),
    })
    .init();
}
