//! The `[button]` section: the GPIO push button.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ButtonConfig {
    /// GPIO chip and line of a push button (feature `gpio`); active low with pull-up.
    pub gpiochip: Option<PathBuf>,
    pub line: Option<u32>,
    /// Enter on stdin freezes / releases the frame.
    pub stdin: bool,
}
