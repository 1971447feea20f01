//! SPI TFT screen (feature `tft`; the only file that imports mipidsi): ST7789 or ILI9341 over
//! linux-embedded-hal `SpidevDevice` + `CdevPin`. mipidsi's SPI interface sends pixels through
//! a 4096-byte buffer, so no spidev transfer exceeds the kernel's default `bufsiz`.

use crate::config::{FieldError, check_size, fail, range};
use crate::screen::{Screen, ScreenError, ScreenSpec};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TftDriver {
    St7789,
    Ili9341,
}

/// `[screen] kind = "tft"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftScreenConfig {
    pub driver: TftDriver,
    #[serde(default = "default_spi")]
    pub spi: PathBuf,
    #[serde(default = "default_spi_hz")]
    pub spi_hz: u32,
    #[serde(default = "default_gpiochip")]
    pub gpiochip: PathBuf,
    pub dc_pin: u32,
    pub rst_pin: Option<u32>,
    pub backlight_pin: Option<u32>,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub rotation: u16,
    #[serde(default)]
    pub invert_colors: bool,
}

fn default_spi() -> PathBuf {
    "/dev/spidev0.0".into()
}
fn default_spi_hz() -> u32 {
    40_000_000
}
fn default_gpiochip() -> PathBuf {
    "/dev/gpiochip0".into()
}

impl ScreenSpec for TftScreenConfig {
    fn kind(&self) -> &'static str {
        "tft"
    }
    fn feature(&self) -> Option<(&'static str, bool)> {
        Some(("tft", cfg!(feature = "tft")))
    }
    fn check(&self) -> Result<(), FieldError> {
        check_size(self.width, self.height)?;
        if ![0, 90, 180, 270].contains(&self.rotation) {
            return fail(
                "screen.rotation",
                format!("{} not one of 0, 90, 180, 270", self.rotation),
            );
        }
        range("screen.spi_hz", self.spi_hz, 100_000, 125_000_000)?;
        range("screen.dc_pin", self.dc_pin, 0, 1023)?;
        range("screen.rst_pin", self.rst_pin.unwrap_or(0), 0, 1023)?;
        range(
            "screen.backlight_pin",
            self.backlight_pin.unwrap_or(0),
            0,
            1023,
        )
    }
    fn open(&self) -> Result<Box<dyn Screen>, ScreenError> {
        #[cfg(feature = "tft")]
        return Ok(Box::new(driver::TftScreen::open(self)?));
        #[cfg(not(feature = "tft"))]
        Err(ScreenError::NotBuilt(crate::config::NotBuilt::for_kind(
            "screen",
            self.kind(),
            "tft",
        )))
    }
}

#[cfg(feature = "tft")]
pub use driver::{SPI_CHUNK, TftScreen};

/// The panel driver (mipidsi over spidev + GPIO character device).
#[cfg(feature = "tft")]
mod driver {
    use super::{TftDriver, TftScreenConfig};
    use crate::screen::render::Canvas;
    use crate::screen::{Screen, ScreenError};
    use embedded_graphics::pixelcolor::{Rgb565, Rgb888};
    use embedded_hal::digital::OutputPin;
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
    use linux_embedded_hal::spidev::{SpiModeFlags, SpidevOptions};
    use linux_embedded_hal::{CdevPin, Delay, SpidevDevice};
    use mipidsi::Builder;
    use mipidsi::interface::SpiInterface;
    use mipidsi::models::{ILI9341Rgb565, Model, ST7789};
    use mipidsi::options::{ColorInversion, Orientation, Rotation};

    /// Largest single SPI transfer (bytes).
    pub const SPI_CHUNK: usize = 4096;

    /// A panel or bus fault, as text: mipidsi's errors are generic over the bus types and only
    /// `Debug`. Becomes `ScreenError::Device` at this module's boundary.
    #[derive(Debug)]
    struct TftFault(String);

    type Push = Box<dyn FnMut(&Canvas) -> Result<(), TftFault> + Send>;

    pub struct TftScreen {
        push: Push,
        width: u32,
        height: u32,
        device: String,
        _backlight: Option<CdevPin>,
    }

    fn out_pin(chip: &mut Chip, line: u32, label: &str, initial: u8) -> Result<CdevPin, TftFault> {
        let fault = |e: linux_embedded_hal::gpio_cdev::errors::Error| {
            TftFault(format!("GPIO line {line} ({label}): {e}"))
        };
        let handle = chip
            .get_line(line)
            .and_then(|l| l.request(LineRequestFlags::OUTPUT, initial, label))
            .map_err(fault)?;
        CdevPin::new(handle).map_err(fault)
    }

