//! Screens present a finished canvas (one required method). The renderer (`render.rs`) draws;
//! screens only move pixels: PNG snapshot (always built), framebuffer (`fbdev`), SPI TFT (`tft`).
//! Each driver's file also holds its `[screen]` settings and their `ScreenSpec` (checks, cargo
//! feature, open); its hardware code is compiled only with its feature.

pub mod fbdev;
pub mod render;
pub mod tft;

use crate::config::{FieldError, ScreenConfig, check_size};
use crate::screen::render::Canvas;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    #[error("{device}: {message}")]
    Device { device: String, message: String },
    #[error("screen backend unavailable: {0}")]
    Unavailable(String),
    /// The configured screen's cargo feature is not in this build.
    #[error(transparent)]
    NotBuilt(#[from] crate::config::NotBuilt),
}

pub trait Screen: Send {
    /// Show the canvas (its size is `size()`).
    fn present(&mut self, canvas: &Canvas) -> Result<(), ScreenError>;
    /// Pixel size the renderer should draw at.
    fn size(&self) -> (u32, u32);
}

/// A screen driver's settings (one `[screen]` variant): its kind, the cargo feature it needs,
/// its own checks, and how it opens.
pub trait ScreenSpec {
    /// `screen.kind` as written in the file.
    fn kind(&self) -> &'static str;
    /// Opens the driver (called only when [`ScreenConfig::built`] passed).
    fn open(&self) -> Result<Box<dyn Screen>, ScreenError>;
    /// The cargo feature its driver needs and whether this build has it (None: always built).
    fn feature(&self) -> Option<(&'static str, bool)> {
        None
    }
    /// Its own keys' checks (`check-config`, start-up).
    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// `[screen] kind = "png"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PngScreenConfig {
    #[serde(default = "default_png")]
    pub path: PathBuf,
    #[serde(default = "default_screen_w")]
    pub width: u32,
    #[serde(default = "default_screen_h")]
    pub height: u32,
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

impl Default for PngScreenConfig {
    fn default() -> Self {
        PngScreenConfig {
            path: default_png(),
            width: default_screen_w(),
            height: default_screen_h(),
        }
    }
}

impl ScreenSpec for PngScreenConfig {
    fn kind(&self) -> &'static str {
        "png"
    }
    fn open(&self) -> Result<Box<dyn Screen>, ScreenError> {
        Ok(Box::new(PngScreen::new(
            self.path.clone(),
            self.width,
            self.height,
        )))
    }
    fn check(&self) -> Result<(), FieldError> {
        check_size(self.width, self.height)
    }
}

/// `[screen] kind = "none"`.
pub struct NoScreenConfig;

impl ScreenSpec for NoScreenConfig {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn open(&self) -> Result<Box<dyn Screen>, ScreenError> {
        Ok(Box::new(NoScreen))
    }
}

/// Headless screen: each frame is written atomically to a PNG file (temp + rename, so a
/// viewer never sees a half-written image).
pub struct PngScreen {
    pub path: PathBuf,
    width: u32,
    height: u32,
}

impl PngScreen {
    pub fn new(path: PathBuf, width: u32, height: u32) -> Self {
        PngScreen {
            path,
            width,
            height,
        }
    }
}

impl Screen for PngScreen {
    fn present(&mut self, canvas: &Canvas) -> Result<(), ScreenError> {
        let err = |m: String| ScreenError::Device {
            device: self.path.display().to_string(),
            message: m,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = self.path.with_extension("png.tmp");
        canvas
            .0
            .save_with_format(&tmp, image::ImageFormat::Png)
            .map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

/// No screen at all (web-only).
pub struct NoScreen;

impl Screen for NoScreen {
    fn present(&mut self, _: &Canvas) -> Result<(), ScreenError> {
        Ok(())
    }
    fn size(&self) -> (u32, u32) {
        (0, 0)
    }
}

/// Renders but shows nowhere: measures the pipeline without display I/O (`dermcam bench`).
pub struct MemoryScreen(pub u32, pub u32);

impl Screen for MemoryScreen {
    fn present(&mut self, _: &Canvas) -> Result<(), ScreenError> {
        Ok(())
    }
    fn size(&self) -> (u32, u32) {
        (self.0, self.1)
    }
}

/// Pack RGB888 pixels into a framebuffer/SPI pixel format (host-testable).
pub fn pack_rgb565_le(rgb: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(rgb.len() / 3 * 2);
    for p in rgb.chunks_exact(3) {
        let v = ((p[0] as u16 & 0xF8) << 8) | ((p[1] as u16 & 0xFC) << 3) | (p[2] as u16 >> 3);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Builds the screen a configuration names (a driver whose cargo feature is not in this build
/// answers [`ScreenError::NotBuilt`]).
pub fn open(cfg: &ScreenConfig) -> Result<Box<dyn Screen>, ScreenError> {
    cfg.built()?;
    cfg.spec().open()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rgb565_packing() {
        let mut out = Vec::new();
        super::pack_rgb565_le(&[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255], &mut out);
        assert_eq!(out, vec![0x00, 0xF8, 0xE0, 0x07, 0x1F, 0x00, 0xFF, 0xFF]);
    }
}
