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

/// The second copy of `active.json`, written after it: a write torn by a failing card leaves
/// at most one of the two unreadable.
const BACKUP: &str = "active.json.1";

impl Active {
    /// The recorded state. A missing file is a device that never installed an update; one copy
    /// torn or unreadable is repaired from the other (the higher `max_version` wins, so a torn
    /// file can never lower it); both unreadable is an error: the update state is unknown, and
    /// guessing (defaults, `max_version` 0) would re-open replays of old signed releases.
    pub fn load(models_dir: &Path) -> Result<Active, UpdateError> {
        let parse = |name: &str| -> Option<Result<Active, String>> {
            let path = models_dir.join(name);
            match crate::storage::read_small_file(&path, 1 << 20) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => Some(Err(format!("{}: {e}", path.display()))),
                Ok(b) => {
                    Some(serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", path.display())))
                }
            }
        };
        match (parse("active.json"), parse(BACKUP)) {
            (None, None) => Ok(Active::default()),
            (Some(Ok(a)), Some(Ok(b))) => Ok(Active {
                max_version: a.max_version.max(b.max_version),
                ..a
            }),
            (Some(Ok(a)), other) => {
                if let Some(Err(e)) = other {
                    log::warn!("model update state: {e}; the main copy is intact");
                }
                Ok(a)
            }
            (main, Some(Ok(b))) => {
                if let Some(Err(e)) = main {
                    log::warn!("model update state: {e}; using its second copy");
                }
                Ok(b)
            }
            (Some(Err(e)), _) | (None, Some(Err(e))) => Err(UpdateError::State(format!(
                "{e} (and no readable second copy): model updates are refused until an operator checks {} and removes it",
                models_dir.display()
            ))),
        }
    }

    /// `load`, for the paths that only need a best guess (which folder runs, what to prune):
    /// an unknown state reads as "no fleet bundle" and is logged. Every decision that protects
    /// against replays (`Updater::check`) uses `load`.
    pub fn read(models_dir: &Path) -> Active {
        Active::load(models_dir).unwrap_or_else(|e| {
            log::error!("{e}");
            Active::default()
        })
    }

    /// The main copy is the commit point; the second copy failing is logged (the next write
    /// or `load`'s repair brings it back), never reported as a failed state change.
    pub fn write(&self, models_dir: &Path) -> Result<(), UpdateError> {
        let body = serde_json::to_vec_pretty(self).expect("serialisable");
        let path = models_dir.join("active.json");
        crate::storage::write_atomic(&path, &body)
            .map_err(|source| UpdateError::Io { path, source })?;
        if let Err(e) = crate::storage::write_atomic(&models_dir.join(BACKUP), &body) {
            log::warn!("model update state: second copy {BACKUP} not written: {e}");
        }
        Ok(())
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

    /// Architecture III / reliability: a torn `active.json` is repaired from its second copy,
    /// never read as "nothing installed" (which re-opened replays of older signed releases).
    #[test]
    fn a_torn_state_file_never_lowers_max_version() {
        let dir = std::env::temp_dir().join(format!("dermcam-active-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = Active {
            current: Some("effl0-v2-aaaa".into()),
            version: 2,
            max_version: 2,
            confirmed: true,
            ..Default::default()
        };
        a.write(&dir).unwrap();
        let full = std::fs::read(dir.join("active.json")).unwrap();
        std::fs::write(dir.join("active.json"), &full[..full.len() / 2]).unwrap();
        assert_eq!(Active::load(&dir).unwrap(), a);
        // The other copy torn instead.
        a.write(&dir).unwrap();
        std::fs::write(dir.join(BACKUP), b"{\"cur").unwrap();
        assert_eq!(Active::load(&dir).unwrap(), a);
        // Both torn: an error, not defaults.
        std::fs::write(dir.join("active.json"), b"{\"cur").unwrap();
        let e = Active::load(&dir).unwrap_err().to_string();
        assert!(e.contains("refused until an operator"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