    fn pixels(canvas: &Canvas) -> impl Iterator<Item = Rgb565> + '_ {
        canvas
            .0
            .pixels()
            .map(|p| Rgb565::from(Rgb888::new(p[0], p[1], p[2])))
    }

    fn start<M>(
        model: M,
        di: SpiInterface<'static, SpidevDevice, CdevPin>,
        rst: Option<CdevPin>,
        w: u16,
        h: u16,
        orientation: Orientation,
        invert: bool,
    ) -> Result<Push, TftFault>
    where
        M: Model<ColorFormat = Rgb565> + Send + 'static,
    {
        let inversion = if invert {
            ColorInversion::Inverted
        } else {
            ColorInversion::Normal
        };
        let builder = Builder::new(model, di)
            .display_size(w, h)
            .orientation(orientation)
            .invert_colors(inversion);
        macro_rules! push {
            ($display:expr) => {{
                let mut d = $display;
                Ok(Box::new(move |c: &Canvas| {
                    d.set_pixels(0, 0, w - 1, h - 1, pixels(c))
                        .map_err(|e| TftFault(format!("{e:?}")))
                }) as Push)
            }};
        }
        match rst {
            Some(rst) => push!(
                builder
                    .reset_pin(rst)
                    .init(&mut Delay)
                    .map_err(|e| TftFault(format!("display init: {e:?}")))?
            ),
            None => push!(
                builder
                    .init(&mut Delay)
                    .map_err(|e| TftFault(format!("display init: {e:?}")))?
            ),
        }
    }

    impl TftScreen {
        pub fn open(cfg: &TftScreenConfig) -> Result<TftScreen, ScreenError> {
            let TftScreenConfig {
                driver,
                spi,
                spi_hz,
                gpiochip,
                dc_pin,
                rst_pin,
                backlight_pin,
                width,
                height,
                rotation,
                invert_colors,
            } = cfg;
            let device = spi.display().to_string();
            let err = |m: String| ScreenError::Device {
                device: device.clone(),
                message: m,
            };
            let mut dev = SpidevDevice::open(spi).map_err(|e| err(format!("{e:?}")))?;
            dev.configure(
                &SpidevOptions::new()
                    .bits_per_word(8)
                    .max_speed_hz(*spi_hz)
                    .mode(SpiModeFlags::SPI_MODE_0)
                    .build(),
            )
            .map_err(|e| err(e.to_string()))?;
            let mut chip =
                Chip::new(gpiochip).map_err(|e| err(format!("{}: {e}", gpiochip.display())))?;
            let fault = |f: TftFault| err(f.0);
            let dc = out_pin(&mut chip, *dc_pin, "dermcam-dc", 0).map_err(fault)?;
            let rst = rst_pin
                .map(|p| out_pin(&mut chip, p, "dermcam-rst", 1))
                .transpose()
                .map_err(fault)?;
            let mut backlight = backlight_pin
                .map(|p| out_pin(&mut chip, p, "dermcam-backlight", 1))
                .transpose()
                .map_err(fault)?;
            if let Some(b) = backlight.as_mut() {
                let _ = b.set_high();
            }
            // The interface's buffer lives as long as the screen (the whole process).
            let buffer: &'static mut [u8] = Box::leak(vec![0u8; SPI_CHUNK].into_boxed_slice());
            let di = SpiInterface::new(dev, dc, buffer);
            let rot = match rotation {
                90 => Rotation::Deg90,
                180 => Rotation::Deg180,
                270 => Rotation::Deg270,
                _ => Rotation::Deg0,
            };
            let (w, h) = (*width as u16, *height as u16);
            let push = match driver {
                TftDriver::St7789 => start(
                    ST7789,
                    di,
                    rst,
                    w,
                    h,
                    Orientation::new().rotate(rot),
                    *invert_colors,
                ),
                TftDriver::Ili9341 => start(
                    ILI9341Rgb565,
                    di,
                    rst,
                    w,
                    h,
                    Orientation::new().rotate(rot),
                    *invert_colors,
                ),
            }
            .map_err(fault)?;
            log::info!("screen: {driver:?} {width}x{height} on {device} at {spi_hz} Hz");
            Ok(TftScreen {
                push,
                width: *width,
                height: *height,
                device,
                _backlight: backlight,
            })
        }
    }

    impl Screen for TftScreen {
        fn present(&mut self, canvas: &Canvas) -> Result<(), ScreenError> {
            (self.push)(canvas).map_err(|f| ScreenError::Device {
                device: self.device.clone(),
                message: f.0,
            })
        }

        fn size(&self) -> (u32, u32) {
            (self.width, self.height)
        }
    }
}
