//! V4L2 camera through nokhwa (feature `camera`; the only file that imports nokhwa). Frames
//! arrive as raw MJPEG or YUYV buffers and are converted by `source::{mjpeg_to_rgb,
//! yuyv_to_rgb}`, which the tests exercise without a camera.

use crate::config::{FieldError, check_frame_size};
use crate::source::{FrameSource, SourceError, SourceSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Nv12,
}

/// `[source] kind = "camera"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSourceConfig {
    /// `/dev/videoN`, a `/dev/v4l/by-*` link or the V4L2 device name.
    #[serde(default = "default_device")]
    pub device: String,
    #[serde(default = "default_format")]
    pub format: PixelFormat,
    #[serde(default = "crate::config::default_source_w")]
    pub width: u32,
    #[serde(default = "crate::config::default_source_h")]
    pub height: u32,
    #[serde(default = "crate::config::default_source_fps")]
    pub fps: u32,
}

fn default_device() -> String {
    "/dev/video0".into()
}
fn default_format() -> PixelFormat {
    PixelFormat::Mjpeg
}

impl Default for CameraSourceConfig {
    fn default() -> Self {
        CameraSourceConfig {
            device: default_device(),
            format: default_format(),
            width: crate::config::default_source_w(),
            height: crate::config::default_source_h(),
            fps: crate::config::default_source_fps(),
        }
    }
}

impl SourceSpec for CameraSourceConfig {
    fn kind(&self) -> &'static str {
        "camera"
    }
    fn feature(&self) -> Option<(&'static str, bool)> {
        Some(("camera", cfg!(feature = "camera")))
    }
    fn check(&self) -> Result<(), FieldError> {
        check_frame_size(self.width, self.height, self.fps)
    }
    fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
        #[cfg(feature = "camera")]
        return driver::supervised(self);
        #[cfg(not(feature = "camera"))]
        Err(SourceError::Config(
            crate::config::NotBuilt::for_kind("source", self.kind(), "camera").to_string(),
        ))
    }
}

#[cfg(feature = "camera")]
pub use driver::{CameraSource, supervised};

/// The camera itself (nokhwa over V4L2).
#[cfg(feature = "camera")]
mod driver {
    use super::{CameraSourceConfig, PixelFormat};
    use crate::source::{
        Frame, FrameSource, Reconnecting, SourceError, mjpeg_to_rgb, nv12_to_rgb, v4l, yuyv_to_rgb,
    };
    use nokhwa::Camera;
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{
        CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution,
    };
    use std::time::Duration;

    pub struct CameraSource {
        cam: Camera,
        seq: u64,
        width: u32,
        height: u32,
        max_pixels: u64,
    }

    // SAFETY: the supervisor opens the camera lazily on the capture thread and only that thread
    // ever touches it; the handle never moves between threads after creation.
    unsafe impl Send for CameraSource {}

    impl CameraSource {
        pub fn open(
            device: &str,
            format: PixelFormat,
            width: u32,
            height: u32,
            fps: u32,
        ) -> Result<CameraSource, SourceError> {
            let index = v4l::resolve(device, std::path::Path::new("/sys/class/video4linux"))?;
            let gone = |e: nokhwa::NokhwaError| SourceError::Disconnected(format!("{device}: {e}"));
            let mut cam = Camera::new(
                CameraIndex::Index(index),
                RequestedFormat::new::<RgbFormat>(RequestedFormatType::None),
            )
            .map_err(gone)?;
            let modes = cam.compatible_camera_formats().map_err(gone)?;
            let list = modes
                .iter()
                .map(|m| {
                    format!(
                        "{} {}x{}@{}",
                        m.format(),
                        m.width(),
                        m.height(),
                        m.frame_rate()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            log::info!(
                "camera {device} ({}): modes: {list}",
                cam.info().human_name()
            );
            let fourcc = match format {
                PixelFormat::Mjpeg => FrameFormat::MJPEG,
                PixelFormat::Yuyv => FrameFormat::YUYV,
                PixelFormat::Nv12 => FrameFormat::NV12,
            };
            let want = CameraFormat::new(Resolution::new(width, height), fourcc, fps);
            if !modes.contains(&want) {
                return Err(SourceError::Config(format!(
                    "{device}: mode {fourcc} {width}x{height}@{fps} not offered; the camera offers: {list}"
                )));
            }
            cam.set_camera_requset(RequestedFormat::new::<RgbFormat>(
                RequestedFormatType::Exact(want),
            ))
            .map_err(gone)?;
            cam.open_stream().map_err(gone)?;
            Ok(CameraSource {
                cam,
                seq: 0,
                width,
                height,
                max_pixels: 7680 * 4320,
            })
        }
    }

    impl FrameSource for CameraSource {
        fn next_frame(&mut self) -> Result<Frame, SourceError> {
            let buf = self
                .cam
                .frame()
                .map_err(|e| SourceError::Disconnected(e.to_string()))?;
            let img = match buf.source_frame_format() {
                FrameFormat::MJPEG => mjpeg_to_rgb(buf.buffer(), self.max_pixels)?,
                FrameFormat::YUYV => yuyv_to_rgb(buf.buffer(), self.width, self.height)?,
                FrameFormat::NV12 => nv12_to_rgb(buf.buffer(), self.width, self.height)?,
                other => {
                    return Err(SourceError::Config(format!(
                        "unsupported pixel format {other}"
                    )));
                }
            };
            self.seq += 1;
            Ok(Frame::live(img, self.seq))
        }
    }

    /// The configured camera wrapped in the reconnecting supervisor.
    pub fn supervised(cfg: &CameraSourceConfig) -> Result<Box<dyn FrameSource>, SourceError> {
        let CameraSourceConfig {
            device,
            format,
            width,
            height,
            fps,
        } = cfg.clone();
        let open = move || {
            CameraSource::open(&device, format, width, height, fps)
                .map(|c| Box::new(c) as Box<dyn FrameSource>)
        };
        Ok(Box::new(Reconnecting::new(
            open,
            Duration::from_millis(250),
            Duration::from_secs(2),
        )))
    }
}
