//! Appliance configuration (TOML). Every variant parses on every build; `check` reports a
//! backend whose cargo feature this binary lacks. Board presets (`boards/*.toml`) merge under
//! the user's file.

mod source;
pub use source::*;
mod screen;
pub use screen::*;
mod pipeline;
pub use pipeline::*;
mod button;
pub use button::*;
mod capture;
pub use capture::*;
mod web;
pub use web::*;
mod fleet;
pub use fleet::*;
mod boards;
pub use boards::*;
mod load;
pub use load::{FieldError, fail, range};

use crate::model::{BackendKind, OrtOptions};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown board {name:?}; known boards: {known}")]
    UnknownBoard { name: String, known: String },
    #[error("{path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
}

/// A configured driver or engine whose cargo feature this binary was built without: the one
/// wording `run`, `check-config` and the drivers' factories all use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} needs cargo feature `{feature}`: this dermcam was built without feature {feature}")]
pub struct NotBuilt {
    /// The setting that asks for it (`screen.kind = "tft"`).
    pub what: String,
    pub feature: &'static str,
}

impl NotBuilt {
    pub fn new(what: impl Into<String>, feature: &'static str) -> NotBuilt {
        NotBuilt {
            what: what.into(),
            feature,
        }
    }

    /// For the variant `<section>.kind = "<kind>"` whose driver needs `feature`.
    pub fn for_kind(section: &str, kind: &str, feature: &'static str) -> NotBuilt {
        NotBuilt::new(format!("{section}.kind = \"{kind}\""), feature)
    }

