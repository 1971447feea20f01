//! The `[capture]` section: saved frames and their retention.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Save frozen frames + result JSON (off by default: privacy).
    pub enabled: bool,
    pub dir: PathBuf,
    /// Keep at most this many captures (oldest removed first).
    pub max_files: usize,
    /// And at most this many bytes of captures; 0 = no byte limit.
    pub max_bytes: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            enabled: false,
            dir: "/var/lib/dermcam/captures".into(),
            max_files: 500,
            max_bytes: 1 << 30,
        }
    }
}
