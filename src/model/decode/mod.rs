//! Image decoding with limits (file size, pixels, decode budget, JPEG scans, corrupt entropy
//! data): bytes or a file -> an RGB image, or a clear error. Every input path (CLI, camera
//! snapshots, uploads, updates' self-test samples) goes through here.

use image::{ImageFormat, RgbImage};

use std::io::Cursor;
use std::path::Path;

/// Decoded pixels above this are refused (decompression-bomb guard); configurable by callers.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read: {source}")]
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
    #[error(
        "{what}: {width}x{height} {kind} needs {need_mb} MB to decode, over the decode budget of {budget_mb} MB"
    )]
    OverBudget {
        what: String,
        width: u32,
        height: u32,
        kind: String,
        need_mb: u64,
        budget_mb: u64,
    },
    #[error("{what}: image is empty (0 pixels)")]
    Empty { what: String },
    #[error("{what}: an animated PNG ({frames} frames): send one still photo of the lesion")]
    Animated { what: String, frames: u32 },
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

/// Decoding may use at most this many bytes per allowed pixel (`max_pixels`), counted for the
/// actual format: the decoder's own buffer at the image's bytes per pixel, the RGB8 result and
/// the copy an EXIF rotation makes. 160 MB at the default 40 M pixels.
pub const DECODE_BYTES_PER_PIXEL: u64 = 4;

fn needs_copy(o: image::metadata::Orientation) -> bool {
    use image::metadata::Orientation::*;
    matches!(o, Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH)
}

/// Decode JPEG/PNG bytes to RGB8, applying EXIF orientation (phone photos), refusing images
/// whose decoded size exceeds `max_pixels`, or whose decoding would need more memory than
/// `DECODE_BYTES_PER_PIXEL x max_pixels` for their actual format, before allocating them.
/// PNGs (any bit depth, palette, alpha) are decoded row by row straight into RGB8: a 16-bit
/// RGBA PNG needs 3 bytes per pixel, not 8 + 3.
pub fn decode_image(bytes: &[u8], what: &str, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let format =
        sniff_format(bytes).ok_or_else(|| ImageError::UnsupportedFormat { what: what.into() })?;
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills missing scan data with grey; refuse instead of classifying it.
        return Err(ImageError::Decode {
            what: what.into(),
            message: "JPEG data ends before its end-of-image marker (truncated)".into(),
        });
    }
    let budget = max_pixels
        .saturating_mul(DECODE_BYTES_PER_PIXEL)
        .max(1 << 20);
    let size_check = |width: u32, height: u32| {
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
        Ok(pixels)
    };
    let budget_check = |width: u32, height: u32, kind: String, need: u64| {
        if need > budget {
            return Err(ImageError::OverBudget {
                what: what.into(),
                width,
                height,
                kind,
                need_mb: need.div_ceil(1 << 20),
                budget_mb: budget >> 20,
            });
        }
        Ok(())
    };
    if format == ImageFormat::Png {
        return decode_png(bytes, what, budget, size_check, budget_check);
    }
    decode_jpeg(bytes, what, size_check, budget_check)
}

mod jpeg;
use jpeg::decode_jpeg;
pub use jpeg::{JpegLayout, JpegLayoutError, MAX_JPEG_SCANS, jpeg_layout};

fn decode_png(
    bytes: &[u8],
    what: &str,
    budget: u64,
    size_check: impl Fn(u32, u32) -> Result<u64, ImageError>,
    budget_check: impl Fn(u32, u32, String, u64) -> Result<(), ImageError>,
) -> Result<RgbImage, ImageError> {
    let dec_err = |e: png::DecodingError| ImageError::Decode {
        what: what.into(),
        message: e.to_string(),
    };
    let mut dec = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: budget.min(usize::MAX as u64) as usize,
        },
    );
    // 16-bit samples stripped to 8, palettes and low bit depths expanded: at most 4 bytes per
    // pixel come out of the decoder, one row at a time.
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(dec_err)?;
    let info = reader.info();
    // An APNG's default image may be one its animation never shows, and a viewer shows the
    // frames: which one a clinician meant is unknowable, so refuse rather than guess.
    if let Some(ac) = info.animation_control {
        return Err(ImageError::Animated {
            what: what.into(),
            frames: ac.num_frames,
        });
    }
    let (width, height, interlaced) = (info.width, info.height, info.interlaced);
    let source_kind = format!("PNG {:?} {}-bit", info.color_type, info.bit_depth as u8);
    let orientation = info
        .exif_metadata
        .as_deref()
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let pixels = size_check(width, height)?;
    let samples = reader.output_color_type().0.samples();
    // Interlaced images need the whole (8-bit) frame before de-interlacing.
    let frame = if interlaced {
        pixels * samples as u64
    } else {
        0
    };
    let rotate = if needs_copy(orientation) {
        pixels * 3
    } else {
        0
    };
    budget_check(width, height, source_kind, pixels * 3 + frame + rotate)?;
    let mut out = vec![0u8; pixels as usize * 3];
    read_png_rows(&mut reader, frame, &mut out, width as usize * 3, what)?;
    let rgb = RgbImage::from_raw(width, height, out).ok_or_else(|| ImageError::Decode {
        what: what.into(),
        message: "row sizes do not match the image size".into(),
    })?;
    Ok(oriented(rgb, orientation))
}

