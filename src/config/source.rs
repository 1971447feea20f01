//! The `[source]` section: where frames come from. Each source's settings struct lives in its
//! own file under `source/` with its checks, its cargo feature and how it opens
//! (`source::SourceSpec`); this enum only names them.

use super::NotBuilt;
use super::load::{FieldError, fail};
pub use crate::source::camera::{CameraSourceConfig, PixelFormat};
pub use crate::source::{ImagesSourceConfig, SourceSpec, SyntheticSourceConfig};
use serde::{Deserialize, Serialize};

/// `[source] kind = …`. A new source: its file under `source/` (settings struct + `SourceSpec`
/// + the `FrameSource`), a `mod` line in `source/mod.rs`, a variant here and its arm in `spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// V4L2 camera (feature `camera`).
    Camera(CameraSourceConfig),
    /// A file, a folder or a glob of images shown as a slideshow (virtual camera).
    Images(ImagesSourceConfig),
    /// A moving test pattern, for screen bring-up.
    Synthetic(SyntheticSourceConfig),
}

impl SourceConfig {
    /// The configured source: the one place that matches on `[source] kind`.
    pub fn spec(&self) -> &dyn SourceSpec {
        match self {
            SourceConfig::Camera(c) => c,
            SourceConfig::Images(c) => c,
            SourceConfig::Synthetic(c) => c,
        }
    }

    /// `Err` when this build lacks the source's cargo feature.
    pub fn built(&self) -> Result<(), NotBuilt> {
        let spec = self.spec();
        NotBuilt::check_kind("source", spec.kind(), spec.feature())
    }
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Camera(CameraSourceConfig::default())
    }
}

pub fn default_source_w() -> u32 {
    640
}
pub fn default_source_h() -> u32 {
    480
}
pub fn default_source_fps() -> u32 {
    15
}

/// The frame size and rate check the camera and the test pattern share.
pub fn check_frame_size(width: u32, height: u32, fps: u32) -> Result<(), FieldError> {
    if width == 0 || height == 0 || width > 7680 || height > 4320 {
        return fail(
            "source.width/height",
            format!("{width}x{height} out of range"),
        );
    }
    if fps == 0 || fps > 240 {
        return fail("source.fps", format!("{fps} not in 1..240"));
    }
    Ok(())
}
