//! Frame sources: the `FrameSource` seam (one required method: the next frame), the image
//! slideshow (virtual camera), a synthetic test pattern, camera buffer converters and the
//! reconnecting supervisor. The V4L2 camera itself lives in `camera.rs` (feature `camera`).
//! Each source's file also holds its `[source]` settings and their `SourceSpec`.

pub mod camera;
mod images;
mod synthetic;
pub mod v4l;

pub use images::{ImagesSource, ImagesSourceConfig, resolve_images};
pub use synthetic::{SyntheticSource, SyntheticSourceConfig};

use crate::config::{FieldError, SourceConfig};
use image::RgbImage;

use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The device failed or disappeared; the supervisor will reopen it.
    #[error("camera disconnected: {0}")]
    Disconnected(String),
    /// One frame was bad (corrupt JPEG, unreadable file); the next may be fine.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// A finite source (slideshow without loop) is done.
    #[error("source ended")]
    Ended,
    /// Configuration problem (no images match, unsupported mode): not retried.
    #[error("{0}")]
    Config(String),
}

impl SourceError {
    /// The reason alone, without the kind's prefix (for wrapping in another kind).
    pub fn reason(&self) -> String {
        match self {
            SourceError::Disconnected(m) | SourceError::BadFrame(m) | SourceError::Config(m) => {
                m.clone()
            }
            SourceError::Ended => "source ended".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub image: Arc<RgbImage>,
    pub seq: u64,
    pub captured: Instant,
    /// Changes when the scene changes (a new slideshow image); smoothing restarts then.
    pub scene: u64,
    /// File name for slideshow frames.
    pub label: Option<String>,
}

impl Frame {
    /// A live camera-style frame captured now: one continuous scene, no file name.
    pub fn live(image: RgbImage, seq: u64) -> Frame {
        Frame {
            image: Arc::new(image),
            seq,
            captured: Instant::now(),
            scene: 0,
            label: None,
        }
    }
}

pub trait FrameSource: Send {
    /// Block until the next frame is available.
    fn next_frame(&mut self) -> Result<Frame, SourceError>;
}

/// Sleep until `period` after the previous frame, then record now as the previous frame.
pub(crate) fn pace(last: &mut Option<Instant>, period: Duration) {
    if let Some(due) = last.map(|l| l + period) {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
    *last = Some(Instant::now());
}

/// YUYV 4:2:2 (V4L2 `YUYV`) to RGB8 with BT.601 limited-range integer maths. Works on
/// whole rows of 2-pixel groups; a short or odd-sized buffer is an error, never a panic.
pub fn yuyv_to_rgb(buf: &[u8], width: u32, height: u32) -> Result<RgbImage, SourceError> {
    let (w, h) = (width as usize, height as usize);
    let need = w
        .checked_mul(h)
        .and_then(|n| n.checked_mul(2))
        .ok_or_else(|| SourceError::BadFrame("YUYV size overflows".into()))?;
    if w == 0 || h == 0 || w % 2 != 0 {
        return Err(SourceError::BadFrame(format!(
            "YUYV frame {width}x{height}: width must be even and non-zero"
        )));
    }
    if buf.len() < need {
        return Err(SourceError::BadFrame(format!(
            "YUYV frame {width}x{height} needs {need} bytes, got {}",
            buf.len()
        )));
    }
    let mut out = vec![0u8; w * h * 3];
    let clamp = |v: i32| v.clamp(0, 255) as u8;
    for (src, dst) in buf[..need].chunks_exact(4).zip(out.chunks_exact_mut(6)) {
        let (y0, u, y1, v) = (
            src[0] as i32 - 16,
            src[1] as i32 - 128,
            src[2] as i32 - 16,
            src[3] as i32 - 128,
        );
        let (rv, guv, bu) = (409 * v, -100 * u - 208 * v, 516 * u);
        for (k, y) in [y0, y1].into_iter().enumerate() {
            let c = 298 * y + 128;
            dst[k * 3] = clamp((c + rv) >> 8);
            dst[k * 3 + 1] = clamp((c + guv) >> 8);
            dst[k * 3 + 2] = clamp((c + bu) >> 8);
        }
    }
    Ok(RgbImage::from_raw(width, height, out).expect("buffer sized for the frame"))
}

/// NV12 (a Y plane, then interleaved U,V at half resolution: Jetson CSI cameras, many UVC
/// cameras' raw mode) to RGB8, BT.601 limited range like `yuyv_to_rgb`.
pub fn nv12_to_rgb(buf: &[u8], width: u32, height: u32) -> Result<RgbImage, SourceError> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
        return Err(SourceError::BadFrame(format!(
            "NV12 frame {width}x{height}: width and height must be even and non-zero"
        )));
    }
    let luma = w
        .checked_mul(h)
        .ok_or_else(|| SourceError::BadFrame("NV12 size overflows".into()))?;
    let need = luma + luma / 2;
    if buf.len() < need {
        return Err(SourceError::BadFrame(format!(
            "NV12 frame {width}x{height} needs {need} bytes, got {}",
            buf.len()
        )));
    }
    let (ys, uv) = buf[..need].split_at(luma);
    let mut out = vec![0u8; luma * 3];
    let clamp = |v: i32| v.clamp(0, 255) as u8;
    for (row, dst_row) in out.chunks_exact_mut(w * 3).enumerate() {
        let y_row = &ys[row * w..][..w];
        let uv_row = &uv[(row / 2) * w..][..w];
        for (x, dst) in dst_row.chunks_exact_mut(3).enumerate() {
            let y = y_row[x] as i32 - 16;
            let (u, v) = (
                uv_row[x & !1] as i32 - 128,
                uv_row[(x & !1) + 1] as i32 - 128,
            );
            let c = 298 * y + 128;
            dst[0] = clamp((c + 409 * v) >> 8);
            dst[1] = clamp((c - 100 * u - 208 * v) >> 8);
            dst[2] = clamp((c + 516 * u) >> 8);
        }
    }
    Ok(RgbImage::from_raw(width, height, out).expect("buffer sized for the frame"))
}

/// MJPEG frame (one JPEG) to RGB8; corrupt or truncated data is a `BadFrame`.
pub fn mjpeg_to_rgb(buf: &[u8], max_pixels: u64) -> Result<RgbImage, SourceError> {
    crate::model::preprocess::decode_image(buf, "MJPEG frame", max_pixels)
        .map_err(|e| SourceError::BadFrame(e.to_string()))
}

/// Opens a device on demand and reopens it with exponential backoff after it fails. Each
/// failed attempt returns `Disconnected` so the pipeline can show it; the process never exits.
pub struct Reconnecting<F> {
    open: F,
    current: Option<Box<dyn FrameSource>>,
    backoff: Duration,
    min_backoff: Duration,
    max_backoff: Duration,
    next_try: Option<Instant>,
    pub reconnects: u64,
}

impl<F> Reconnecting<F>
where
    F: FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send,
{
    pub fn new(open: F, min_backoff: Duration, max_backoff: Duration) -> Self {
        Reconnecting {
            open,
            current: None,
            backoff: min_backoff,
            min_backoff,
            max_backoff,
            next_try: None,
            reconnects: 0,
        }
    }
}

impl<F> Reconnecting<F> {
    fn retry_later(&mut self) {
        self.next_try = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.max_backoff);
    }
}

