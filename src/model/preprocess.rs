//! The one preprocessing function every path uses: (RGB image, manifest input spec) ->
//! normalised NCHW tensor. Must match `models/dermtrain/data.py::preprocess_pil` (see the parity
//! test). Decoding lives in `decode.rs` (re-exported here for the callers).

pub use crate::model::decode::{
    DECODE_BYTES_PER_PIXEL, DEFAULT_MAX_PIXELS, ImageError, JpegLayout, MAX_FILE_BYTES,
    MAX_JPEG_SCANS, decode_image, jpeg_is_complete, jpeg_layout, load_image, read_image_file,
    sniff_format,
};
use crate::model::manifest::{InputSpec, ResizePolicy};
use fast_image_resize::{
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
};
use image::RgbImage;

/// A float tensor in NCHW layout with batch 1.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub data: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl InputTensor {
    pub fn shape(&self) -> [usize; 4] {
        [1, self.channels, self.height, self.width]
    }

    /// Horizontal mirror (test-time flip averaging).
    pub fn flipped(&self) -> InputTensor {
        let mut out = self.clone();
        for row in out.data.chunks_exact_mut(self.width) {
            row.reverse();
        }
        out
    }
}

/// Source box (left, top, width, height) that the resize reads; same formula as `crop_box` in
/// the toolchain.
pub fn crop_box(width: u32, height: u32, spec: &InputSpec) -> (f64, f64, f64, f64) {
    let (w, h) = (width as f64, height as f64);
    match spec.resize {
        ResizePolicy::Squash => (0.0, 0.0, w, h),
        ResizePolicy::CenterCrop { crop_fraction } => {
            let target = spec.width as f64 / spec.height as f64;
            let (cw, ch) = if w / h > target {
                let ch = h * crop_fraction;
                (ch * target, ch)
            } else {
                let cw = w * crop_fraction;
                (cw, cw / target)
            };
            ((w - cw) / 2.0, (h - ch) / 2.0, cw, ch)
        }
    }
}

/// Crop + bilinear resize to the model's input size (8-bit RGB), as PIL's
/// `Image.resize((w, h), BILINEAR, box=...)` does.
pub fn resize_for_model(img: &RgbImage, spec: &InputSpec) -> RgbImage {
    let (left, top, cw, ch) = crop_box(img.width(), img.height(), spec);
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("RgbImage buffer always matches its dimensions");
    let mut dst = Image::new(spec.width, spec.height, PixelType::U8x3);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(left, top, cw, ch);
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .expect("source and destination pixel types match");
    RgbImage::from_raw(spec.width, spec.height, dst.into_vec())
        .expect("resizer output has the requested size")
}

/// Normalise an already-resized RGB8 image into an NCHW tensor.
pub fn normalize(resized: &RgbImage, spec: &InputSpec) -> InputTensor {
    let (w, h) = (resized.width() as usize, resized.height() as usize);
    let plane = w * h;
    // One table per channel: (v/255 - mean)/std for every byte value; computed exactly as the
    // toolchain does in float32.
    let gains = match spec.colour_constancy {
        Some(crate::model::manifest::ColourConstancy::ShadesOfGray { p }) => {
            shades_of_gray_gains(resized, p)
        }
        None => [1.0; 3],
    };
    let mut lut = [[0f32; 256]; 3];
    for c in 0..3 {
        for v in 0..256 {
            let x = if gains[c] == 1.0 {
                v as f32
            } else {
                (v as f32 * gains[c]).min(255.0)
            };
            lut[c][v] = (x / 255.0 - spec.mean[c]) / spec.std[c];
        }
    }
    let mut data = vec![0f32; 3 * plane];
    let (r, rest) = data.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in resized.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
    InputTensor {
        data,
        channels: 3,
        height: h,
        width: w,
    }
}

/// Bilinear (convolution) resize with SIMD: the screen and the quality gate must cost far less
/// than inference (`image`'s own resize took several ms per camera frame).
pub fn resize_rgb(frame: &RgbImage, w: u32, h: u32) -> RgbImage {
    use fast_image_resize::{
        FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image as FirImage,
        images::ImageRef,
    };
    let src = ImageRef::new(
        frame.width(),
        frame.height(),
        frame.as_raw(),
        PixelType::U8x3,
    )
    .expect("buffer matches size");
    let mut dst = FirImage::new(w, h, PixelType::U8x3);
    Resizer::new()
        .resize(
            &src,
            &mut dst,
            &ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        )
        .expect("same pixel type");
    RgbImage::from_raw(w, h, dst.into_vec()).expect("resizer output has the requested size")
}