    /// `Err` when a variant's driver needs a cargo feature (name, built) this build lacks.
    pub fn check_kind(
        section: &str,
        kind: &str,
        feature: Option<(&'static str, bool)>,
    ) -> Result<(), NotBuilt> {
        match feature {
            Some((f, false)) => Err(NotBuilt::for_kind(section, kind, f)),
            _ => Ok(()),
        }
    }
}

/// Whether this binary has an optional cargo feature.
pub fn feature_built(feature: &str) -> bool {
    match feature {
        "camera" => cfg!(feature = "camera"),
        "fbdev" => cfg!(feature = "fbdev"),
        "tft" => cfg!(feature = "tft"),
        "gpio" => cfg!(feature = "gpio"),
        "ort" => cfg!(feature = "ort"),
        "fleet" => cfg!(feature = "fleet"),
        "web" => cfg!(feature = "web"),
        _ => false,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub source: SourceConfig,
    pub screen: ScreenConfig,
    pub pipeline: PipelineConfig,
    pub button: ButtonConfig,
    pub capture: CaptureConfig,
    pub web: WebConfig,
    pub fleet: FleetConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Bundle folder; empty = `bundle`, else the default bundle.
    pub path: Option<PathBuf>,
    /// A shipped bundle by name (e.g. "effl2-v2"), looked up where the package installs them.
    pub bundle: Option<String>,
    pub backend: BackendKind,
    /// Inference threads, 0 = all cores.
    pub threads: usize,
    /// ONNX Runtime settings for `backend = "ort"`.
    pub ort: OrtOptions,
}

impl ModelConfig {
    /// The bundle folder this config selects.
    pub fn dir(&self) -> PathBuf {
        match (&self.path, &self.bundle) {
            (Some(p), _) => p.clone(),
            (None, Some(name)) => crate::paths::shipped_bundle_dir(name),
            (None, None) => crate::paths::default_model_dir(),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            path: None,
            bundle: None,
            backend: BackendKind::Auto,
            threads: 0,
            ort: OrtOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Reliability IV, row 10: a NUL in any string is refused by name; a config "file" that is
    /// a special file or too large is refused without reading it.
    #[test]
    fn nul_strings_and_special_config_files_are_refused() {
        let e = Config::parse("[capture]\ndir = \"/tmp/a\\u0000b\"\n", Path::new("c.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("capture.dir: contains a NUL"), "{e}");
        for special in ["/dev/zero", "/dev/null"] {
            let t = std::time::Instant::now();
            let e = Config::load(Some(Path::new(special)), None).unwrap_err();
            let why = std::error::Error::source(&e).map(|s| s.to_string());
            assert!(why.as_deref() == Some("not a regular file"), "{e}: {why:?}");
            assert!(t.elapsed() < std::time::Duration::from_secs(2));
        }
    }

    #[test]
    fn defaults_and_variants_parse() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(matches!(
            c.source,
            SourceConfig::Camera(CameraSourceConfig {
                width: 640,
                height: 480,
                ..
            })
        ));
        let c = Config::parse(
            "[source]\nkind = \"images\"\npath = \"x/*.jpg\"\nloop = false\n[screen]\nkind = \"tft\"\ndriver = \"st7789\"\ndc_pin = 25\nwidth = 240\nheight = 240\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(matches!(
            c.source,
            SourceConfig::Images(ImagesSourceConfig { repeat: false, .. })
        ));
        assert!(matches!(
            c.screen,
            ScreenConfig::Tft(TftScreenConfig {
                driver: TftDriver::St7789,
                ..
            })
        ));
    }

    /// Every `kind` parses to the variant whose spec names that kind, and a driver this build
    /// lacks is reported in the one wording (what a new driver's three edits must keep true).
    #[test]
    fn every_kind_names_its_own_spec() {
        let screens = [
            ("png", ""),
            ("fbdev", ""),
            ("none", ""),
            (
                "tft",
                "driver = \"st7789\"\ndc_pin = 25\nwidth = 240\nheight = 240\n",
            ),
        ];
        for (kind, extra) in screens {
            let text = format!("[screen]\nkind = \"{kind}\"\n{extra}");
            let c = Config::parse(&text, Path::new("c.toml")).unwrap();
            assert_eq!(c.screen.spec().kind(), kind);
            match c.screen.spec().feature() {
                Some((f, false)) => assert_eq!(
                    c.screen.built().unwrap_err().to_string(),
                    format!(
                        "screen.kind = \"{kind}\" needs cargo feature `{f}`: this dermcam was built without feature {f}"
                    )
                ),
                _ => assert!(c.screen.built().is_ok()),
            }
        }
        for (kind, extra) in [
            ("camera", ""),
            ("images", "path = \"x\"\n"),
            ("synthetic", ""),
        ] {
            let text = format!("[source]\nkind = \"{kind}\"\n{extra}");
            let c = Config::parse(&text, Path::new("c.toml")).unwrap();
            assert_eq!(c.source.spec().kind(), kind);
            assert_eq!(
                c.source.built().is_ok(),
                c.source.spec().feature().is_none_or(|(_, built)| built)
            );
        }
    }

    #[test]
    fn bad_lines_name_file_and_field() {
        let e = Config::parse(
            "[pipeline]\nema = 0.3\n",
            Path::new("/etc/dermcam/config.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/etc/dermcam/config.toml") && e.contains("unknown field `ema`"),
            "{e}"
        );
        let e = Config::parse("[web]\nbind = \"0.0.0.0:8080\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("web.token"), "{e}");
        let e = Config::parse("[source]\nkind = \"webcam\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("webcam"), "{e}");
        let e = Config::parse("[pipeline]\nema_alpha = 0\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline.ema_alpha"), "{e}");
    }

    #[test]
    fn user_file_overrides_board() {
        let mut base: toml::Table = "[screen]\nkind = \"tft\"\ndriver = \"st7789\"\ndc_pin = 25\nwidth = 240\nheight = 240\n[pipeline]\nmin_luma = 20.0\n".parse().unwrap();
        merge(
            &mut base,
            "[screen]\nrotation = 90\n[pipeline]\nmax_luma = 200.0\n"
                .parse()
                .unwrap(),
        );
        let c = Config::from_table(base, Path::new("m")).unwrap();
        assert!(matches!(
            c.screen,
            ScreenConfig::Tft(TftScreenConfig {
                rotation: 90,
                dc_pin: 25,
                ..
            })
        ));
        assert_eq!((c.pipeline.min_luma, c.pipeline.max_luma), (20.0, 200.0));
    }

    #[test]
    fn file_names_its_board_and_cli_board_wins() {
        let dir = std::env::temp_dir().join(format!("dermcam-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.toml");
        std::fs::write(&f, "board = \"rpi4-st7789\"\n[screen]\nrotation = 180\n").unwrap();
        let c = Config::load(Some(&f), None).unwrap();
        assert!(matches!(
            c.screen,
            ScreenConfig::Tft(TftScreenConfig {
                rotation: 180,
                dc_pin: 25,
                ..
            })
        ));
        assert_eq!(c.model.bundle.as_deref(), Some("effl0-v2"));
        std::fs::write(&f, "board = \"rpi4-st7789\"\n[pipeline]\nmin_luma = 20.0\n").unwrap();
        let c = Config::load(Some(&f), Some("rpi5-hdmi")).unwrap();
        assert!(matches!(c.screen, ScreenConfig::Fbdev(_)), "--board wins");
        assert_eq!(c.pipeline.min_luma, 20.0);
        std::fs::write(&f, "board = \"rpi9\"\n").unwrap();
        let e = Config::load(Some(&f), None).unwrap_err().to_string();
        assert!(e.contains("rpi9") && e.contains("rpi5-hdmi"), "{e}");
        std::fs::write(&f, "board = 4\n").unwrap();
        let e = Config::load(Some(&f), None).unwrap_err().to_string();
        assert!(e.contains("config.toml") && e.contains("board"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn model_bundle_and_ort_settings_are_validated() {
        let p = Path::new("c.toml");
        let c = Config::parse("[model]\nbundle = \"resnet18-v2\"\n", p).unwrap();
        assert!(c.model.dir().ends_with("resnet18-v2"));
        let e = Config::parse("[model]\nbundle = \"x\"\npath = \"/m\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("either path or bundle"), "{e}");
        let e = Config::parse("[model]\nbundle = \"../etc\"\n", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("model.bundle"), "{e}");
        let c = Config::parse(
            "[model]\nbackend = \"ort\"\n[model.ort]\nproviders = [\"tensorrt\", \"cuda\"]\ntrt_fp16 = true\n",
            p,
        )
        .unwrap();
        assert_eq!(c.model.ort.providers.len(), 2);
        for (bad, what) in [
            ("providers = []", "at least one"),
            ("providers = [\"cpu\", \"cpu\"]", "twice"),
            ("providers = [\"cuda\"]\ntrt_int8 = true", "tensorrt"),
            ("providers = [\"opencl\"]", "opencl"),
        ] {
            let e = Config::parse(&format!("[model.ort]\n{bad}\n"), p)
                .unwrap_err()
                .to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[test]
    fn stall_timeout_has_a_floor() {
        let e = Config::parse("[pipeline]\nstall_timeout_ms = 10\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("stall_timeout_ms"), "{e}");
    }
}
