//! GPIO push button (feature `gpio`): a line read through linux-embedded-hal `CdevPin`,
//! active low with the kernel's pull-up; each debounced press toggles point-and-classify.

use crate::pipeline::Shared;
use embedded_hal::digital::InputPin;
use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub fn spawn(chip: &Path, line: u32, shared: Arc<Shared>) -> Result<(), String> {
    let mut c = Chip::new(chip).map_err(|e| format!("{}: {e}", chip.display()))?;
    let handle = c
        .get_line(line)
        .and_then(|l| {
            l.request(
                LineRequestFlags::INPUT | LineRequestFlags::ACTIVE_LOW,
                0,
                "dermcam-button",
            )
        })
        .map_err(|e| format!("{} line {line}: {e}", chip.display()))?;
    let mut pin =
        CdevPin::new(handle).map_err(|e| format!("{} line {line}: {e}", chip.display()))?;
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
        .map_err(|e| e.to_string())?;
    Ok(())
}
