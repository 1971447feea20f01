//! The capture sink: frozen frames saved as capture folders, with retention by count and bytes.

use crate::storage::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Saves each frozen (point-and-classify) frame as a capture folder `capture-<ms>-<pid>-<n>/`
/// holding `image.jpg` and `result.json`, both or neither (see `save_set_atomic`). Keeps at most
/// `max_files` captures and `max_bytes` bytes (oldest removed first). A full or read-only disk
/// refuses the capture with a message; the pipeline goes on.
pub struct CaptureSink {
    pub dir: PathBuf,
    pub max_files: usize,
    /// 0 = no byte limit.
    pub max_bytes: u64,
    last_saved: Option<u64>,
}

impl CaptureSink {
    pub fn new(dir: PathBuf, max_files: usize) -> Self {
        if let Err(e) = check_dir(&dir) {
            log::warn!("captures: {e}");
        }
        let stale = remove_stale_temps(&dir);
        if stale > 0 {
            log::info!(
                "captures: removed {stale} incomplete capture(s) left by an interrupted write in {}",
                dir.display()
            );
        }
        CaptureSink {
            dir,
            max_files,
            max_bytes: 0,
            last_saved: None,
        }
    }

    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    fn save(&self, u: &crate::pipeline::Update) -> std::io::Result<PathBuf> {
        let (Some(f), Some(p), Some(model)) = (&u.frame, &u.prediction, &u.model) else {
            return Err(std::io::Error::other("nothing to save"));
        };
        let m = &model.manifest;
        check_dir(&self.dir)?;
        let mut jpg = Vec::new();
        f.image
            .write_to(
                &mut std::io::Cursor::new(&mut jpg),
                image::ImageFormat::Jpeg,
            )
            .map_err(std::io::Error::other)?;
        // Where the model looked, for a lesion result of a bundle with class-activation maps.
        let heat = p
            .heat
            .as_ref()
            .filter(|_| !p.not_lesion)
            .and_then(crate::model::heat::png);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("capture-{}-{}-{n}", unix_ms(), std::process::id());
        let json = serde_json::json!({
            "capture": name,
            "image": "image.jpg",
            "image_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&jpg)),
            "model": {"name": m.name, "sha256": m.sha256},
            "outcome": p.outcome(),
            "headline": p.headline(m),
            "uncertain": p.uncertain,
            "refer": p.refer,
            "malignant_probability": p.malignant_probability,
            "refer_threshold": m.refer_threshold(),
            "ood_score": p.ood_score,
            "classes": p.top_k(m.classes.len(), m),
            "heat_map": heat.as_ref().map(|_| "heat.png"),
            "disclaimer": crate::DISCLAIMER,
        });
        let json = serde_json::to_string_pretty(&json)? + "\n";
        let mut files: Vec<(&str, &[u8])> =
            vec![("image.jpg", &jpg), ("result.json", json.as_bytes())];
        if let Some(h) = &heat {
            files.push(("heat.png", h));
        }
        let path = save_set_atomic(&self.dir, &name, &files)?;
        self.enforce_retention()?;
        Ok(path)
    }

    /// Capture folders, oldest first, with their sizes in bytes.
    pub fn captures(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
        Ok(own_entries(dir, "capture")?
            .into_iter()
            .filter(|(p, _)| p.is_dir())
            .collect())
    }

    pub(crate) fn enforce_retention(&self) -> std::io::Result<()> {
        enforce_retention(&self.dir, "capture", self.max_files, self.max_bytes)
    }
}

impl crate::pipeline::Sink for CaptureSink {
    fn publish(&mut self, u: &crate::pipeline::Update) {
        let Some(f) = &u.frame else { return };
        if !u.state.frozen || u.prediction.is_none() || self.last_saved == Some(f.seq) {
            return;
        }
        self.last_saved = Some(f.seq);
        match self.save(u) {
            Ok(p) => log::info!("capture saved: {}", p.display()),
            Err(e) => log::warn!("capture refused ({}): {e}", self.dir.display()),
        }
    }
}
