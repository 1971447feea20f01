//! Appliance configuration (TOML). Every variant parses on every build; `check` reports a
//! backend whose cargo feature this binary lacks. Board presets (`boards/*.toml`) merge under
//! the user's file.

use crate::model::{BackendKind, OrtOptions};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// V4L2 camera (feature `camera`).
    Camera {
        #[serde(default = "default_device")]
        device: String,
        #[serde(default = "default_format")]
        format: PixelFormat,
        #[serde(default = "default_w")]
        width: u32,
        #[serde(default = "default_h")]
        height: u32,
        #[serde(default = "default_fps")]
        fps: u32,
    },
    /// A file, a folder or a glob of images shown as a slideshow (virtual camera).
    Images {
        path: String,
        #[serde(default = "default_interval")]
        interval_ms: u64,
        #[serde(default = "yes", rename = "loop")]
        repeat: bool,
    },
    /// A moving test pattern, for screen bring-up.
    Synthetic {
        #[serde(default = "default_w")]
        width: u32,
        #[serde(default = "default_h")]
        height: u32,
        #[serde(default = "default_fps")]
        fps: u32,
    },
}

fn default_device() -> String {
    "/dev/video0".into()
}
fn default_format() -> PixelFormat {
    PixelFormat::Mjpeg
}
fn default_w() -> u32 {
    640
}
fn default_h() -> u32 {
    480
}
fn default_fps() -> u32 {
    15
}
fn default_interval() -> u64 {
    1500
}
fn yes() -> bool {
    true
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Camera {
            device: default_device(),
            format: default_format(),
            width: 640,
            height: 480,
            fps: 15,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TftDriver {
    St7789,
    Ili9341,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScreenConfig {
    /// Headless: the screen is written to a PNG file (always built).
    Png {
        #[serde(default = "default_png")]
        path: PathBuf,
        #[serde(default = "default_screen_w")]
        width: u32,
        #[serde(default = "default_screen_h")]
        height: u32,
    },
    /// Linux framebuffer, 16 or 32 bpp (feature `fbdev`).
    Fbdev {
        #[serde(default = "default_fb")]
        device: PathBuf,
    },
    /// SPI TFT via mipidsi (feature `tft`).
    Tft {
        driver: TftDriver,
        #[serde(default = "default_spi")]
        spi: PathBuf,
        #[serde(default = "default_spi_hz")]
        spi_hz: u32,
        #[serde(default = "default_gpiochip")]
        gpiochip: PathBuf,
        dc_pin: u32,
        rst_pin: Option<u32>,
        backlight_pin: Option<u32>,
        width: u32,
        height: u32,
        #[serde(default)]
        rotation: u16,
        #[serde(default)]
        invert_colors: bool,
    },
    /// No screen (web-only kiosk).
    None,
}

fn default_png() -> PathBuf {
    "out/screen.png".into()
}
fn default_screen_w() -> u32 {
    800
}
fn default_screen_h() -> u32 {
    480
}
fn default_fb() -> PathBuf {
    "/dev/fb0".into()
}
fn default_spi() -> PathBuf {
    "/dev/spidev0.0".into()
}
fn default_spi_hz() -> u32 {
    40_000_000
}
fn default_gpiochip() -> PathBuf {
    "/dev/gpiochip0".into()
}

impl Default for ScreenConfig {
    fn default() -> Self {
        ScreenConfig::Png {
            path: default_png(),
            width: 800,
            height: 480,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Weight of the newest frame in the probability moving average (1 = no smoothing).
    pub ema_alpha: f32,
    /// Mean luma (0-255) below which the screen says "More light".
    pub min_luma: f32,
    /// Mean luma above which the screen says "Too bright".
    pub max_luma: f32,
    /// Variance of the Laplacian below which the screen says "Hold steady".
    pub min_sharpness: f32,
    /// Average the mirrored image when a frame is frozen with the button.
    pub freeze_tta: bool,
    /// A stage (capture, inference, display) that makes no progress for this long counts as
    /// hung: the systemd watchdog pings stop and systemd restarts the service. Must exceed the
    /// slowest inference and the camera's retry backoff.
    pub stall_timeout_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ema_alpha: 0.5,
            min_luma: 35.0,
            max_luma: 235.0,
            min_sharpness: 8.0,
            freeze_tta: true,
            stall_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ButtonConfig {
    /// GPIO chip and line of a push button (feature `gpio`); active low with pull-up.
    pub gpiochip: Option<PathBuf>,
    pub line: Option<u32>,
    /// Enter on stdin freezes / releases the frame.
    pub stdin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Save frozen frames + result JSON (off by default: privacy).
    pub enabled: bool,
    pub dir: PathBuf,
    /// Keep at most this many captures (oldest removed first).
    pub max_files: usize,
    /// And at most this many bytes of captures; 0 = no byte limit.
    pub max_bytes: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            enabled: false,
            dir: "/var/lib/dermcam/captures".into(),
            max_files: 500,
            max_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    pub enabled: bool,
    pub bind: String,
    /// Required when `bind` is not a loopback address; checked for strength and character set
    /// (`validate_token`).
    pub token: Option<String>,
    /// Host names (besides IP literals and `localhost`) the device answers to, e.g.
    /// `"dermcam.local"`. Requests with another `Host` are refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    pub max_upload_bytes: usize,
    pub max_pixels: u64,
    /// Classifications running at once.
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot before 503.
    pub queue: usize,
    /// Open HTTP connections at once; more wait in the kernel's accept queue. One client
    /// address gets at most a quarter of them (at least 4).
    pub max_connections: usize,
    /// A request's headers must arrive within this time; also the idle keep-alive limit.
    pub header_timeout_ms: u64,
    /// A request body must arrive completely within this time (408 otherwise; an upload's
    /// admission place is given back).
    pub body_timeout_ms: u64,
    /// After a body's first 2 s, it must have arrived at this average rate (bytes/s, 0 = off),
    /// else 408: a trickling upload cannot hold an admission place for the whole timeout.
    pub min_upload_rate: u64,
    /// Login session lifetime (the cookie holds a random session id, never the token).
    pub session_ttl_s: u64,
    /// Mark the session cookie `Secure` (only when served behind HTTPS).
    pub cookie_secure: bool,
    /// HTTP freeze/release requests: at most one per this many ms (429 otherwise), so a flood
    /// cannot push real captures out of retention.
    pub freeze_interval_ms: u64,
    pub save_uploads: Option<PathBuf>,
    /// Retention of saved uploads: count and bytes (0 = no byte limit), oldest removed first.
    pub save_max_files: usize,
    pub save_max_bytes: u64,
    /// Inference threads for uploads (their own model instance, so they never take the live
    /// pipeline's thread pool).
    pub inference_threads: usize,
    /// Scheduling niceness (0-19) of the web server's threads under `dermcam run`: the live
    /// screen keeps its frame rate however many uploads arrive. 0 = same priority.
    pub nice: i32,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            bind: "127.0.0.1:8080".into(),
            token: None,
            allowed_hosts: vec![],
            max_upload_bytes: 10 * 1024 * 1024,
            max_pixels: crate::model::preprocess::DEFAULT_MAX_PIXELS,
            max_concurrent: 2,
            queue: 8,
            max_connections: 64,
            header_timeout_ms: 5_000,
            body_timeout_ms: 30_000,
            min_upload_rate: 32 * 1024,
            session_ttl_s: 12 * 3600,
            cookie_secure: false,
            freeze_interval_ms: 1000,
            save_uploads: None,
            save_max_files: 500,
            save_max_bytes: 1 << 30,
            inference_threads: 1,
            nice: 10,
        }
    }
}

/// Why `token` is not acceptable as `web.token`, if it is not: at least 16 characters of the
/// bearer-token alphabet (RFC 6750: letters, digits, `-._~+/=`; no spaces, `;` or non-ASCII,
/// which would break the `Authorization` header), at least 10 distinct characters and about
/// 64 bits by a character-class estimate, and none of the placeholder words people copy from
/// examples. `openssl rand -hex 16` passes.
pub fn token_problem(token: &str) -> Option<String> {
    if token.len() < 16 {
        return Some(format!("is {} characters; at least 16 are needed", token.len()));
    }
    if let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~+/=".contains(*c)))
    {
        return Some(format!(
            "contains {c:?}; use only letters, digits and - . _ ~ + / = (e.g. `openssl rand -hex 16`)"
        ));
    }
    let mut distinct: Vec<char> = token.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    let classes: f64 = [
        (token.chars().any(|c| c.is_ascii_lowercase()), 26.0),
        (token.chars().any(|c| c.is_ascii_uppercase()), 26.0),
        (token.chars().any(|c| c.is_ascii_digit()), 10.0),
        (token.chars().any(|c| !c.is_ascii_alphanumeric()), 7.0),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n)
    .sum();
    let bits = token.len() as f64 * classes.log2();
    let lower = token.to_ascii_lowercase();
    let weak = ["secret", "password", "passw", "token", "change", "example", "random", "dermcam", "12345", "qwerty"]
        .into_iter()
        .find(|w| lower.contains(w));
    // Runs like "abcdef" or "123456": most neighbours one apart.
    let steps = token
        .as_bytes()
        .windows(2)
        .filter(|w| w[1] as i32 - w[0] as i32 == 1)
        .count();
    if distinct.len() < 10 || bits < 64.0 || weak.is_some() || steps * 2 >= token.len() {
        return Some(format!(
            "is too weak ({} distinct characters, ~{bits:.0} bits{}); generate one, e.g. `openssl rand -hex 16`",
            distinct.len(),
            weak.map(|w| format!(", contains {w:?}")).unwrap_or_default()
        ));
    }
    None
}

pub fn list_boards() -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(crate::paths::boards_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            (
                p.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string(),
                p,
            )
        })
        .collect();
    v.sort();
    v
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.into(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.into(),
        message: e.to_string(),
    })
}

/// `over` wins; tables merge recursively. A `kind` change replaces the whole table (a board's
/// TFT pins make no sense under a user's PNG screen).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o))
                if b.get("kind") == o.get("kind") || o.get("kind").is_none() =>
            {
                merge(b, o)
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Parse {
                path: path.into(),
                message: e.to_string(),
            })?;
        Self::from_table(table, path)
    }

    fn from_table(table: toml::Table, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.into(),
                message: e.to_string(),
            })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Load `file` (if any) over the preset `board` (if any). The file may name its preset
    /// itself with a top-level `board = "name"`; `--board` on the command line wins.
    pub fn load(file: Option<&Path>, board: Option<&str>) -> Result<Config, ConfigError> {
        let mut file_table = file.map(read_table).transpose()?;
        let file_board = match file_table.as_mut().and_then(|t| t.remove("board")) {
            None => None,
            Some(toml::Value::String(b)) => Some(b),
            Some(other) => {
                return Err(ConfigError::Invalid {
                    path: file.unwrap_or(Path::new("")).into(),
                    field: "board",
                    message: format!("expected a preset name (string), got {}", other.type_str()),
                });
            }
        };
        let board = board.map(str::to_string).or(file_board);
        let mut table = toml::Table::new();
        let mut origin = PathBuf::from("<defaults>");
        if let Some(name) = board.as_deref() {
            let boards = list_boards();
            let (_, p) = boards.iter().find(|(n, _)| n == name).ok_or_else(|| {
                ConfigError::UnknownBoard {
                    name: name.into(),
                    known: boards
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            table = read_table(p)?;
            origin = p.clone();
        }
        if let (Some(f), Some(t)) = (file, file_table) {
            merge(&mut table, t);
            origin = f.into();
        }
        Self::from_table(table, &origin)
    }

    /// Every check a config must pass before anything runs; every command path (`run`,
    /// `demo`, `check-config`) goes through it.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &'static str, message: String| {
            Err(ConfigError::Invalid {
                path: path.into(),
                field,
                message,
            })
        };
        if self.model.path.is_some() && self.model.bundle.is_some() {
            return bad("model", "set either path or bundle, not both".into());
        }
        if let Some(b) = &self.model.bundle {
            if b.is_empty() || b.contains('/') || b.starts_with('.') {
                return bad("model.bundle", format!("{b:?} is not a bundle name"));
            }
        }
        if let Some(m) = self.model.ort.problems().into_iter().next() {
            return bad("model.ort", m);
        }
        let p = &self.pipeline;
        if p.stall_timeout_ms < 500 {
            return bad(
                "pipeline.stall_timeout_ms",
                format!("{} ms is too short (minimum 500)", p.stall_timeout_ms),
            );
        }
        if !(p.ema_alpha > 0.0 && p.ema_alpha <= 1.0) {
            return bad(
                "pipeline.ema_alpha",
                format!("{} not in (0, 1]", p.ema_alpha),
            );
        }
        if !(0.0..=255.0).contains(&p.min_luma)
            || !(0.0..=255.0).contains(&p.max_luma)
            || p.min_luma >= p.max_luma
        {
            return bad(
                "pipeline.min_luma/max_luma",
                format!(
                    "need 0 <= min_luma < max_luma <= 255, got {} and {}",
                    p.min_luma, p.max_luma
                ),
            );
        }
        match &self.source {
            SourceConfig::Camera {
                width, height, fps, ..
            }
            | SourceConfig::Synthetic { width, height, fps } => {
                if *width == 0 || *height == 0 || *width > 7680 || *height > 4320 {
                    return bad(
                        "source.width/height",
                        format!("{width}x{height} out of range"),
                    );
                }
                if *fps == 0 || *fps > 240 {
                    return bad("source.fps", format!("{fps} not in 1..240"));
                }
            }
            SourceConfig::Images {
                path, interval_ms, ..
            } => {
                if path.is_empty() {
                    return bad("source.path", "empty".into());
                }
                if *interval_ms == 0 {
                    return bad("source.interval_ms", "must be > 0".into());
                }
            }
        }
        match &self.screen {
            ScreenConfig::Png { width, height, .. } | ScreenConfig::Tft { width, height, .. } => {
                if *width < 96 || *height < 96 || *width > 4096 || *height > 4096 {
                    return bad(
                        "screen.width/height",
                        format!("{width}x{height} not in 96..4096"),
                    );
                }
            }
            _ => {}
        }
        if let ScreenConfig::Tft { rotation, .. } = &self.screen {
            if ![0, 90, 180, 270].contains(rotation) {
                return bad(
                    "screen.rotation",
                    format!("{rotation} not one of 0, 90, 180, 270"),
                );
            }
        }
        if self.button.line.is_some() != self.button.gpiochip.is_some() {
            return bad("button", "set both gpiochip and line, or neither".into());
        }
        self.check_ranges(path)?;
        let w = &self.web;
        if w.enabled {
            let addr: std::net::SocketAddr = match w.bind.parse() {
                Ok(a) => a,
                Err(e) => return bad("web.bind", format!("{:?}: {e}", w.bind)),
            };
            match w.token.as_deref() {
                None if !addr.ip().is_loopback() => {
                    return bad(
                        "web.token",
                        format!(
                            "binding to {} (not loopback) requires an access token (at least 16 characters, e.g. `openssl rand -hex 16`)",
                            w.bind
                        ),
                    );
                }
                Some(t) => {
                    if let Some(p) = token_problem(t) {
                        return bad("web.token", format!("the token {p}"));
                    }
                }
                None => {}
            }
            for h in &w.allowed_hosts {
                if h.is_empty() || !h.chars().all(|c| c.is_ascii_alphanumeric() || ".-".contains(c)) {
                    return bad("web.allowed_hosts", format!("{h:?} is not a host name"));
                }
            }
        }
        Ok(())
    }

    /// Range checks of every numeric key: anything `check-config` accepts must not crash `run`
    /// (a semaphore with usize::MAX permits panics; 100,000 inference threads exhaust the
    /// process).
    fn check_ranges(&self, path: &Path) -> Result<(), ConfigError> {
        fn range<T: PartialOrd + std::fmt::Display + Copy>(
            path: &Path,
            field: &'static str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(ConfigError::Invalid {
                    path: path.into(),
                    field,
                    message: format!("{v} not in {lo}..={hi}"),
                });
            }
            Ok(())
        }
        let p = path;
        range(p, "model.threads", self.model.threads, 0, 256)?;
        range(p, "model.ort.device_id", self.model.ort.device_id, 0, 64)?;
        let pl = &self.pipeline;
        range(p, "pipeline.stall_timeout_ms", pl.stall_timeout_ms, 500, 3_600_000)?;
        if !pl.min_sharpness.is_finite() {
            return Err(ConfigError::Invalid {
                path: p.into(),
                field: "pipeline.min_sharpness",
                message: format!("{} is not a number", pl.min_sharpness),
            });
        }
        range(p, "pipeline.min_sharpness", pl.min_sharpness, 0.0, 1e6)?;
        if let SourceConfig::Images { interval_ms, .. } = &self.source {
            range(p, "source.interval_ms", *interval_ms, 1, 86_400_000)?;
        }
        if let ScreenConfig::Tft {
            spi_hz,
            dc_pin,
            rst_pin,
            backlight_pin,
            ..
        } = &self.screen
        {
            range(p, "screen.spi_hz", *spi_hz, 100_000, 125_000_000)?;
            range(p, "screen.dc_pin", *dc_pin, 0, 1023)?;
            range(p, "screen.rst_pin", rst_pin.unwrap_or(0), 0, 1023)?;
            range(p, "screen.backlight_pin", backlight_pin.unwrap_or(0), 0, 1023)?;
        }
        range(p, "button.line", self.button.line.unwrap_or(0), 0, 1023)?;
        let c = &self.capture;
        range(p, "capture.max_files", c.max_files, 1, 1_000_000)?;
        let w = &self.web;
        range(p, "web.nice", w.nice, 0, 19)?;
        range(p, "web.max_upload_bytes", w.max_upload_bytes, 1024, 256 << 20)?;
        range(p, "web.max_pixels", w.max_pixels, 1, 250_000_000)?;
        range(p, "web.max_concurrent", w.max_concurrent, 1, 64)?;
        range(p, "web.queue", w.queue, 0, 1024)?;
        range(p, "web.max_connections", w.max_connections, 4, 4096)?;
        range(p, "web.header_timeout_ms", w.header_timeout_ms, 100, 600_000)?;
        range(p, "web.body_timeout_ms", w.body_timeout_ms, 100, 3_600_000)?;
        range(p, "web.min_upload_rate", w.min_upload_rate, 0, 1 << 30)?;
        range(p, "web.session_ttl_s", w.session_ttl_s, 60, 30 * 86_400)?;
        range(p, "web.freeze_interval_ms", w.freeze_interval_ms, 0, 3_600_000)?;
        range(p, "web.save_max_files", w.save_max_files, 1, 1_000_000)?;
        range(p, "web.inference_threads", w.inference_threads, 0, 64)?;
        Ok(())
    }

    /// Backends this config names that the binary was built without (feature names).
    pub fn missing_features(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut need = |on: bool, feature: &str, what: &str| {
            if !on {
                v.push(format!("{what} needs cargo feature `{feature}`: this dermcam was built without feature {feature}"));
            }
        };
        if matches!(self.source, SourceConfig::Camera { .. }) {
            need(
                cfg!(feature = "camera"),
                "camera",
                "source.kind = \"camera\"",
            );
        }
        match self.screen {
            ScreenConfig::Fbdev { .. } => {
                need(cfg!(feature = "fbdev"), "fbdev", "screen.kind = \"fbdev\"")
            }
            ScreenConfig::Tft { .. } => need(cfg!(feature = "tft"), "tft", "screen.kind = \"tft\""),
            _ => {}
        }
        if self.button.line.is_some() {
            need(cfg!(feature = "gpio"), "gpio", "button.line");
        }
        if self.model.backend == BackendKind::Ort {
            need(cfg!(feature = "ort"), "ort", "model.backend = \"ort\"");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_variants_parse() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(matches!(
            c.source,
            SourceConfig::Camera {
                width: 640,
                height: 480,
                ..
            }
        ));
        let c = Config::parse(
            "[source]\nkind = \"images\"\npath = \"x/*.jpg\"\nloop = false\n[screen]\nkind = \"tft\"\ndriver = \"st7789\"\ndc_pin = 25\nwidth = 240\nheight = 240\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert!(matches!(
            c.source,
            SourceConfig::Images { repeat: false, .. }
        ));
        assert!(matches!(
            c.screen,
            ScreenConfig::Tft {
                driver: TftDriver::St7789,
                ..
            }
        ));
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
            ScreenConfig::Tft {
                rotation: 90,
                dc_pin: 25,
                ..
            }
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
            ScreenConfig::Tft {
                rotation: 180,
                dc_pin: 25,
                ..
            }
        ));
        assert_eq!(c.model.bundle.as_deref(), Some("effl0-v2"));
        std::fs::write(&f, "board = \"rpi4-st7789\"\n[pipeline]\nmin_luma = 20.0\n").unwrap();
        let c = Config::load(Some(&f), Some("rpi5-hdmi")).unwrap();
        assert!(
            matches!(c.screen, ScreenConfig::Fbdev { .. }),
            "--board wins"
        );
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
