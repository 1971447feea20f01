//! Where results go besides the screen and the web UI (both read the pipeline's live state):
//! the per-frame log, frozen-frame captures with retention, and crash-safe storage (atomic
//! writes) shared with saved uploads.

pub mod capture;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod log;
pub mod storage;
