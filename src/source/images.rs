//! The image slideshow (virtual camera): a file, a folder or a glob of images.

use super::{Frame, FrameSource, SourceError, SourceSpec, pace};
use crate::config::{FieldError, fail, range};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `[source] kind = "images"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSourceConfig {
    pub path: String,
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    #[serde(default = "yes", rename = "loop")]
    pub repeat: bool,
}

fn default_interval() -> u64 {
    1500
}
fn yes() -> bool {
    true
}

impl SourceSpec for ImagesSourceConfig {
    fn kind(&self) -> &'static str {
        "images"
    }
    fn open(&self) -> Result<Box<dyn FrameSource>, SourceError> {
        let s = ImagesSource::new(
            &self.path,
            Duration::from_millis(self.interval_ms),
            self.repeat,
        )?;
        log::info!(
            "source: {} images from {}, every {} ms{}",
            s.len(),
            self.path,
            self.interval_ms,
            if self.repeat { ", looping" } else { "" }
        );
        Ok(Box::new(s))
    }
    fn check(&self) -> Result<(), FieldError> {
        if self.path.is_empty() {
            return fail("source.path", "empty");
        }
        if self.interval_ms == 0 {
            return fail("source.interval_ms", "must be > 0");
        }
        range("source.interval_ms", self.interval_ms, 1, 86_400_000)
    }
}

/// Files named by a file, a folder (its JPEG/PNG files, sorted) or a glob pattern.
pub fn resolve_images(spec: &str) -> Result<Vec<PathBuf>, SourceError> {
    let p = Path::new(spec);
    let mut files: Vec<PathBuf> = if p.is_dir() {
        crate::paths::image_files(p, false)
            .map_err(|e| SourceError::Config(format!("{spec}: {e}")))?
    } else if p.is_file() {
        vec![p.into()]
    } else {
        glob::glob(spec)
            .map_err(|e| SourceError::Config(format!("{spec}: bad pattern: {e}")))?
            .flatten()
            .filter(|p| p.is_file())
            .collect()
    };
    files.sort();
    if files.is_empty() {
        return Err(SourceError::Config(format!(
            "{spec}: no JPEG/PNG images found"
        )));
    }
    Ok(files)
}

/// Slideshow of still images: the demo's and the tests' virtual camera.
pub struct ImagesSource {
    files: Vec<PathBuf>,
    interval: Duration,
    repeat: bool,
    next: usize,
    seq: u64,
    last: Option<Instant>,
    max_pixels: u64,
}

impl ImagesSource {
    pub fn new(spec: &str, interval: Duration, repeat: bool) -> Result<Self, SourceError> {
        Ok(ImagesSource {
            files: resolve_images(spec)?,
            interval,
            repeat,
            next: 0,
            seq: 0,
            last: None,
            max_pixels: crate::model::preprocess::DEFAULT_MAX_PIXELS,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for ImagesSource {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        if self.next >= self.files.len() {
            if !self.repeat {
                return Err(SourceError::Ended);
            }
            self.next = 0;
        }
        pace(&mut self.last, self.interval);
        let path = self.files[self.next].clone();
        self.next += 1;
        self.seq += 1;
        let img = crate::model::preprocess::load_image(&path, self.max_pixels)
            .map_err(|e| SourceError::BadFrame(e.to_string()))?;
        Ok(Frame {
            image: Arc::new(img),
            seq: self.seq,
            captured: Instant::now(),
            scene: self.seq,
            label: path.file_name().map(|n| n.to_string_lossy().to_string()),
        })
    }
}
