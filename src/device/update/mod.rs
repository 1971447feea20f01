//! Signed model updates with rollback.
//!
//! A retained message on `<prefix>/fleet/model` announces a bundle archive:
//! `{"name", "url", "sha256", "signature"}` (made by `dermcam bundle sign`). The device
//! downloads it (size-capped), checks sha256 and the ed25519 signature against
//! `fleet.updates.public_key`, unpacks it into a staging folder, self-tests it (the bundle
//! checks that exist for every bundle, then its own samples must give their recorded top-1
//! with finite probabilities), moves it into `models_dir`, records it in `active.json` and
//! switches the running appliance to it. Any failed step refuses the bundle with the reason.
//!
//! `active.json` records `current` and `previous`. At start-up a bundle that fails to load or
//! to pass its self-test, or that never confirmed after two starts (it crashed the process),
//! is rolled back to `previous` (then to the configured bundle).

mod active;
mod announcement;
pub mod archive;

pub use active::{Active, MAX_REFUSED, read_refused, write_refused};
pub use announcement::{Announcement, MAX_ANNOUNCEMENT_BYTES, MAX_EXPIRES_DAYS, MAX_VERSION};

use crate::config::FleetUpdates;
use crate::model::{LoadOptions, Model};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("announcement: {0}")]
    Announcement(String),
    #[error("download: {0}")]
    Download(String),
    #[error("archive is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("sha256 mismatch: announced {announced}, downloaded {actual}")]
    Sha256 { announced: String, actual: String },
    #[error("signature: {0}")]
    Signature(#[from] crate::model::signing::SignError),
    #[error("archive: {0}")]
    Archive(String),
    #[error("bundle: {0}")]
    Bundle(String),
    #[error("self-test: {0}")]
    SelfTest(String),
    #[error("switch: {0}")]
    Switch(SwitchError),
    #[error("update state: {0}")]
    State(String),
    #[error("clock: {0}")]
    Clock(String),
    #[error("not enough disk space in {path}: {free} bytes free, {needed} needed")]
    NoSpace {
        path: PathBuf,
        free: u64,
        needed: u64,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Puts a bundle into service in the running appliance (the binary implements it: loads the
/// bundle with the configured engine and swaps it into the pipeline and the web server).
pub trait ModelSwitch: Send + Sync {
    fn switch(&self, dir: &Path) -> Result<(), SwitchError>;
}

/// Why a bundle could not be put into service: the loader's error, whatever its type. Shown as
/// its whole chain ("loading model bundle X: model.onnx: sha256 ...") in logs and the status.
#[derive(Debug)]
pub struct SwitchError(pub Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for SwitchError {}

/// The bundle as the self-test runs it: tract (always built, deterministic), one thread. The
/// reference outputs `pack` records come from the same engine.
pub(crate) fn reference_model(dir: &Path) -> Result<Model, UpdateError> {
    Model::load(
        dir,
        &LoadOptions {
            backend: crate::model::BackendKind::Tract,
            threads: 1,
            ..Default::default()
        },
    )
    .map_err(|e| UpdateError::Bundle(e.to_string()))
}

/// Load the bundle with tract on one thread and check its samples against its own record.
/// Returns the number of samples checked.
pub fn self_test(dir: &Path) -> Result<usize, UpdateError> {
    let model = reference_model(dir)?;
    let rec: archive::SelfTest = crate::storage::read_small_file(
        &dir.join("selftest.json"),
        archive::MAX_SELFTEST_JSON_BYTES,
    )
    .map_err(|e| UpdateError::SelfTest(format!("selftest.json: {e}")))
    .and_then(|b| {
        serde_json::from_slice(&b).map_err(|e| UpdateError::SelfTest(format!("selftest.json: {e}")))
    })?;
    if rec.samples.is_empty() {
        return Err(UpdateError::SelfTest("no samples".into()));
    }
    for s in &rec.samples {
        let rel = Path::new(&s.file);
        if !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(UpdateError::SelfTest(format!("{}: bad path", s.file)));
        }
        let img = crate::model::preprocess::load_image(
            &dir.join(rel),
            crate::model::preprocess::DEFAULT_MAX_PIXELS,
        )
        .map_err(|e| UpdateError::SelfTest(format!("{}: {e}", s.file)))?;
        let (p, _) = model
            .classify(&img, false)
            .map_err(|e| UpdateError::SelfTest(format!("{}: {e}", s.file)))?;
        if !p.probabilities.iter().all(|v| v.is_finite()) {
            return Err(UpdateError::SelfTest(format!(
                "{}: non-finite probabilities",
                s.file
            )));
        }
        let top1 = &model.manifest.classes[p.top1().0].name;
        if top1 != &s.top1 {
            return Err(UpdateError::SelfTest(format!(
                "{}: top-1 is {top1}, the bundle recorded {}",
                s.file, s.top1
            )));
        }
    }
    Ok(rec.samples.len())
}

/// Everything between an announcement and a switched appliance.
pub struct Updater {
    pub cfg: FleetUpdates,
    /// CA for HTTPS downloads from a clinic server (the broker's `ca_file`).
    pub ca_file: Option<PathBuf>,
    /// This device's id (announcements name the devices they are for).
    pub device_id: String,
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    (crate::storage::unix_ms() / 1000) as u64
}

impl UpdateError {
    /// A failure that may pass on a later try (network, disk); everything else (signature,
    /// sha256, archive, bundle, self-test, version) is final for that archive.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpdateError::Download(_)
                | UpdateError::Io { .. }
                | UpdateError::NoSpace { .. }
                | UpdateError::State(_)
                | UpdateError::Clock(_)
        )
    }
}

impl UpdateError {
    /// The archive's own content is wrong (its bytes matched the signed hash): refused on this
    /// device for good, also after a restart.
    pub fn is_archive_fault(&self) -> bool {
        matches!(
            self,
            UpdateError::Archive(_) | UpdateError::Bundle(_) | UpdateError::SelfTest(_)
        )
    }
}

impl Updater {
    /// The checks that need no download: signature, target, expiry, then that the version is
    /// newer than anything installed here. `Ok(false)`: this exact announcement is already in
    /// service (a retained message read again), nothing to do.
    pub fn check(&self, a: &Announcement, running: &Path) -> Result<bool, UpdateError> {
        let key = self
            .cfg
            .public_key
            .as_deref()
            .ok_or_else(|| UpdateError::Announcement("no fleet.updates.public_key".into()))?;
        a.verify(key, &self.device_id, unix_now())?;
        let active = Active::load(&self.cfg.models_dir)?;
        let sha = a.sha256.to_ascii_lowercase();
        if active.sha256.as_deref() == Some(sha.as_str())
            && active.version == a.version
            && running.ends_with(a.folder())
        {
            return Ok(false);
        }
        if active.rolled_back.contains(&sha) {
            return Err(UpdateError::Announcement(
                "this archive was rolled back on this device; announce a new build".into(),
            ));
        }
        if a.version <= active.max_version {
            return Err(UpdateError::Announcement(format!(
                "version {} is not newer than version {} installed here (a replay or a downgrade)",
                a.version, active.max_version
            )));
        }
        Ok(true)
    }

    /// Verify, download, unpack, self-test, record and switch. Returns the new folder.
    pub fn apply(
        &self,
        a: &Announcement,
        switch: &dyn ModelSwitch,
    ) -> Result<PathBuf, UpdateError> {
        let dir = &self.cfg.models_dir;
        // Signature first: nothing unsigned is ever downloaded past the announcement.
        self.check(a, Path::new(""))?;
        std::fs::create_dir_all(dir).map_err(|source| UpdateError::Io {
            path: dir.clone(),
            source,
        })?;
        let sha = a.sha256.to_ascii_lowercase();
        let tar = dir.join(format!(".download-{sha}.tar"));
        let got = archive::download(
            &a.url,
            &tar,
            self.cfg.max_download_bytes,
            self.ca_file.as_deref(),
            std::time::Duration::from_secs(self.cfg.download_timeout_s),
        );
        let result = got.and_then(|actual| {
            if actual != sha {
                return Err(UpdateError::Sha256 {
                    announced: sha.clone(),
                    actual,
                });
            }
            let staging = dir.join(format!(".staging-{sha}"));
            let _ = std::fs::remove_dir_all(&staging);
            let r = archive::unpack(&tar, &staging, self.cfg.max_download_bytes)
                .and_then(|()| self_test(&staging).map(|_| ()))
                .and_then(|()| same_name(&staging, &a.name));
            if let Err(e) = r {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
            Ok(staging)
        });
        let _ = std::fs::remove_file(&tar);
        let staging = result?;
        let folder = a.folder();
        let dest = dir.join(&folder);
        if dest.exists() {
            // Accepted before (then rolled away from): replace with the freshly checked copy.
            let _ = std::fs::remove_dir_all(&dest);
        }
        std::fs::rename(&staging, &dest).map_err(|source| UpdateError::Io {
            path: dest.clone(),
            source,
        })?;
        let before = Active::load(dir)?;
        // Recorded before the switch: a crash while switching is rolled back at the next start.
        // The version high-water mark moves now, so this announcement can never come back.
        let after = Active {
            current: Some(folder.clone()),
            previous: before.current.clone(),
            confirmed: false,
            attempts: 0,
            sha256: Some(sha.clone()),
            rolled_back: before.rolled_back.clone(),
            version: a.version,
            max_version: before.max_version.max(a.version),
        };
        after.write(dir)?;
        if let Err(e) = switch.switch(&dest) {
            Active {
                max_version: after.max_version,
                ..before
            }
            .write(dir)?;
            return Err(UpdateError::Switch(e));
        }
        Active {
            confirmed: true,
            ..after
        }
        .write(dir)?;
        self.prune(dir);
        Ok(dest)
    }

    /// Remove what an interrupted install left behind (`.download-*`, `.staging-*`): at most
    /// one update runs at a time, so at start-up none of them belongs to anyone.
    pub fn clean_leftovers(&self) {
        for e in std::fs::read_dir(&self.cfg.models_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if name.starts_with(".download-") && meta.is_file() {
                let _ = std::fs::remove_file(e.path());
            } else if name.starts_with(".staging-") && meta.is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Keep only `current` and `previous` bundle folders (and nothing that is not ours).
    fn prune(&self, dir: &Path) {
        let a = Active::read(dir);
        let keep = [a.current, a.previous];
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let ours =
                e.path().join("selftest.json").is_file() && e.path().join("model.json").is_file();
            if ours && !keep.iter().any(|k| k.as_deref() == Some(name.as_str())) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// The active bundle folder, if a fleet update put one in service.
    pub fn active_dir(&self) -> Option<PathBuf> {
        Active::read(&self.cfg.models_dir)
            .current
            .map(|c| self.cfg.models_dir.join(c))
    }
}

/// The bundle's own `model.json` name must be the signed one: what the status reports is
/// what was signed, never a name an attacker chose.
fn same_name(bundle: &Path, signed: &str) -> Result<(), UpdateError> {
    let path = bundle.join("model.json");
    let text = std::fs::read_to_string(&path).map_err(|source| UpdateError::Io {
        path: path.clone(),
        source,
    })?;
    let m = crate::model::manifest::Manifest::parse(&text, &path)
        .map_err(|e| UpdateError::Bundle(e.to_string()))?;
    if m.name != signed {
        return Err(UpdateError::Bundle(format!(
            "model.json names {:?}, the signed announcement {signed:?}",
            m.name
        )));
    }
    Ok(())
}

/// Pick and load the bundle to start with. With fleet updates on and an `active.json`, that is
/// the fleet's current bundle; one that fails (load, self-test, or two starts without
/// confirming) is rolled back to `previous`, then to `configured`. Returns the loaded value and,
/// after a rollback, a report for the status topic.
pub fn load_at_startup<T, E: std::fmt::Display>(
    updates: Option<&FleetUpdates>,
    configured: &Path,
    load: &dyn Fn(&Path) -> Result<T, E>,
) -> Result<(T, Option<Value>), E> {
    let Some(u) = updates.filter(|u| u.public_key.is_some()) else {
        return load(configured).map(|t| (t, None));
    };
    let dir = &u.models_dir;
    let mut active = Active::read(dir);
    let Some(current) = active.current.clone() else {
        return load(configured).map(|t| (t, None));
    };
    let path = dir.join(&current);
    let failure = if !active.confirmed && active.attempts >= 2 {
        Some(format!(
            "{current} did not confirm after {} starts",
            active.attempts
        ))
    } else {
        // An unconfirmed bundle is only tried once its attempt is on disk: otherwise a bundle
        // that crashes the process would be restarted forever (`Restart=always`).
        let recorded = if active.confirmed {
            Ok(())
        } else {
            active.attempts += 1;
            active.write(dir).map_err(|e| {
                format!(
                    "its start attempt cannot be recorded ({e}), so a crash would repeat forever"
                )
            })
        };
        let tested = recorded.and_then(|()| {
            if active.confirmed {
                Ok(())
            } else {
                self_test(&path).map(|_| ()).map_err(|e| e.to_string())
            }
        });
        // The failed attempt only becomes a reason in the log and the status report; the
        // loader's own error (and its exit status) is kept for the last fallback below.
        match tested.and_then(|()| load(&path).map_err(|e| format!("{e:#}"))) {
            Ok(t) => {
                if !active.confirmed {
                    active.confirmed = true;
                    active.attempts = 0;
                    let _ = active.write(dir);
                }
                return Ok((t, None));
            }
            Err(e) => Some(format!("{current} failed at start-up: {e}")),
        }
    };
    let reason = failure.unwrap_or_default();
    log::warn!("model update: {reason}; rolling back");
    let mut rolled_back = active.rolled_back.clone();
    rolled_back.extend(active.sha256.clone());
    let excess = rolled_back.len().saturating_sub(16);
    rolled_back.drain(..excess);
    let back = Active {
        current: active.previous.clone(),
        previous: None,
        confirmed: true,
        attempts: 0,
        sha256: None,
        rolled_back: rolled_back.clone(),
        version: 0,
        max_version: active.max_version,
    };
    let _ = back.write(dir);
    let (t, to) = match &active.previous {
        Some(prev) => match load(&dir.join(prev)) {
            Ok(t) => (t, prev.clone()),
            Err(e) => {
                log::warn!(
                    "model update: previous bundle {prev} fails too ({e:#}); using the configured bundle"
                );
                let _ = Active {
                    rolled_back,
                    max_version: active.max_version,
                    ..Default::default()
                }
                .write(dir);
                (load(configured)?, configured.display().to_string())
            }
        },
        None => (load(configured)?, configured.display().to_string()),
    };
    Ok((
        t,
        Some(json!({"state": "rolled back", "from": current, "to": to, "reason": reason})),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unconfirmed fleet bundle whose start attempt cannot be written is not tried: the
    /// configured bundle starts instead (was: the guard never reached disk, so a bundle that
    /// crashes at load restarted forever).
    #[test]
    fn an_unrecordable_start_attempt_falls_back_to_the_configured_bundle() {
        let dir = std::env::temp_dir().join(format!("dermcam-attempt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("fleet-bundle")).unwrap();
        let body = serde_json::to_vec(&Active {
            current: Some("fleet-bundle".into()),
            version: 3,
            max_version: 3,
            ..Default::default()
        })
        .unwrap();
        std::fs::write(dir.join("active.json.1"), body).unwrap();
        // The main copy's path is a folder (read as torn: the second copy is used) and every
        // write of the state fails there (as root, a read-only folder would not).
        std::fs::create_dir_all(dir.join("active.json").join("x")).unwrap();
        let updates = FleetUpdates {
            public_key: Some("00".repeat(32)),
            models_dir: dir.clone(),
            ..Default::default()
        };
        let configured = Path::new("/configured");
        let tried = std::sync::Mutex::new(Vec::new());
        let load = |p: &Path| -> Result<PathBuf, String> {
            tried.lock().unwrap().push(p.to_path_buf());
            Ok(p.to_path_buf())
        };
        let (got, report) = load_at_startup(Some(&updates), configured, &load).unwrap();
        assert_eq!(got, configured);
        assert_eq!(tried.lock().unwrap().as_slice(), [configured.to_path_buf()]);
        let r = report.unwrap().to_string();
        assert!(r.contains("cannot be recorded"), "{r}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
