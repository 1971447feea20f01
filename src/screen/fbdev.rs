//! Linux framebuffer screen (feature `fbdev`): geometry from sysfs, pixels written row by row
//! with `pwrite` in the framebuffer's format (16 bpp RGB565 or 32 bpp XRGB8888, little endian).
//! The canvas is drawn at the framebuffer's resolution.

use crate::screen::render::Canvas;
use crate::screen::{Screen, ScreenError, pack_rgb565_le};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub struct FbScreen {
    device: PathBuf,
    file: File,
    width: u32,
    height: u32,
    bpp: u32,
    stride: usize,
    row: Vec<u8>,
    /// We hid the console cursor and must restore it.
    tty: bool,
}

fn sysfs(dev: &Path, attr: &str) -> Result<String, ScreenError> {
    let name = dev.file_name().and_then(|n| n.to_str()).unwrap_or("fb0");
    let p = Path::new("/sys/class/graphics").join(name).join(attr);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| ScreenError::Device {
            device: p.display().to_string(),
            message: e.to_string(),
        })
}

/// Parse sysfs `virtual_size` ("800,480").
pub fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(',')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// Convert one row of RGB888 into the framebuffer's pixel format.
pub fn pack_row(rgb: &[u8], bpp: u32, out: &mut Vec<u8>) {
    match bpp {
        16 => pack_rgb565_le(rgb, out),
        _ => {
            out.clear();
            for p in rgb.chunks_exact(3) {
                out.extend_from_slice(&[p[2], p[1], p[0], 0xFF]);
            }
        }
    }
}

impl FbScreen {
    pub fn open(device: &Path) -> Result<FbScreen, ScreenError> {
        let err = |m: String| ScreenError::Device {
            device: device.display().to_string(),
            message: m,
        };
        let (width, height) = parse_size(&sysfs(device, "virtual_size")?)
            .ok_or_else(|| err("cannot parse virtual_size".into()))?;
        let bpp: u32 = sysfs(device, "bits_per_pixel")?
            .parse()
            .map_err(|_| err("bad bits_per_pixel".into()))?;
        if bpp != 16 && bpp != 32 {
            return Err(err(format!("{bpp} bits per pixel unsupported (16 or 32)")));
        }
        let stride: usize = sysfs(device, "stride")?
            .parse()
            .map_err(|_| err("bad stride".into()))?;
        let file = OpenOptions::new()
            .write(true)
            .open(device)
            .map_err(|e| err(e.to_string()))?;
        // The kernel console draws on the same framebuffer: hide its cursor and turn off
        // blanking / powersave while the app owns the screen (needs write access to /dev/tty1,
        // e.g. group tty; the systemd unit grants it). Restored on drop.
        let tty = match std::fs::write("/dev/tty1", "\x1b[?25l\x1b[9;0]\x1b[14;0]") {
            Ok(()) => true,
            Err(e) => {
                log::warn!("/dev/tty1: {e}: console cursor and blanking left as they are");
                false
            }
        };
        log::info!("screen: {} {width}x{height} {bpp} bpp", device.display());
        Ok(FbScreen {
            device: device.into(),
            file,
            width,
            height,
            bpp,
            stride,
            row: Vec::new(),
            tty,
        })
    }
}

impl Screen for FbScreen {
    fn present(&mut self, canvas: &Canvas) -> Result<(), ScreenError> {
        let w = canvas.0.width().min(self.width) as usize;
        for (y, row) in canvas
            .0
            .as_raw()
            .chunks_exact(canvas.0.width() as usize * 3)
            .take(self.height as usize)
            .enumerate()
        {
            pack_row(&row[..w * 3], self.bpp, &mut self.row);
            self.file
                .write_all_at(&self.row, (y * self.stride) as u64)
                .map_err(|e| ScreenError::Device {
                    device: self.device.display().to_string(),
                    message: e.to_string(),
                })?;
        }
        Ok(())
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }
}

impl Drop for FbScreen {
    fn drop(&mut self) {
        if self.tty {
            let _ = std::fs::write("/dev/tty1", "\x1b[?25h");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_and_packs_32bpp() {
        assert_eq!(parse_size("800,480\n".trim()), Some((800, 480)));
        assert_eq!(parse_size("garbage"), None);
        let mut out = Vec::new();
        pack_row(&[10, 20, 30], 32, &mut out);
        assert_eq!(out, vec![30, 20, 10, 255]);
        pack_row(&[255, 0, 0], 16, &mut out);
        assert_eq!(out, vec![0x00, 0xF8]);
    }

    #[test]
    fn writes_rows_at_stride_into_a_file_backed_framebuffer() {
        let dir = std::env::temp_dir().join(format!("dermcam-fb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fb");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut fb = FbScreen {
            device: path.clone(),
            file,
            width: 4,
            height: 2,
            bpp: 16,
            stride: 16,
            row: Vec::new(),
            tty: false,
        };
        let mut c = Canvas::new(4, 2);
        c.0.put_pixel(3, 1, image::Rgb([0, 0, 255]));
        fb.present(&c).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[16 + 6..16 + 8], &[0x1F, 0x00]);
    }
}
