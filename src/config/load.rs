//! Loading a configuration (file + board preset) and validating it.

use super::boards::{list_boards, merge, read_table};
use super::web::token_problem;
use super::{Config, ConfigError, NotBuilt, feature_built};
use crate::model::BackendKind;
use std::path::{Path, PathBuf};

/// A rejected key and why.
pub type FieldError = (&'static str, String);

pub fn fail(field: &'static str, message: impl Into<String>) -> Result<(), FieldError> {
    Err((field, message.into()))
}

pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), FieldError> {
    if v < lo || v > hi {
        return fail(field, format!("{v} not in {lo}..={hi}"));
    }
    Ok(())
}

/// The dotted key of the first string value (or key) holding a NUL character, if any.
fn key_with_nul(t: &toml::Table) -> Option<String> {
    fn walk(v: &toml::Value, key: &str) -> Option<String> {
        match v {
            toml::Value::String(s) if s.contains('\0') => Some(key.to_string()),
            toml::Value::Table(t) => t.iter().find_map(|(k, v)| {
                let key = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                if k.contains('\0') {
                    Some(key)
                } else {
                    walk(v, &key)
                }
            }),
            toml::Value::Array(a) => a.iter().find_map(|v| walk(v, key)),
            _ => None,
        }
    }
    walk(&toml::Value::Table(t.clone()), "")
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

    pub(super) fn from_table(table: toml::Table, path: &Path) -> Result<Config, ConfigError> {
        // A NUL cannot be in a path or a name: the OS would cut the string there and use a
        // different file than the one `check-config` showed.
        if let Some(key) = key_with_nul(&table) {
            return Err(ConfigError::Parse {
                path: path.into(),
                message: format!("{key}: contains a NUL character"),
            });
        }
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
    /// `demo`, `check-config`) goes through it. The checks run in a fixed order, so a config
    /// with several faults always reports the same one.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check_model()
            .and_then(|()| self.check_pipeline())
            .and_then(|()| self.check_source())
            .and_then(|()| self.check_screen())
            .and_then(|()| {
                if self.button.line.is_some() != self.button.gpiochip.is_some() {
                    return fail("button", "set both gpiochip and line, or neither");
                }
                Ok(())
            })
            .and_then(|()| self.check_ranges())
            .and_then(|()| self.check_web())
            .map_err(|(field, message)| ConfigError::Invalid {
                path: path.into(),
                field,
                message,
            })
    }

    fn check_model(&self) -> Result<(), FieldError> {
        if self.model.path.is_some() && self.model.bundle.is_some() {
            return fail("model", "set either path or bundle, not both");
        }
        if let Some(b) = &self.model.bundle {
            if b.is_empty() || b.contains('/') || b.starts_with('.') {
                return fail("model.bundle", format!("{b:?} is not a bundle name"));
            }
        }
        if let Some(m) = self.model.ort.problems().into_iter().next() {
            return fail("model.ort", m);
        }
        Ok(())
    }

    fn check_pipeline(&self) -> Result<(), FieldError> {
        let p = &self.pipeline;
        if p.stall_timeout_ms < 500 {
            return fail(
                "pipeline.stall_timeout_ms",
                format!("{} ms is too short (minimum 500)", p.stall_timeout_ms),
            );
        }
        if !(p.ema_alpha > 0.0 && p.ema_alpha <= 1.0) {
            return fail(
                "pipeline.ema_alpha",
                format!("{} not in (0, 1]", p.ema_alpha),
            );
        }
        if !(0.0..=255.0).contains(&p.min_luma)
            || !(0.0..=255.0).contains(&p.max_luma)
            || p.min_luma >= p.max_luma
        {
            return fail(
                "pipeline.min_luma/max_luma",
                format!(
                    "need 0 <= min_luma < max_luma <= 255, got {} and {}",
                    p.min_luma, p.max_luma
                ),
            );
        }
        Ok(())
    }

    fn check_source(&self) -> Result<(), FieldError> {
        self.source.spec().check()
    }

    fn check_screen(&self) -> Result<(), FieldError> {
        self.screen.spec().check()
    }

    /// A parseable bind address, a token wherever the server is reachable from elsewhere, and
    /// host names that are host names.
    fn check_web(&self) -> Result<(), FieldError> {
        let w = &self.web;
        if !w.enabled {
            return Ok(());
        }
        let addr: std::net::SocketAddr = match w.bind.parse() {
            Ok(a) => a,
            Err(e) => return fail("web.bind", format!("{:?}: {e}", w.bind)),
        };
        match w.token.as_deref() {
            None if !addr.ip().is_loopback() => {
                return fail(
                    "web.token",
                    format!(
                        "binding to {} (not loopback) requires an access token (at least 16 characters, e.g. `openssl rand -hex 16`)",
                        w.bind
                    ),
                );
            }
            Some(t) => {
                if let Some(p) = token_problem(t) {
                    return fail("web.token", format!("the token {p}"));
                }
            }
            None => {}
        }
        for h in &w.allowed_hosts {
            if h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
            {
                return fail("web.allowed_hosts", format!("{h:?} is not a host name"));
            }
        }
        Ok(())
    }

    /// Range checks of every numeric key: anything `check-config` accepts must not crash `run`
    /// (a semaphore with usize::MAX permits panics; 100,000 inference threads exhaust the
    /// process).
    fn check_ranges(&self) -> Result<(), FieldError> {
        self.check_model_pipeline_ranges()?;
        self.check_device_ranges()?;
        self.check_web_ranges()?;
        if let Some(problem) = self.fleet.problems().into_iter().next() {
            return Err(problem);
        }
        Ok(())
    }

    fn check_model_pipeline_ranges(&self) -> Result<(), FieldError> {
        range("model.threads", self.model.threads, 0, 256)?;
        range("model.ort.device_id", self.model.ort.device_id, 0, 64)?;
        let pl = &self.pipeline;
        range(
            "pipeline.stall_timeout_ms",
            pl.stall_timeout_ms,
            500,
            3_600_000,
        )?;
        if !pl.min_sharpness.is_finite() {
            return fail(
                "pipeline.min_sharpness",
                format!("{} is not a number", pl.min_sharpness),
            );
        }
        range("pipeline.min_sharpness", pl.min_sharpness, 0.0, 1e6)?;
        range("pipeline.max_clipped", pl.max_clipped, 0.0, 1.0)?;
        range(
            "pipeline.min_directional_sharpness",
            pl.min_directional_sharpness,
            0.0,
            1e6,
        )
    }

    /// Source, screen pins, button and capture.
    fn check_device_ranges(&self) -> Result<(), FieldError> {
        range("button.line", self.button.line.unwrap_or(0), 0, 1023)?;
        range("capture.max_files", self.capture.max_files, 1, 1_000_000)
    }

    fn check_web_ranges(&self) -> Result<(), FieldError> {
        let w = &self.web;
        range("web.nice", w.nice, 0, 19)?;
        range("web.max_upload_bytes", w.max_upload_bytes, 1024, 256 << 20)?;
        range("web.max_pixels", w.max_pixels, 1, 250_000_000)?;
        range("web.max_concurrent", w.max_concurrent, 1, 64)?;
        range("web.queue", w.queue, 0, 1024)?;
        range("web.max_connections", w.max_connections, 4, 4096)?;
        range("web.header_timeout_ms", w.header_timeout_ms, 100, 600_000)?;
        range("web.write_timeout_ms", w.write_timeout_ms, 100, 600_000)?;
        range("web.body_timeout_ms", w.body_timeout_ms, 100, 3_600_000)?;
        range("web.min_upload_rate", w.min_upload_rate, 0, 1 << 30)?;
        range("web.session_ttl_s", w.session_ttl_s, 60, 30 * 86_400)?;
        range("web.freeze_interval_ms", w.freeze_interval_ms, 0, 3_600_000)?;
        range("web.save_max_files", w.save_max_files, 1, 1_000_000)?;
        range("web.inference_threads", w.inference_threads, 0, 64)
    }

    /// Backends this config names that the binary was built without (feature names).
    pub fn missing_features(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut need = |feature: &'static str, what: &str| {
            if !feature_built(feature) {
                out.push(NotBuilt::new(what, feature));
            }
        };
        for e in [self.source.built().err(), self.screen.built().err()]
            .into_iter()
            .flatten()
        {
            need(e.feature, &e.what);
        }
        if self.button.line.is_some() {
            need("gpio", "button.line");
        }
        if self.model.backend == BackendKind::Ort {
            need("ort", "model.backend = \"ort\"");
        }
        if self.fleet.enabled() {
            need("fleet", "fleet.broker");
        }
        out.iter().map(|e| e.to_string()).collect()
    }
}
