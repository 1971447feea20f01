//! `dermcam check`: validate a configuration and board preset.

#[allow(unused_imports)]
use super::*;

pub(super) fn check_config(config: Option<PathBuf>, board: Option<String>) -> Result<ExitCode> {
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
