//! The `[button]` section: the GPIO push button.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ButtonConfig {
    /// GPIO chip and line of a push button (feature `gpio`).
    pub gpiochip: Option<PathBuf>,
    pub line: Option<u32>,
    /// Which level means pressed: `low` (the default: a button to GND with a pull-up) or
    /// `high` (a button to 3V3 with a pull-down, or a board's own power-button line).
    pub active: Active,
    /// The line's bias, requested from the kernel with the line: `pull-up` (the default: a
    /// button to GND needs it, and a Pi's GPIO17 resets to pull-down), `pull-down`, `disable`
    /// (an external resistor) or `as-is` (whatever firmware or device tree set).
    pub bias: Bias,
    /// Enter on stdin freezes / releases the frame.
    pub stdin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Active {
    #[default]
    Low,
    High,
}

impl Active {
    pub fn as_str(self) -> &'static str {
        match self {
            Active::Low => "low",
            Active::High => "high",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    #[default]
    PullUp,
    PullDown,
    Disable,
    AsIs,
}

impl Bias {
    /// The GPIO character device's v1 request flag (linux/gpio.h `GPIOHANDLE_REQUEST_BIAS_*`,
    /// Linux 5.5+); 0 for `as-is`.
    pub fn request_flag(self) -> u32 {
        match self {
            Bias::PullUp => 1 << 5,
            Bias::PullDown => 1 << 6,
            Bias::Disable => 1 << 7,
            Bias::AsIs => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Bias::PullUp => "pull-up",
            Bias::PullDown => "pull-down",
            Bias::Disable => "disable",
            Bias::AsIs => "as-is",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_defaults_to_pull_up_and_maps_to_the_kernel_flags() {
        let c: ButtonConfig = toml::from_str("gpiochip = \"/dev/gpiochip0\"\nline = 17").unwrap();
        assert_eq!(c.bias, Bias::PullUp);
        assert_eq!(c.active, Active::Low);
        assert_eq!(c.bias.request_flag(), 0x20);
        let c: ButtonConfig = toml::from_str("active = \"high\"").unwrap();
        assert_eq!(c.active, Active::High);
        let c: ButtonConfig = toml::from_str("bias = \"as-is\"").unwrap();
        assert_eq!(c.bias.request_flag(), 0);
        assert!(toml::from_str::<ButtonConfig>("bias = \"up\"").is_err());
        // The Pi preset's button (GPIO17 to GND) gets the pull-up its comment promises.
        let preset = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/rpi4-st7789.toml"),
        )
        .unwrap();
        let table: toml::Table = toml::from_str(&preset).unwrap();
        let button: ButtonConfig = table["button"].clone().try_into().unwrap();
        assert_eq!(button.line, Some(17));
        assert_eq!(button.bias, Bias::PullUp);
    }
}
