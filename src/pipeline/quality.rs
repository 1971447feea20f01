//! Image-quality gate: frames that are too dark, too bright or blurred are not classified;
//! the screen says why.

use crate::config::PipelineConfig;
use image::RgbImage;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    /// Mean luma, 0-255.
    pub luma: f32,
    /// Variance of the 4-neighbour Laplacian of luma on a 160-px-wide copy.
    pub sharpness: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum QualityIssue {
    TooDark,
    TooBright,
    Blurred,
}

impl QualityIssue {
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
    let small = image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle);
    let y: Vec<f32> = small
        .pixels()
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect();
    let luma = y.iter().sum::<f32>() / y.len() as f32;
    let (w, h) = (w as usize, h as usize);
    let mut sum = 0f64;
    let mut sum2 = 0f64;
    let mut n = 0f64;
    for r in 1..h.saturating_sub(1) {
        for c in 1..w - 1 {
            let i = r * w + c;
            let l = (y[i - 1] + y[i + 1] + y[i - w] + y[i + w] - 4.0 * y[i]) as f64;
            sum += l;
            sum2 += l * l;
            n += 1.0;
        }
    }
    let sharpness = if n > 0.0 {
        (sum2 / n - (sum / n).powi(2)) as f32
    } else {
        0.0
    };
    Quality { luma, sharpness }
}

pub fn check(q: &Quality, cfg: &PipelineConfig) -> Option<QualityIssue> {
    if q.luma < cfg.min_luma {
        Some(QualityIssue::TooDark)
    } else if q.luma > cfg.max_luma {
        Some(QualityIssue::TooBright)
    } else if q.sharpness < cfg.min_sharpness {
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
    }
}
