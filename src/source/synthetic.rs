//! A moving test pattern, for screen bring-up.

use super::{Frame, FrameSource, SourceError, SourceSpec, pace};
use crate::config::{FieldError, check_frame_size};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// `[source] kind = "synthetic"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSourceConfig {
    #[serde(default = "crate::config::default_source_w")]
    pub width: u32,
    #[serde(default = "crate::config::default_source_h")]
    pub height: u32,
    #[serde(default = "crate::config::default_source_fps")]
    pub fps: u32,
}

impl SourceSpec for SyntheticSourceConfig {
    fn kind(&self) -> &'static str {
        "synthetic"
    }
    fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
        Ok(Box::new(SyntheticSource::new(
            self.width,
            self.height,
            self.fps,
        )))
    }
    fn check(&self) -> Result<(), FieldError> {
        check_frame_size(self.width, self.height, self.fps)
    }
}

/// Moving colour bars with a sharp checkerboard, for bringing up a new screen.
pub struct SyntheticSource {
    width: u32,
    height: u32,
    period: Duration,
    seq: u64,
    last: Option<Instant>,
}

impl SyntheticSource {
    pub fn new(width: u32, height: u32, fps: u32) -> Self {
        SyntheticSource {
            width,
            height,
            period: Duration::from_secs_f64(1.0 / fps.max(1) as f64),
            seq: 0,
            last: None,
        }
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        pace(&mut self.last, self.period);
        self.seq += 1;
        let shift = (self.seq * 4) as u32;
        let img = RgbImage::from_fn(self.width, self.height, |x, y| {
            let bar = ((x + shift) * 8 / self.width.max(1)) % 8;
            let mut c = [
                ((bar & 1) * 255) as u8,
                (((bar >> 1) & 1) * 255) as u8,
                (((bar >> 2) & 1) * 255) as u8,
            ];
            if y > self.height * 3 / 4 && ((x / 8 + y / 8) % 2 == 0) {
                c = [0, 0, 0];
            }
            image::Rgb(c)
        });
        Ok(Frame::live(img, self.seq))
    }
}