impl<F> FrameSource for Reconnecting<F>
where
    F: FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send,
{
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        if self.current.is_none() {
            if let Some(t) = self.next_try {
                let now = Instant::now();
                if t > now {
                    std::thread::sleep(t - now);
                }
            }
            match (self.open)() {
                Ok(s) => {
                    if self.next_try.is_some() {
                        self.reconnects += 1;
                    }
                    self.current = Some(s);
                    self.next_try = None;
                }
                Err(SourceError::Config(m)) => return Err(SourceError::Config(m)),
                Err(e) => {
                    self.retry_later();
                    return Err(SourceError::Disconnected(e.reason()));
                }
            }
        }
        let src = self.current.as_mut().expect("opened above");
        match src.next_frame() {
            Ok(f) => {
                // Only a frame proves the device works: an open that fails at the first read
                // (a mode the camera refuses) keeps backing off.
                self.backoff = self.min_backoff;
                Ok(f)
            }
            Err(SourceError::BadFrame(m)) => Err(SourceError::BadFrame(m)),
            Err(e) => {
                self.current = None;
                self.retry_later();
                Err(SourceError::Disconnected(e.reason()))
            }
        }
    }
}

/// A frame source's settings (one `[source]` variant): its kind, the cargo feature it needs,
/// its own checks, and how it opens.
pub trait SourceSpec {
    /// `source.kind` as written in the file.
    fn kind(&self) -> &'static str;
    /// Opens the source (called only when [`SourceConfig::built`] passed).
    fn open(&self) -> Result<Box<dyn FrameSource>, SourceError>;
    /// The cargo feature it needs and whether this build has it (None: always built).
    fn feature(&self) -> Option<(&'static str, bool)> {
        None
    }
    /// Its own keys' checks (`check-config`, start-up).
    fn check(&self) -> Result<(), FieldError> {
        Ok(())
    }
}