/// The PNG's pixels into `out` (RGB8, `row_bytes` a row): row by row, or for an interlaced
/// image through a whole frame of `frame` bytes.
fn read_png_rows(
    reader: &mut png::Reader<Cursor<&[u8]>>,
    frame: u64,
    out: &mut [u8],
    row_bytes: usize,
    what: &str,
) -> Result<(), ImageError> {
    let dec_err = |e: png::DecodingError| ImageError::Decode {
        what: what.into(),
        message: e.to_string(),
    };
    let samples = reader.output_color_type().0.samples();
    if reader.info().interlaced {
        let mut buf = vec![
            0u8;
            reader
                .output_buffer_size()
                .unwrap_or(usize::MAX)
                .min(frame as usize)
        ];
        let out_info = reader.next_frame(&mut buf).map_err(dec_err)?;
        for (src, dst) in buf
            .chunks(out_info.line_size)
            .zip(out.chunks_exact_mut(row_bytes))
        {
            row_to_rgb(samples, src, dst);
        }
    } else {
        let mut rows = out.chunks_exact_mut(row_bytes);
        while let Some(row) = reader.next_row().map_err(dec_err)? {
            let Some(dst) = rows.next() else { break };
            row_to_rgb(samples, row.data(), dst);
        }
        if rows.next().is_some() {
            return Err(ImageError::Decode {
                what: what.into(),
                message: "PNG data ends before the last row".into(),
            });
        }
    }
    Ok(())
}

/// Transparent pixels are composited over white, the page background every browser and viewer
/// shows a PNG on: a fully transparent image is blank white (the quality gate's "too bright"),
/// never the colours its invisible pixels happen to hold.
pub const ALPHA_BACKGROUND: u8 = 255;

/// `c` over `ALPHA_BACKGROUND` with alpha `a` (rounded).
fn over_background(c: u8, a: u8) -> u8 {
    let (c, a, b) = (c as u32, a as u32, ALPHA_BACKGROUND as u32);
    ((c * a + b * (255 - a) + 127) / 255) as u8
}

/// One decoded PNG row (8-bit grey, grey + alpha, RGB or RGBA: `samples` per pixel) into RGB8,
/// alpha composited over the background.
fn row_to_rgb(samples: usize, src: &[u8], dst: &mut [u8]) {
    match samples {
        1 => dst
            .chunks_exact_mut(3)
            .zip(src)
            .for_each(|(d, &g)| d.fill(g)),
        2 => dst
            .chunks_exact_mut(3)
            .zip(src.chunks_exact(2))
            .for_each(|(d, s)| d.fill(over_background(s[0], s[1]))),
        3 => dst.copy_from_slice(&src[..dst.len()]),
        _ => dst
            .chunks_exact_mut(3)
            .zip(src.chunks_exact(4))
            .for_each(|(d, s)| {
                for k in 0..3 {
                    d[k] = over_background(s[k], s[3]);
                }
            }),
    }
}

/// `rgb` with the EXIF orientation applied (no copy when there is none).
fn oriented(rgb: RgbImage, orientation: image::metadata::Orientation) -> RgbImage {
    if orientation == image::metadata::Orientation::NoTransforms {
        return rgb;
    }
    let mut img = image::DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    img.into_rgb8()
}

/// Largest image file read (a 40 M-pixel JPEG is ~30 MB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Read an image file: regular files only (a FIFO, `/dev/zero` or a terminal is refused
/// without blocking), at most `MAX_FILE_BYTES`.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    crate::storage::read_small_file(path, MAX_FILE_BYTES).map_err(|source| ImageError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub fn load_image(path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let bytes = read_image_file(path)?;
    decode_image(&bytes, &path.display().to_string(), max_pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn png_of(img: image::DynamicImage) -> Vec<u8> {
        let mut png = Vec::new();
        img.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        png
    }

    /// Reliability IV, row 2: alpha is composited, not dropped. A fully transparent image whose
    /// hidden pixels are a dark lesion colour decodes to the white a viewer shows.
    #[test]
    fn alpha_is_composited_over_white() {
        let hidden = image::RgbaImage::from_pixel(64, 48, image::Rgba([90, 40, 30, 0]));
        let rgb = decode_image(&png_of(hidden.into()), "t.png", DEFAULT_MAX_PIXELS).unwrap();
        assert!(rgb.pixels().all(|p| p.0 == [255, 255, 255]));
        let half = image::RgbaImage::from_pixel(4, 4, image::Rgba([0, 100, 200, 128]));
        let rgb = decode_image(&png_of(half.into()), "h.png", DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [127, 177, 227]);
        let opaque = image::RgbaImage::from_pixel(4, 4, image::Rgba([10, 20, 30, 255]));
        let rgb = decode_image(&png_of(opaque.into()), "o.png", DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rgb.get_pixel(3, 3).0, [10, 20, 30]);
        let la = image::GrayAlphaImage::from_pixel(4, 4, image::LumaA([0, 0]));
        let rgb = decode_image(&png_of(la.into()), "la.png", DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rgb.get_pixel(1, 1).0, [255, 255, 255]);
    }

    /// An APNG is refused with a clear reason: its default image need not be a frame it shows.
    #[test]
    fn animated_png_is_refused() {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, 8, 8);
            enc.set_color(png::ColorType::Rgb);
            enc.set_animated(2, 0).unwrap();
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[200u8; 8 * 8 * 3]).unwrap();
            w.write_image_data(&[20u8; 8 * 8 * 3]).unwrap();
            w.finish().unwrap();
        }
        let e = decode_image(&bytes, "a.png", DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(e, ImageError::Animated { frames: 2, .. }), "{e}");
        assert!(e.to_string().contains("animated PNG (2 frames)"), "{e}");
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
