//! JPEG: the marker walk that bounds scans and spots wiped entropy data before any decoder
//! allocates, then zune-jpeg in strict mode (a warning is an error).

use super::{ImageError, needs_copy};
use image::RgbImage;

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

/// What is wrong with a JPEG's structure (found before decoding).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegLayoutError {
    #[error("marker segment cut short")]
    SegmentCut,
    #[error("no marker at byte {0}")]
    NoMarker(usize),
    #[error("frame header cut short")]
    FrameCut,
    #[error("more than one frame header")]
    TwoFrames,
    #[error("more than {MAX_JPEG_SCANS} scans")]
    TooManyScans,
    #[error("scan data runs past the end of the file")]
    ScanPastEnd,
    #[error("scan data holds a run of {0} zero bytes (wiped or damaged)")]
    Wiped(usize),
    #[error("no frame header")]
    NoFrame,
    #[error("no scan")]
    NoScan,
}

/// Walk a JPEG's markers (entropy-coded data skipped as the standard defines it: FF is
/// stuffed as FF 00 or is a restart marker) up to the end-of-image marker.
pub fn jpeg_layout(bytes: &[u8]) -> Result<JpegLayout, JpegLayoutError> {
    let mut i = 2; // after SOI
    let mut frame: Option<Frame> = None;
    let mut scans = 0usize;
    loop {
        // Fill bytes (FF FF ...) may precede a marker.
        while bytes.get(i) == Some(&0xFF) && bytes.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&m)) = (bytes.get(i), bytes.get(i + 1)) else {
            return Err(JpegLayoutError::NoMarker(i));
        };
        i += 2;
        match m {
            0xD9 => break,
            0xD0..=0xD7 | 0x01 => continue,
            0xC0..=0xCF if m != 0xC4 && m != 0xC8 && m != 0xCC => {
                let n = seg_len(bytes, i)?;
                let f = read_frame(bytes, i, n, m)?;
                if frame.is_some() {
                    return Err(JpegLayoutError::TwoFrames);
                }
                frame = Some(f);
                i += n;
            }
            0xDA => {
                i += seg_len(bytes, i)?;
                scans += 1;
                if scans > MAX_JPEG_SCANS {
                    return Err(JpegLayoutError::TooManyScans);
                }
                i = entropy_data_end(bytes, i)?;
            }
            _ => i += seg_len(bytes, i)?,
        }
    }
    let f = frame.ok_or(JpegLayoutError::NoFrame)?;
    if scans == 0 {
        return Err(JpegLayoutError::NoScan);
    }
    Ok(JpegLayout {
        width: f.width,
        height: f.height,
        components: f.components,
        progressive: f.progressive,
        scans,
    })
}

/// What a start-of-frame segment says.
struct Frame {
    width: u32,
    height: u32,
    components: u32,
    progressive: bool,
}

/// The length of the marker segment at `i` (it counts its own two bytes).
fn seg_len(bytes: &[u8], i: usize) -> Result<usize, JpegLayoutError> {
    bytes
        .get(i..i + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .filter(|&n| n >= 2)
        .ok_or(JpegLayoutError::SegmentCut)
}

/// The frame header (SOFn marker `m`) whose segment of length `n` starts at `i`.
fn read_frame(bytes: &[u8], i: usize, n: usize, m: u8) -> Result<Frame, JpegLayoutError> {
    let seg = bytes.get(i + 2..i + n).ok_or(JpegLayoutError::FrameCut)?;
    if seg.len() < 6 {
        return Err(JpegLayoutError::FrameCut);
    }
    Ok(Frame {
        height: u16::from_be_bytes([seg[1], seg[2]]) as u32,
        width: u16::from_be_bytes([seg[3], seg[4]]) as u32,
        components: seg[5] as u32,
        progressive: matches!(m, 0xC2 | 0xC6 | 0xCA | 0xCE),
    })
}

/// Where the entropy-coded data from `i` ends: at the next marker that is not a stuffed byte
/// or RSTn.
fn entropy_data_end(bytes: &[u8], mut i: usize) -> Result<usize, JpegLayoutError> {
    loop {
        let Some(off) = bytes
            .get(i..)
            .and_then(|r| r.iter().position(|&b| b == 0xFF))
        else {
            return Err(JpegLayoutError::ScanPastEnd);
        };
        // Huffman-coded photo data is close to random; a long run of zero bytes is wiped
        // data, which a decoder turns into a plausible-looking pattern.
        let zeros = longest_zero_run(&bytes[i..i + off]);
        if zeros >= MAX_ZERO_RUN {
            return Err(JpegLayoutError::Wiped(zeros));
        }
        i += off;
        match bytes.get(i + 1) {
            Some(0x00) | Some(0xD0..=0xD7) => i += 2,
            Some(0xFF) => i += 1,
            Some(_) => return Ok(i),
            None => return Err(JpegLayoutError::ScanPastEnd),
        }
    }
}

pub(super) fn decode_jpeg(
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
    let layout = jpeg_layout(bytes).map_err(|e| dec_err(e.to_string()))?;
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