/// Builds the source a configuration names (a source whose cargo feature is not in this build
/// answers with the one "built without feature" message).
pub fn open(cfg: &SourceConfig) -> anyhow::Result<Box<dyn FrameSource>> {
    use anyhow::Context;
    cfg.built()?;
    let spec = cfg.spec();
    spec.open()
        .with_context(|| format!("source.kind = \"{}\"", spec.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nv12_matches_yuyv_on_the_same_picture_and_checks_sizes() {
        // 4x2: one chroma pair per 2x2 block; the same Y/U/V as YUYV gives the same pixels.
        let y = [16u8, 82, 145, 235, 41, 110, 170, 200];
        let (u0, v0, u1, v1) = (90u8, 240u8, 54u8, 34u8);
        let nv12: Vec<u8> = y.iter().copied().chain([u0, v0, u1, v1]).collect();
        let yuyv = [
            y[0], u0, y[1], v0, y[2], u1, y[3], v1, y[4], u0, y[5], v0, y[6], u1, y[7], v1,
        ];
        let a = nv12_to_rgb(&nv12, 4, 2).unwrap();
        let b = yuyv_to_rgb(&yuyv, 4, 2).unwrap();
        assert_eq!(a.as_raw(), b.as_raw());
        // Pure red in BT.601 limited range (Y 81, U 90, V 240) comes out red.
        let red = nv12_to_rgb(&[81, 81, 81, 81, 90, 240], 2, 2).unwrap();
        let p = red.get_pixel(1, 1).0;
        assert!(p[0] > 250 && p[1] < 5 && p[2] < 5, "{p:?}");
        assert!(nv12_to_rgb(&nv12[..11], 4, 2).is_err());
        assert!(nv12_to_rgb(&nv12, 3, 2).is_err());
        assert!(nv12_to_rgb(&nv12, 4, 1).is_err());
        assert!(nv12_to_rgb(&nv12, u32::MAX, 2).is_err());
    }

    #[test]
    fn yuyv_grey_and_errors() {
        // Y=126 U=V=128 is mid grey in limited range.
        let buf = [126u8, 128, 126, 128].repeat(4 * 2 / 2);
        let img = yuyv_to_rgb(&buf, 4, 2).unwrap();
        assert!(
            img.pixels().all(|p| p.0 == [128, 128, 128]),
            "{:?}",
            img.get_pixel(0, 0)
        );
        assert!(yuyv_to_rgb(&buf[..5], 4, 2).is_err());
        assert!(yuyv_to_rgb(&buf, 3, 2).is_err());
        assert!(yuyv_to_rgb(&buf, u32::MAX, u32::MAX).is_err());
    }

    /// A camera that opens but refuses every read (a mode it does not support): the retry
    /// interval grows instead of staying at the minimum, and the reason is not prefixed twice.
    #[test]
    fn a_camera_failing_at_first_read_backs_off_and_says_it_once() {
        struct Refuses;
        impl FrameSource for Refuses {
            fn next_frame(&mut self) -> Result<Frame, SourceError> {
                Err(SourceError::Config("YUYV 640x480 not supported".into()))
            }
        }
        let mut sup = Reconnecting::new(
            || Ok(Box::new(Refuses) as Box<dyn FrameSource>),
            Duration::from_millis(10),
            Duration::from_millis(80),
        );
        let mut gaps = Vec::new();
        let mut last = Instant::now();
        for _ in 0..6 {
            match sup.next_frame() {
                Err(SourceError::Disconnected(m)) => {
                    assert_eq!(m, "YUYV 640x480 not supported");
                    let e = SourceError::Disconnected(m).to_string();
                    assert_eq!(e.matches("camera disconnected").count(), 1, "{e}");
                }
                other => panic!("{other:?}"),
            }
            gaps.push(last.elapsed());
            last = Instant::now();
        }
        // 0, 10, 20, 40, 80, 80 ms: growing, capped.
        assert!(gaps[4] >= Duration::from_millis(75), "{gaps:?}");
        assert!(gaps[5] >= Duration::from_millis(75), "{gaps:?}");
    }

    #[test]
    fn mjpeg_garbage_is_bad_frame() {
        assert!(matches!(
            mjpeg_to_rgb(&[0xFF, 0xD8, 0xFF, 0, 1, 2], 1 << 20),
            Err(SourceError::BadFrame(_))
        ));
        assert!(matches!(
            mjpeg_to_rgb(&[], 1 << 20),
            Err(SourceError::BadFrame(_))
        ));
    }
}
