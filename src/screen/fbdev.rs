//! Linux framebuffer screen (feature `fbdev`): geometry from sysfs, pixels written row by row
//! with `pwrite` in the framebuffer's format (16 bpp RGB565 or 32 bpp XRGB8888, little endian).
//! The canvas is drawn at the framebuffer's resolution.

use crate::screen::{Screen, ScreenError, ScreenSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[screen] kind = "fbdev"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FbdevScreenConfig {
    #[serde(default = "default_fb")]
    pub device: PathBuf,
}

fn default_fb() -> PathBuf {
    "/dev/fb0".into()
}

impl ScreenSpec for FbdevScreenConfig {
    fn kind(&self) -> &'static str {
        "fbdev"
    }
    fn feature(&self) -> Option<(&'static str, bool)> {
        Some(("fbdev", cfg!(feature = "fbdev")))
    }
    fn open(&self) -> Result<Box<dyn Screen>, ScreenError> {
        #[cfg(feature = "fbdev")]
        return Ok(Box::new(driver::FbScreen::open(&self.device)?));
        #[cfg(not(feature = "fbdev"))]
        Err(ScreenError::NotBuilt(crate::config::NotBuilt::for_kind(
            "screen",
            self.kind(),
            "fbdev",
        )))
    }
}

#[cfg(feature = "fbdev")]
pub use driver::{Console, FbScreen, pack_row, parse_size};

/// The framebuffer driver.
#[cfg(feature = "fbdev")]
mod driver {
    use crate::screen::render::Canvas;
    use crate::screen::{Screen, ScreenError, pack_rgb565_le};
    use memmap2::MmapMut;
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::path::Path;

    pub struct FbScreen {
        /// The framebuffer memory, mapped shared. Through a mapping because DRM drivers' fbdev
        /// emulation (virtio-gpu, vc4 on a Pi with KMS, tegra) copies its shadow buffer to the display
        /// for the pages written through mmap (deferred I/O); on Debian's 6.1 kernel a write(2) to
        /// /dev/fb0 lands in the shadow buffer and is never shown (measured on the emulated board).
        map: MmapMut,
        width: u32,
        height: u32,
        bpp: u32,
        stride: usize,
        row: Vec<u8>,
        /// The console we silenced, held for its `Drop` (which restores it).
        _console: Option<Console>,
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

    /// Maps `height` rows of `stride` bytes; the mapping must hold every row we write.
    fn map_rows(file: &File, stride: usize, height: u32) -> std::io::Result<MmapMut> {
        let len = stride * height as usize;
        // SAFETY: a device (or, in tests, a private file) mapping we only write; nothing truncates it.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(file)? };
        if map.len() < len {
            return Err(std::io::Error::other(format!(
                "mapped {} of {len} bytes",
                map.len()
            )));
        }
        Ok(map)
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
            if stride < width as usize * bpp as usize / 8 {
                return Err(err(format!(
                    "stride {stride} is shorter than a {width}-pixel row"
                )));
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(device)
                .map_err(|e| err(e.to_string()))?;
            let map = map_rows(&file, stride, height).map_err(|e| err(format!("mmap: {e}")))?;
            let tty = Console::claim();
            log::info!("screen: {} {width}x{height} {bpp} bpp", device.display());
            Ok(FbScreen {
                map,
                width,
                height,
                bpp,
                stride,
                row: Vec::new(),
                _console: tty,
            })
        }
    }

    /// The kernel console on `/dev/tty1`, which draws on the same framebuffer: switched to graphics
    /// mode (KDSETMODE, as X and Weston do) so fbcon stops painting over us when a getty or a kernel
    /// message writes to it, with its cursor and blanking off. Needs write access to /dev/tty1
    /// (group tty; the unit grants it). Restored on drop.
    pub struct Console(File);

    impl Console {
        fn claim() -> Option<Console> {
            let tty = match OpenOptions::new().write(true).open("/dev/tty1") {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("/dev/tty1: {e}: the console may draw over the screen");
                    return None;
                }
            };
            let _ = (&tty).write_all(b"\x1b[?25l\x1b[9;0]\x1b[14;0]");
            // SAFETY: KDSETMODE takes an integer argument; the descriptor is open.
            if unsafe { libc::ioctl(tty.as_raw_fd(), KDSETMODE, KD_GRAPHICS) } != 0 {
                log::warn!(
                    "/dev/tty1: KDSETMODE graphics: {}: the console may draw over the screen",
                    std::io::Error::last_os_error()
                );
            }
            Some(Console(tty))
        }
    }

    impl Drop for Console {
        fn drop(&mut self) {
            // SAFETY: as above.
            unsafe { libc::ioctl(self.0.as_raw_fd(), KDSETMODE, KD_TEXT) };
            let _ = (&self.0).write_all(b"\x1b[?25h");
        }
    }

    // <linux/kd.h>
    const KDSETMODE: libc::c_ulong = 0x4B3A;
    const KD_TEXT: libc::c_int = 0;
    const KD_GRAPHICS: libc::c_int = 1;

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
                let at = y * self.stride;
                self.map[at..at + self.row.len()].copy_from_slice(&self.row);
            }
            Ok(())
        }

        fn size(&self) -> (u32, u32) {
            (self.width, self.height)
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
            file.set_len(32).unwrap();
            let mut fb = FbScreen {
                map: map_rows(&file, 16, 2).unwrap(),
                width: 4,
                height: 2,
                bpp: 16,
                stride: 16,
                row: Vec::new(),
                _console: None,
            };
            let mut c = Canvas::new(4, 2);
            c.0.put_pixel(3, 1, image::Rgb([0, 0, 255]));
            fb.present(&c).unwrap();
            drop(fb);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(&bytes[16 + 6..16 + 8], &[0x1F, 0x00]);
        }
    }
}
