//! Image-quality gate: frames that are too dark, too bright or blurred are not classified;
//! the screen says why.

use crate::config::PipelineConfig;
use image::RgbImage;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    /// Mean luma, 0-255.
    pub luma: f32,
    /// Share of pixels with luma >= 250 (blown out).
    pub clipped: f32,
    /// Variance of the 4-neighbour Laplacian of luma on a 160-px-wide copy.
    pub sharpness: f32,
    /// The smallest variance of the second derivative along one direction (horizontal,
    /// vertical, both diagonals) on the same copy: low along the direction of a motion blur.
    pub directional_sharpness: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityIssue {
    TooDark,
    TooBright,
    Blurred,
}

impl QualityIssue {
    /// The machine name (`"quality_issue"` in JSON).
    pub fn as_str(&self) -> &'static str {
        match self {
            QualityIssue::TooDark => "too_dark",
            QualityIssue::TooBright => "too_bright",
            QualityIssue::Blurred => "blurred",
        }
    }

    /// What the screen tells the user.
    pub fn advice(&self) -> &'static str {
        match self {
            QualityIssue::TooDark => "More light",
            QualityIssue::TooBright => "Too bright",
            QualityIssue::Blurred => "Hold steady",
        }
    }
}

pub fn measure(img: &RgbImage) -> Quality {
    // Work on a small grey copy: the gate must cost far less than inference.
    let w = 160u32.min(img.width()).max(1);
    let h = ((img.height() as u64 * w as u64 / img.width().max(1) as u64) as u32).max(1);
    let small = crate::model::preprocess::resize_rgb(img, w, h);
    let y: Vec<f32> = small
        .pixels()
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect();
    let luma = y.iter().sum::<f32>() / y.len() as f32;
    let clipped = y.iter().filter(|&&v| v >= 250.0).count() as f32 / y.len() as f32;
    let (w, h) = (w as usize, h as usize);
    // Running sums for the Laplacian and the four directional second derivatives.
    let mut sum = [0f64; 5];
    let mut sum2 = [0f64; 5];
    let mut n = 0f64;
    for r in 1..h.saturating_sub(1) {
        for c in 1..w - 1 {
            let i = r * w + c;
            let centre = 2.0 * y[i];
            let d = [
                y[i - 1] + y[i + 1] - centre,
                y[i - w] + y[i + w] - centre,
                y[i - w - 1] + y[i + w + 1] - centre,
                y[i - w + 1] + y[i + w - 1] - centre,
            ];
            let all = [d[0] + d[1], d[0], d[1], d[2], d[3]];
            for (k, v) in all.iter().enumerate() {
                sum[k] += *v as f64;
                sum2[k] += (*v as f64) * (*v as f64);
            }
            n += 1.0;
        }
    }
    let var = |k: usize| {
        if n > 0.0 {
            (sum2[k] / n - (sum[k] / n).powi(2)) as f32
        } else {
            0.0
        }
    };
    Quality {
        luma,
        clipped,
        sharpness: var(0),
        directional_sharpness: (1..5).map(var).fold(f32::INFINITY, f32::min),
    }
}

pub fn check(q: &Quality, cfg: &PipelineConfig) -> Option<QualityIssue> {
    if q.luma < cfg.min_luma {
        Some(QualityIssue::TooDark)
    } else if q.luma > cfg.max_luma || q.clipped > cfg.max_clipped {
        Some(QualityIssue::TooBright)
    } else if q.sharpness < cfg.min_sharpness
        || q.directional_sharpness < cfg.min_directional_sharpness
    {
        Some(QualityIssue::Blurred)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dark_bright_blurred_and_good() {
        let cfg = PipelineConfig::default();
        let dark = RgbImage::from_pixel(320, 240, image::Rgb([10, 10, 10]));
        assert_eq!(check(&measure(&dark), &cfg), Some(QualityIssue::TooDark));
        let bright = RgbImage::from_pixel(320, 240, image::Rgb([250, 250, 250]));
        assert_eq!(
            check(&measure(&bright), &cfg),
            Some(QualityIssue::TooBright)
        );
        let flat = RgbImage::from_pixel(320, 240, image::Rgb([120, 100, 90]));
        assert_eq!(check(&measure(&flat), &cfg), Some(QualityIssue::Blurred));
        let checker = RgbImage::from_fn(320, 240, |x, y| {
            if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([200, 150, 120])
            } else {
                image::Rgb([60, 40, 30])
            }
        });
        assert_eq!(check(&measure(&checker), &cfg), None);
        // Mean luma under the ceiling, but a third of the frame blown out (a flash).
        let flash = RgbImage::from_fn(320, 240, |x, y| {
            if x < 120 {
                image::Rgb([255, 255, 255])
            } else if (x / 4 + y / 4) % 2 == 0 {
                image::Rgb([200, 150, 120])
            } else {
                image::Rgb([60, 40, 30])
            }
        });
        let q = measure(&flash);
        assert!(
            q.luma < cfg.max_luma && q.clipped > cfg.max_clipped,
            "{q:?}"
        );
        assert_eq!(check(&q, &cfg), Some(QualityIssue::TooBright));
    }

    /// A horizontal motion blur keeps vertical detail (the Laplacian stays over its floor) but
    /// wipes horizontal detail: only the directional measure catches it.
    #[test]
    fn motion_blur_is_caught_by_the_directional_measure() {
        let cfg = PipelineConfig::default();
        // Fine texture in both directions (a hash, not a pattern a blur could keep).
        let sharp = RgbImage::from_fn(320, 240, |x, y| {
            let v = ((x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) >> 7) % 160 + 40;
            image::Rgb([v as u8, (v * 3 / 4) as u8, (v / 2) as u8])
        });
        assert_eq!(check(&measure(&sharp), &cfg), None);
        // Box blur 24 px wide along x, rows untouched.
        let blurred = RgbImage::from_fn(320, 240, |x, y| {
            let mut acc = [0u32; 3];
            for dx in 0..24 {
                let p = sharp.get_pixel((x + dx).min(319), y);
                for c in 0..3 {
                    acc[c] += p[c] as u32;
                }
            }
            image::Rgb(acc.map(|a| (a / 24) as u8))
        });
        let q = measure(&blurred);
        assert!(q.sharpness >= cfg.min_sharpness, "{q:?}");
        assert!(
            q.directional_sharpness < cfg.min_directional_sharpness,
            "{q:?}"
        );
        assert_eq!(check(&q, &cfg), Some(QualityIssue::Blurred));
    }
}
