//! Screens present a finished canvas (one required method). The renderer (`render.rs`) draws;
//! screens only move pixels: PNG snapshot (always built), framebuffer (`fbdev`), SPI TFT (`tft`).

#[cfg(feature = "fbdev")]
pub mod fbdev;
pub mod render;
#[cfg(feature = "tft")]
pub mod tft;

use crate::screen::render::Canvas;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ScreenError {
    #[error("{device}: {message}")]
    Device { device: String, message: String },
    #[error("screen backend unavailable: {0}")]
    Unavailable(String),
}

pub trait Screen: Send {
    /// Show the canvas (its size is `size()`).
    fn present(&mut self, canvas: &Canvas) -> Result<(), ScreenError>;
    /// Pixel size the renderer should draw at.
    fn size(&self) -> (u32, u32);
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

#[cfg(test)]
mod tests {
    #[test]
    fn rgb565_packing() {
        let mut out = Vec::new();
        super::pack_rgb565_le(&[255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255], &mut out);
        assert_eq!(out, vec![0x00, 0xF8, 0xE0, 0x07, 0x1F, 0x00, 0xFF, 0xFF]);
    }
}
