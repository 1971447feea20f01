//! The `[source]` section: where frames come from.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Nv12,
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

pub(super) fn default_device() -> String {
    "/dev/video0".into()
}
pub(super) fn default_format() -> PixelFormat {
    PixelFormat::Mjpeg
}
pub(super) fn default_w() -> u32 {
    640
}
pub(super) fn default_h() -> u32 {
    480
}
pub(super) fn default_fps() -> u32 {
    15
}
pub(super) fn default_interval() -> u64 {
    1500
}
pub(super) fn yes() -> bool {
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
