//! Image decoding (with size limits) and the one preprocessing function every path uses:
//! (RGB image, manifest input spec) -> normalised NCHW tensor. Must match
//! `models/dermtrain/data.py::preprocess_pil` (see the parity test).

use crate::model::manifest::{InputSpec, ResizePolicy};
use fast_image_resize::{
    FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images::Image, images::ImageRef,
};
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

/// Most scans a JPEG may have: encoders write 1 (baseline) or about 10 (progressive); each
/// scan is a pass over every coefficient, so 100 of them cost seconds of CPU per image.
pub const MAX_JPEG_SCANS: usize = 32;

/// What the marker segments of a JPEG say, read before any decoder allocates anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegLayout {
    pub width: u32,
    pub height: u32,
    pub components: u32,
    /// SOF2/6/10/14: every coefficient is kept in memory until the last scan.
    pub progressive: bool,
    pub scans: usize,
}

/// Zero bytes in a row that no camera's entropy-coded data holds.
const MAX_ZERO_RUN: usize = 256;

fn longest_zero_run(b: &[u8]) -> usize {
    b.split(|&x| x != 0).map(<[u8]>::len).max().unwrap_or(0)
}

/// Walk a JPEG's markers (entropy-coded data skipped as the standard defines it: FF is
/// stuffed as FF 00 or is a restart marker) up to the end-of-image marker.
pub fn jpeg_layout(bytes: &[u8]) -> Result<JpegLayout, String> {
    let mut i = 2; // after SOI
    let mut frame: Option<(u32, u32, u32, bool)> = None;
    let mut scans = 0usize;
    let seg_len = |i: usize| -> Result<usize, String> {
        bytes
            .get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
            .filter(|&n| n >= 2)
            .ok_or_else(|| "marker segment cut short".to_string())
    };
    loop {
        // Fill bytes (FF FF ...) may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&m)) = (bytes.get(i), bytes.get(i + 1)) else {
            return Err(format!("no marker at byte {i}"));
        };
        i += 2;
        match m {
            0xD9 => break,
            0xD0..=0xD7 | 0x01 => continue,
            0xC0..=0xCF if m != 0xC4 && m != 0xC8 && m != 0xCC => {
                let n = seg_len(i)?;
                let seg = bytes.get(i + 2..i + n).ok_or("frame header cut short")?;
                if seg.len() < 6 {
                    return Err("frame header cut short".into());
                }
                if frame.is_some() {
                    return Err("more than one frame header".into());
                }
                let height = u16::from_be_bytes([seg[1], seg[2]]) as u32;
                let width = u16::from_be_bytes([seg[3], seg[4]]) as u32;
                let progressive = matches!(m, 0xC2 | 0xC6 | 0xCA | 0xCE);
                frame = Some((width, height, seg[5] as u32, progressive));
                i += n;
            }
            0xDA => {
                let n = seg_len(i)?;
                i += n;
                scans += 1;
                if scans > MAX_JPEG_SCANS {
                    return Err(format!("more than {MAX_JPEG_SCANS} scans"));
                }
                // Entropy-coded data up to the next marker that is not a stuffed byte or RSTn.
                loop {
                    let Some(off) = bytes
                        .get(i..)
                        .and_then(|r| r.iter().position(|&b| b == 0xFF))
                    else {
                        return Err("scan data runs past the end of the file".into());
                    };
                    // Huffman-coded photo data is close to random; a long run of zero bytes is
                    // wiped data, which a decoder turns into a plausible-looking pattern.
                    let zeros = longest_zero_run(&bytes[i..i + off]);
                    if zeros >= MAX_ZERO_RUN {
                        return Err(format!(
                            "scan data holds a run of {zeros} zero bytes (wiped or damaged)"
                        ));
                    }
                    i += off;
                    match bytes.get(i + 1) {
                        Some(0x00) | Some(0xD0..=0xD7) => i += 2,
                        Some(0xFF) => i += 1,
                        Some(_) => break,
                        None => return Err("scan data runs past the end of the file".into()),
                    }
                }
            }
            _ => i += seg_len(i)?,
        }
    }
    let (width, height, components, progressive) = frame.ok_or("no frame header")?;
    if scans == 0 {
        return Err("no scan".into());
    }
    Ok(JpegLayout {
        width,
        height,
        components,
        progressive,
        scans,
    })
}