/// Shades-of-Gray channel gains: the p-norm of each channel, scaled to their mean (the same
/// float64 arithmetic as the toolchain's `data.shades_of_gray_gains`).
pub fn shades_of_gray_gains(img: &RgbImage, p: f64) -> [f32; 3] {
    let mut acc = [0f64; 3];
    for px in img.as_raw().chunks_exact(3) {
        for c in 0..3 {
            acc[c] += (px[c] as f64).powf(p);
        }
    }
    let n = (img.width() as f64 * img.height() as f64).max(1.0);
    let norm = acc.map(|a| (a / n).powf(1.0 / p));
    let mean = norm.iter().sum::<f64>() / 3.0;
    norm.map(|v| (mean / v.max(1e-6)) as f32)
}

/// The preprocessing: a pure function of (image, input spec).
pub fn preprocess(img: &RgbImage, spec: &InputSpec) -> InputTensor {
    normalize(&resize_for_model(img, spec), spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(w: u32, h: u32, resize: ResizePolicy) -> InputSpec {
        InputSpec {
            width: w,
            height: h,
            channels: "RGB".into(),
            layout: "NCHW".into(),
            resize,
            interpolation: "bilinear".into(),
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            colour_constancy: None,
        }
    }

    /// A colour cast is undone: a grey card under warm light comes out grey, and the gains
    /// match the toolchain's (tests/parity/sog.json, from `data.shades_of_gray_gains`).
    #[test]
    fn shades_of_gray_removes_a_cast_and_matches_python() {
        let warm = RgbImage::from_fn(64, 64, |x, y| {
            let v = 60 + ((x * 7 + y * 3) % 90) as u8;
            image::Rgb([(v as f32 * 1.3) as u8, v, (v as f32 * 0.7) as u8])
        });
        let g = shades_of_gray_gains(&warm, 6.0);
        assert!(g[0] < 0.85 && g[2] > 1.2, "{g:?}");
        let mut s = spec(64, 64, ResizePolicy::Squash);
        s.colour_constancy = Some(crate::model::manifest::ColourConstancy::ShadesOfGray { p: 6.0 });
        let t = normalize(&warm, &s);
        // Back to 0..1 per channel: the three channel means are now within 2 %.
        let means: Vec<f32> = (0..3)
            .map(|c| {
                let plane = &t.data[c * 4096..(c + 1) * 4096];
                plane.iter().map(|v| v * s.std[c] + s.mean[c]).sum::<f32>() / 4096.0
            })
            .collect();
        let spread =
            means.iter().cloned().fold(0f32, f32::max) - means.iter().cloned().fold(1f32, f32::min);
        assert!(spread < 0.02, "{means:?}");
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/sog.json"),
            )
            .unwrap(),
        )
        .unwrap();
        for (file, want) in reference["gains"].as_object().unwrap() {
            let img = load_image(
                &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/samples")
                    .join(file),
                DEFAULT_MAX_PIXELS,
            )
            .unwrap();
            let got = shades_of_gray_gains(&img, 6.0);
            for c in 0..3 {
                let w = want[c].as_f64().unwrap() as f32;
                // Same pixels except decoder rounding (libjpeg vs zune-jpeg): a fraction of a %.
                assert!((got[c] - w).abs() < 5e-3, "{file}: {got:?} vs {want}");
            }
        }
    }

    #[test]
    fn crop_box_centres_the_largest_square() {
        let s = spec(224, 224, ResizePolicy::CenterCrop { crop_fraction: 1.0 });
        assert_eq!(crop_box(640, 480, &s), (80.0, 0.0, 480.0, 480.0));
        assert_eq!(crop_box(300, 400, &s), (0.0, 50.0, 300.0, 300.0));
        let s = spec(224, 224, ResizePolicy::Squash);
        assert_eq!(crop_box(640, 480, &s), (0.0, 0.0, 640.0, 480.0));
    }

    #[test]
    fn uniform_image_normalises_to_constants() {
        let img = RgbImage::from_pixel(64, 48, image::Rgb([255, 0, 128]));
        let t = preprocess(
            &img,
            &spec(32, 32, ResizePolicy::CenterCrop { crop_fraction: 1.0 }),
        );
        assert_eq!(t.shape(), [1, 3, 32, 32]);
        let r = (1.0 - 0.485) / 0.229;
        assert!(t.data[..1024].iter().all(|v| (v - r).abs() < 1e-6));
        assert!(
            t.data[1024..2048]
                .iter()
                .all(|v| (v + 0.456 / 0.224).abs() < 1e-6)
        );
    }

    #[test]
    fn flip_mirrors_rows() {
        let t = InputTensor {
            data: vec![1., 2., 3., 4., 5., 6.],
            channels: 1,
            height: 2,
            width: 3,
        };
        assert_eq!(t.flipped().data, vec![3., 2., 1., 6., 5., 4.]);
    }
}
