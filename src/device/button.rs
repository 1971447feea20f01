//! GPIO push button (feature `gpio`): a line read through linux-embedded-hal `CdevPin`,
//! active low (or high), requested with the configured bias (the kernel's pull-up by default); each
//! debounced press toggles point-and-classify.

use crate::config::{Active, Bias};
use crate::pipeline::Shared;
use embedded_hal::digital::InputPin;
use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The button's GPIO line could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ButtonError {
    #[error("{} line {line}", chip.display())]
    Gpio {
        chip: PathBuf,
        line: u32,
        #[source]
        source: linux_embedded_hal::gpio_cdev::errors::Error,
    },
    #[error("button thread")]
    Thread(#[source] std::io::Error),
}

pub fn spawn(
    chip: &Path,
    line: u32,
    active: Active,
    bias: Bias,
    shared: Arc<Shared>,
) -> Result<(), ButtonError> {
    let gpio = |source| ButtonError::Gpio {
        chip: chip.into(),
        line,
        source,
    };
    let mut c = Chip::new(chip).map_err(gpio)?;
    let l = c.get_line(line).map_err(gpio)?;
    // gpio-cdev has no names for the bias bits; they are plain v1 ABI request flags.
    let level = match active {
        Active::Low => LineRequestFlags::INPUT | LineRequestFlags::ACTIVE_LOW,
        Active::High => LineRequestFlags::INPUT,
    };
    let flags = level.clone() | LineRequestFlags::from_bits_retain(bias.request_flag());
    let handle = match l.request(flags, 0, "dermcam-button") {
        Ok(h) => h,
        Err(e) if bias != Bias::AsIs => {
            // Kernels before 5.5 refuse bias flags: keep the button, say what it lacks.
            log::warn!(
                "button: {} line {line}: bias {} refused ({e}); using the line as it is (fit an external resistor)",
                chip.display(),
                bias.as_str()
            );
            l.request(level, 0, "dermcam-button").map_err(gpio)?
        }
        Err(e) => return Err(gpio(e)),
    };
    log::info!(
        "button: {} line {line}, active {}, bias {}",
        chip.display(),
        active.as_str(),
        bias.as_str()
    );
    let mut pin = CdevPin::new(handle).map_err(gpio)?;
    std::thread::Builder::new()
        .name("button".into())
        .spawn(move || {
            let mut was_down = false;
            let mut stable = 0u8;
            while !shared.is_shutdown() {
                let down = pin.is_high().unwrap_or(false);
                // 3 equal reads 10 ms apart = debounced.
                stable = if down == was_down { 0 } else { stable + 1 };
                if stable >= 3 {
                    was_down = down;
                    stable = 0;
                    if down {
                        shared.toggle_freeze();
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .map_err(ButtonError::Thread)?;
    Ok(())
}