fn decode_jpeg(
    bytes: &[u8],
    what: &str,
    size_check: impl Fn(u32, u32) -> Result<u64, ImageError>,
    budget_check: impl Fn(u32, u32, String, u64) -> Result<(), ImageError>,
) -> Result<RgbImage, ImageError> {
    use zune_core::colorspace::ColorSpace;
    let dec_err = |message: String| ImageError::Decode {
        what: what.into(),
        message,
    };
    let layout = jpeg_layout(bytes).map_err(&dec_err)?;
    let (width, height) = (layout.width, layout.height);
    let pixels = size_check(width, height)?;
    // What the decoder really holds: the RGB output, for progressive files every component's
    // coefficients (2 bytes each, on MCU-padded planes) until the last scan, the rotated copy.
    let padded = (width.div_ceil(16) as u64 * 16) * (height.div_ceil(16) as u64 * 16);
    let coefficients = if layout.progressive {
        2 * layout.components as u64 * padded
    } else {
        // Baseline: one MCU row of samples per component.
        layout.components as u64 * (width.div_ceil(16) as u64 * 16) * 16 * 2
    };
    let kind = format!(
        "{} JPEG, {} component(s), {} scan(s)",
        if layout.progressive {
            "progressive"
        } else {
            "baseline"
        },
        layout.components,
        layout.scans
    );
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(width as usize)
        .set_max_height(height as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder
        .decode_headers()
        .map_err(|e| dec_err(format!("{e:?}")))?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) {
        return Err(dec_err(format!(
            "colour space {:?} cannot be decoded to RGB",
            decoder.input_colorspace()
        )));
    }
    let orientation = decoder
        .exif()
        .and_then(|x| image::metadata::Orientation::from_exif_chunk(x))
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let rotate = if needs_copy(orientation) {
        pixels * 3
    } else {
        0
    };
    budget_check(width, height, kind, pixels * 3 + coefficients + rotate)?;
    let out = decoder.decode().map_err(|e| dec_err(format!("{e:?}")))?;
    let rgb = RgbImage::from_raw(width, height, out)
        .ok_or_else(|| dec_err("decoded size does not match the frame header".into()))?;
    if orientation == image::metadata::Orientation::NoTransforms {
        return Ok(rgb);
    }
    let mut img = image::DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

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
    let row_px = width as usize;
    let mut out = vec![0u8; pixels as usize * 3];
    let convert = |src: &[u8], dst: &mut [u8]| match samples {
        1 => dst
            .chunks_exact_mut(3)
            .zip(src)
            .for_each(|(d, &g)| d.fill(g)),
        2 => dst
            .chunks_exact_mut(3)
            .zip(src.chunks_exact(2))
            .for_each(|(d, s)| d.fill(s[0])),
        3 => dst.copy_from_slice(&src[..dst.len()]),
        _ => dst
            .chunks_exact_mut(3)
            .zip(src.chunks_exact(4))
            .for_each(|(d, s)| d.copy_from_slice(&s[..3])),
    };
    if interlaced {
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
            .zip(out.chunks_exact_mut(row_px * 3))
        {
            convert(src, dst);
        }
    } else {
        let mut rows = out.chunks_exact_mut(row_px * 3);
        while let Some(row) = reader.next_row().map_err(dec_err)? {
            let Some(dst) = rows.next() else { break };
            convert(row.data(), dst);
        }
        if rows.next().is_some() {
            return Err(ImageError::Decode {
                what: what.into(),
                message: "PNG data ends before the last row".into(),
            });
        }
    }
    let rgb = RgbImage::from_raw(width, height, out).ok_or_else(|| ImageError::Decode {
        what: what.into(),
        message: "row sizes do not match the image size".into(),
    })?;
    if orientation == image::metadata::Orientation::NoTransforms {
        return Ok(rgb);
    }
    let mut img = image::DynamicImage::ImageRgb8(rgb);
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

/// Largest image file read (a 40 M-pixel JPEG is ~30 MB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Read an image file: regular files only (a FIFO, `/dev/zero` or a terminal is refused
/// without blocking), at most `MAX_FILE_BYTES`.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ImageError::Io {
        path: path.display().to_string(),
        source,
    };
    let invalid = |m: String| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, m));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "{} bytes: larger than {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(format!(
            "grew past {MAX_FILE_BYTES} bytes while read"
        )));
    }
    Ok(bytes)
}

pub fn load_image(path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let bytes = read_image_file(path)?;
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
