//! `models_dir/active.json`: which fleet bundle runs, what it replaced, what was refused.

use super::UpdateError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `models_dir/active.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Active {
    /// Folder names under `models_dir`.
    pub current: Option<String>,
    pub previous: Option<String>,
    /// Set once `current` started and passed its self-test on this device.
    pub confirmed: bool,
    /// Starts of `current` that have not confirmed yet.
    pub attempts: u32,
    /// The archive sha256 of `current`.
    pub sha256: Option<String>,
    /// Archives rolled back on this device (newest last, at most 16): a retained announcement
    /// of one is refused, so a bundle that crashes the appliance cannot come back in a loop.
    #[serde(default)]
    pub rolled_back: Vec<String>,
    /// The announcement version of `current` (0: none, the configured bundle).
    #[serde(default)]
    pub version: u64,
    /// The highest version ever accepted here; it never goes down (not even on a rollback),
    /// so a replayed older announcement is refused for good.
    #[serde(default)]
    pub max_version: u64,
}

impl Active {
    pub fn read(models_dir: &Path) -> Active {
        std::fs::read(models_dir.join("active.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn write(&self, models_dir: &Path) -> Result<(), UpdateError> {
        let path = models_dir.join("active.json");
        let body = serde_json::to_vec_pretty(self).expect("serialisable");
        crate::storage::write_atomic(&path, &body)
            .map(|_| ())
            .map_err(|source| UpdateError::Io { path, source })
    }
}
