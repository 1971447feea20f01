//! Where results go besides the screen and the web UI (both read the pipeline's live state):
//! the per-frame log, frozen-frame captures with retention, and the fleet's result sink (which
//! hands results to the fleet link in `crate::fleet`).

pub mod capture;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod log;
