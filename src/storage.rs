//! Crash-safe file writes for captures and saved uploads: temp file, fsync, rename, fsync of
//! the directory. A reader never sees a partial file, even after power loss.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` atomically to `dir/<prefix>-<unix ms>-<n>.<ext>`; returns the final path.
pub fn save_atomic(dir: &Path, prefix: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}-{ms}-{}-{n}.{ext}", std::process::id());
    write_atomic(&dir.join(name), bytes)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path.to_path_buf())
}

/// Saves each frozen (point-and-classify) frame as JPEG + result JSON, atomically, keeping at
/// most `max_files` captures (oldest removed first). A full or read-only disk refuses the
/// capture with a message; the pipeline goes on.
pub struct CaptureSink {
    pub dir: PathBuf,
    pub max_files: usize,
    pub manifest: crate::manifest::Manifest,
    last_saved: Option<u64>,
}

impl CaptureSink {
    pub fn new(dir: PathBuf, max_files: usize, manifest: crate::manifest::Manifest) -> Self {
        CaptureSink {
            dir,
            max_files,
            manifest,
            last_saved: None,
        }
    }

    fn save(&self, u: &crate::pipeline::Update) -> std::io::Result<PathBuf> {
        let (Some(f), Some(p)) = (&u.frame, &u.prediction) else {
            return Err(std::io::Error::other("nothing to save"));
        };
        let mut jpg = Vec::new();
        f.image
            .write_to(
                &mut std::io::Cursor::new(&mut jpg),
                image::ImageFormat::Jpeg,
            )
            .map_err(std::io::Error::other)?;
        let img_path = save_atomic(&self.dir, "capture", "jpg", &jpg)?;
        let json = serde_json::json!({
            "image": img_path.file_name().map(|n| n.to_string_lossy().to_string()),
            "model": {"name": self.manifest.name, "sha256": self.manifest.sha256},
            "headline": p.headline(&self.manifest),
            "uncertain": p.uncertain,
            "classes": p.top_k(self.manifest.classes.len(), &self.manifest),
            "disclaimer": crate::DISCLAIMER,
        });
        write_atomic(
            &img_path.with_extension("json"),
            (serde_json::to_string_pretty(&json)? + "\n").as_bytes(),
        )?;
        self.enforce_retention()?;
        Ok(img_path)
    }

    fn enforce_retention(&self) -> std::io::Result<()> {
        let mut jpgs: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "jpg")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("capture-"))
            })
            .collect();
        // Names embed the time in ms, so name order is age order.
        jpgs.sort();
        while jpgs.len() > self.max_files.max(1) {
            let old = jpgs.remove(0);
            let _ = std::fs::remove_file(old.with_extension("json"));
            std::fs::remove_file(old)?;
        }
        Ok(())
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
            Ok(p) => eprintln!("capture saved: {}", p.display()),
            Err(e) => eprintln!("warning: capture refused ({}): {e}", self.dir.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let d = std::env::temp_dir().join(format!("dermcam-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let p = save_atomic(&d, "t", "bin", b"hello").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
