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

/// Archives refused for good on this device, newest last; the oldest go beyond this many.
pub const MAX_REFUSED: usize = 64;

/// `models_dir/refused.json`: lower-case sha256s of archives refused for good (signature,
/// sha256, archive, self-test), so a retained announcement of one is not downloaded and tested
/// again after every restart. Unreadable or missing: empty (the worst case is one more try).
pub fn read_refused(models_dir: &Path) -> Vec<String> {
    crate::storage::read_small_file(&models_dir.join("refused.json"), 64 << 10)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Record `refused` (trimmed to the newest `MAX_REFUSED`).
pub fn write_refused(models_dir: &Path, refused: &mut Vec<String>) -> Result<(), UpdateError> {
    let excess = refused.len().saturating_sub(MAX_REFUSED);
    refused.drain(..excess);
    let path = models_dir.join("refused.json");
    let body = serde_json::to_vec(refused).expect("serialisable");
    std::fs::create_dir_all(models_dir).map_err(|source| UpdateError::Io {
        path: models_dir.into(),
        source,
    })?;
    crate::storage::write_atomic(&path, &body)
        .map(|_| ())
        .map_err(|source| UpdateError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reliability IV, row 5: refusals survive a restart, in one (lower-case) spelling, and
    /// the list stays bounded.
    #[test]
    fn refusals_are_persisted_canonical_and_bounded() {
        let dir = std::env::temp_dir().join(format!("dermcam-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read_refused(&dir).is_empty());
        let mut v = vec!["AB".repeat(32)];
        write_refused(&dir, &mut v).unwrap();
        assert_eq!(read_refused(&dir), vec!["ab".repeat(32)]);
        let mut many: Vec<String> = (0..100).map(|i| format!("{i:064x}")).collect();
        write_refused(&dir, &mut many).unwrap();
        let back = read_refused(&dir);
        assert_eq!(back.len(), MAX_REFUSED);
        assert_eq!(back.last().unwrap(), &format!("{:064x}", 99));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
