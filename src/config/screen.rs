//! The `[screen]` section: which screen driver, with the driver's own settings. Each driver's
//! settings struct lives in its own file under `screen/` with its checks, its cargo feature and
//! how it opens (`screen::ScreenSpec`); this enum only names them.

use super::NotBuilt;
use super::load::{FieldError, fail};
pub use crate::screen::fbdev::FbdevScreenConfig;
pub use crate::screen::tft::{TftDriver, TftScreenConfig};
pub use crate::screen::{PngScreenConfig, ScreenSpec};
use serde::{Deserialize, Serialize};

/// `[screen] kind = …`. A new driver: its file under `screen/` (settings struct + `ScreenSpec`
/// + driver), `pub mod` for it in `screen/mod.rs`, a variant here and its arm in `spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScreenConfig {
    /// Headless: the screen is written to a PNG file (always built).
    Png(PngScreenConfig),
    /// Linux framebuffer, 16 or 32 bpp (feature `fbdev`).
    Fbdev(FbdevScreenConfig),
    /// SPI TFT via mipidsi (feature `tft`).
    Tft(TftScreenConfig),
    /// No screen (web-only kiosk).
    None,
}

impl ScreenConfig {
    /// The configured driver: the one place that matches on `[screen] kind`.
    pub fn spec(&self) -> &dyn ScreenSpec {
        match self {
            ScreenConfig::Png(c) => c,
            ScreenConfig::Fbdev(c) => c,
            ScreenConfig::Tft(c) => c,
            ScreenConfig::None => &crate::screen::NoScreenConfig,
        }
    }

    /// `Err` when this build lacks the driver's cargo feature.
    pub fn built(&self) -> Result<(), NotBuilt> {
        let spec = self.spec();
        NotBuilt::check_kind("screen", spec.kind(), spec.feature())
    }
}

impl Default for ScreenConfig {
    fn default() -> Self {
        ScreenConfig::Png(PngScreenConfig::default())
    }
}

/// The size check the drawn screens share.
pub fn check_size(width: u32, height: u32) -> Result<(), FieldError> {
    if width < 96 || height < 96 || width > 4096 || height > 4096 {
        return fail(
            "screen.width/height",
            format!("{width}x{height} not in 96..4096"),
        );
    }
    Ok(())
}
