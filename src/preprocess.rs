//! Image decoding (with size limits) and the one preprocessing function every path uses:
//! (RGB image, manifest input spec) -> normalised NCHW tensor. Must match
//! `models/dermtrain/data.py::preprocess_pil` (see the parity test).

use crate::manifest::{InputSpec, ResizePolicy};
use fast_image_resize::{
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
};
use image::{ImageDecoder, ImageFormat, ImageReader, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Decoded pixels above this are refused (decompression-bomb guard); configurable by callers.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: not a JPEG or PNG image")]
    UnsupportedFormat { what: String },
    #[error("{what}: {width}x{height} = {pixels} pixels exceeds the limit of {max} pixels")]
    TooLarge {
        what: String,
        width: u32,
        height: u32,
        pixels: u64,
        max: u64,
    },
    #[error("{what}: corrupt or truncated image: {message}")]
    Decode { what: String, message: String },
    #[error("{what}: image is empty (0 pixels)")]
    Empty { what: String },
}

/// The accepted containers, decided from the bytes (magic numbers), never the file name.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// A JPEG is complete when an end-of-image marker (FF D9) follows its last start-of-scan
/// (FF DA). Inside entropy-coded data FF is always stuffed (FF 00) or a restart marker, so an
/// FF D9 there can only be the real end; an embedded EXIF thumbnail's EOI comes before the SOS.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_sos, last_eoi), (Some(s), Some(e)) if e > s)
}

/// Decode JPEG/PNG bytes to RGB8, applying EXIF orientation (phone photos), refusing
/// images whose decoded size exceeds `max_pixels` before allocating them.
pub fn decode_image(bytes: &[u8], what: &str, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let format =
        sniff_format(bytes).ok_or_else(|| ImageError::UnsupportedFormat { what: what.into() })?;
    let dec_err = |e: image::ImageError| ImageError::Decode {
        what: what.into(),
        message: e.to_string(),
    };
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills missing scan data with grey; refuse instead of classifying it.
        return Err(ImageError::Decode {
            what: what.into(),
            message: "JPEG data ends before its end-of-image marker (truncated)".into(),
        });
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    // RGBA16 is the widest buffer a JPEG/PNG decode can need: 8 bytes per pixel.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(dec_err)?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels == 0 {
        return Err(ImageError::Empty { what: what.into() });
    }
    if pixels > max_pixels {
        return Err(ImageError::TooLarge {
            what: what.into(),
            width,
            height,
            pixels,
            max: max_pixels,
        });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(dec_err)?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

pub fn load_image(path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.display().to_string(),
        source,
    })?;
    decode_image(&bytes, &path.display().to_string(), max_pixels)
}

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
    let mut lut = [[0f32; 256]; 3];
    for c in 0..3 {
        for v in 0..256 {
            lut[c][v] = ((v as f32) / 255.0 - spec.mean[c]) / spec.std[c];
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

    #[test]
    fn bad_bytes_are_clear_errors() {
        let e = decode_image(b"GIF89a....", "x.gif", DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(e.to_string().contains("not a JPEG or PNG"), "{e}");
        let e = decode_image(
            &[0xFF, 0xD8, 0xFF, 0xE0, 0, 16],
            "t.jpg",
            DEFAULT_MAX_PIXELS,
        )
        .unwrap_err();
        assert!(e.to_string().contains("t.jpg: corrupt or truncated"), "{e}");
    }

    #[test]
    fn decompression_bomb_is_refused_before_decoding() {
        let img = RgbImage::new(400, 300);
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let e = decode_image(&png, "big.png", 100_000).unwrap_err();
        assert!(
            matches!(
                e,
                ImageError::TooLarge {
                    pixels: 120_000,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            decode_image(&png, "ok.png", 120_000).unwrap().dimensions(),
            (400, 300)
        );
    }
}
