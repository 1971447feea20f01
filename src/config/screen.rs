//! The `[screen]` section: where the rendered canvas goes.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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

pub(super) fn default_png() -> PathBuf {
    "out/screen.png".into()
}
pub(super) fn default_screen_w() -> u32 {
    800
}
pub(super) fn default_screen_h() -> u32 {
    480
}
pub(super) fn default_fb() -> PathBuf {
    "/dev/fb0".into()
}
pub(super) fn default_spi() -> PathBuf {
    "/dev/spidev0.0".into()
}
pub(super) fn default_spi_hz() -> u32 {
    40_000_000
}
pub(super) fn default_gpiochip() -> PathBuf {
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
