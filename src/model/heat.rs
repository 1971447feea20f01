//! The class-activation heat map as a picture: the model's coarse grid scaled up (bilinear) to
//! the input size and coloured black → red → yellow → white, for the web result page and
//! captures. The screen does not show it (too small to read at arm's length).

use crate::model::classifier::HeatMap;
use image::{Rgb, RgbImage};

/// The heat map as an RGB image of `size` x `size`.
pub fn to_image(h: &HeatMap, size: u32) -> RgbImage {
    let (gw, gh) = (h.width.max(1), h.height.max(1));
    let at = |x: usize, y: usize| h.values[y.min(gh - 1) * gw + x.min(gw - 1)];
    RgbImage::from_fn(size, size, |x, y| {
        // Sample at pixel centres, in grid units (cell centres at i + 0.5).
        let fx = ((x as f32 + 0.5) * gw as f32 / size as f32 - 0.5).max(0.0);
        let fy = ((y as f32 + 0.5) * gh as f32 / size as f32 - 0.5).max(0.0);
        let (x0, y0) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
        let top = at(x0, y0) * (1.0 - tx) + at(x0 + 1, y0) * tx;
        let bottom = at(x0, y0 + 1) * (1.0 - tx) + at(x0 + 1, y0 + 1) * tx;
        colour(top * (1.0 - ty) + bottom * ty)
    })
}

fn colour(v: f32) -> Rgb<u8> {
    let c = |t: f32| (t.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
    Rgb([c(3.0 * v), c(3.0 * v - 1.0), c(3.0 * v - 2.0)])
}

/// PNG bytes of the 224 x 224 heat map.
pub fn png(h: &HeatMap) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    to_image(h, 224)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_cell_is_bright_and_cold_cells_dark() {
        let h = HeatMap {
            width: 3,
            height: 3,
            values: vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        };
        let img = to_image(&h, 90);
        let hot = img.get_pixel(45, 45);
        assert!(hot.0.iter().all(|&c| c >= 220), "{hot:?}");
        assert_eq!(img.get_pixel(2, 2), &Rgb([0, 0, 0]));
        // Halfway between the hot centre and a cold edge cell centre: red, not yet yellow.
        let mid = img.get_pixel(30, 45);
        assert!(mid[0] > 100 && mid[2] == 0, "{mid:?}");
    }
}
