//! Where results go besides the screen and the web UI (both read the pipeline's live state):
//! the per-frame log, and crash-safe capture/upload storage with retention.

pub mod log;
pub mod storage;
