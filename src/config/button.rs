//! The `[button]` section: the GPIO push button.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ButtonConfig {
    /// GPIO chip and line of a push button (feature `gpio`); active low with pull-up.
    pub gpiochip: Option<PathBuf>,
    pub line: Option<u32>,
    /// Enter on stdin freezes / releases the frame.
    pub stdin: bool,
}
