//! Crash-safe file writes for captures and saved uploads: temp file, fsync, rename, fsync of
//! the directory. A reader never sees a partial file, even after power loss.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` atomically to `dir/<prefix>-<unix ms>-<n>.<ext>`; returns the final path.
pub fn save_atomic(dir: &Path, prefix: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}-{}-{}-{n}.{ext}", unix_ms(), std::process::id());
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

/// Write several files as one unit: they appear together as `parent/<name>/` or not at all
/// (built in a hidden temp folder, every file and the folder fsynced, then renamed).
pub fn save_set_atomic(
    parent: &Path,
    name: &str,
    files: &[(&str, &[u8])],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)?;
    for (file, bytes) in files {
        let mut f = std::fs::File::create(tmp.join(file))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    let dst = parent.join(name);
    std::fs::rename(&tmp, &dst)?;
    std::fs::File::open(parent)?.sync_all()?;
    Ok(dst)
}

/// Remove temp files/folders left by writes that a crash or power loss interrupted.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && name.ends_with(".tmp") {
            let p = e.path();
            let ok = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            n += ok.is_ok() as usize;
        }
    }
    n
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Saves each frozen (point-and-classify) frame as a capture folder `capture-<ms>-<pid>-<n>/`
/// holding `image.jpg` and `result.json`, both or neither (see `save_set_atomic`). Keeps at most
/// `max_files` captures and `max_bytes` bytes (oldest removed first). A full or read-only disk
/// refuses the capture with a message; the pipeline goes on.
pub struct CaptureSink {
    pub dir: PathBuf,
    pub max_files: usize,
    /// 0 = no byte limit.
    pub max_bytes: u64,
    pub manifest: crate::manifest::Manifest,
    last_saved: Option<u64>,
}

impl CaptureSink {
    pub fn new(dir: PathBuf, max_files: usize, manifest: crate::manifest::Manifest) -> Self {
        let stale = remove_stale_temps(&dir);
        if stale > 0 {
            eprintln!(
                "captures: removed {stale} incomplete capture(s) left by an interrupted write in {}",
                dir.display()
            );
        }
        CaptureSink {
            dir,
            max_files,
            max_bytes: 0,
            manifest,
            last_saved: None,
        }
    }

    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
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
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("capture-{}-{}-{n}", unix_ms(), std::process::id());
        let json = serde_json::json!({
            "capture": name,
            "image": "image.jpg",
            "image_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&jpg)),
            "model": {"name": self.manifest.name, "sha256": self.manifest.sha256},
            "headline": p.headline(&self.manifest),
            "uncertain": p.uncertain,
            "classes": p.top_k(self.manifest.classes.len(), &self.manifest),
            "disclaimer": crate::DISCLAIMER,
        });
        let json = serde_json::to_string_pretty(&json)? + "\n";
        let path = save_set_atomic(
            &self.dir,
            &name,
            &[("image.jpg", &jpg), ("result.json", json.as_bytes())],
        )?;
        self.enforce_retention()?;
        Ok(path)
    }

    /// Capture folders, oldest first, with their sizes in bytes.
    pub fn captures(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
        let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("capture-"))
            .map(|e| {
                let bytes = std::fs::read_dir(e.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|f| f.metadata().ok())
                    .map(|m| m.len())
                    .sum();
                (e.path(), bytes)
            })
            .collect();
        // Names embed the time in ms (fixed width until 2286), so name order is age order.
        v.sort();
        Ok(v)
    }

    fn enforce_retention(&self) -> std::io::Result<()> {
        let mut caps = Self::captures(&self.dir)?;
        let mut total: u64 = caps.iter().map(|c| c.1).sum();
        // The newest capture always stays, whatever the limits.
        while caps.len() > 1
            && (caps.len() > self.max_files.max(1)
                || (self.max_bytes > 0 && total > self.max_bytes))
        {
            let (old, bytes) = caps.remove(0);
            std::fs::remove_dir_all(old)?;
            total -= bytes;
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
    fn retention_by_count_and_bytes_removes_oldest_first() {
        let d = std::env::temp_dir().join(format!("dermcam-retain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for i in 0..5 {
            let kb = vec![0u8; 1000];
            save_set_atomic(&d, &format!("capture-{i:013}-1-{i}"), &[("image.jpg", &kb)]).unwrap();
        }
        let manifest = crate::manifest::read_manifest(
            &Path::new(crate::MODELS_DIR).join(crate::DEFAULT_BUNDLE),
        )
        .unwrap();
        let names = |d: &Path| -> Vec<String> {
            CaptureSink::captures(d)
                .unwrap()
                .iter()
                .map(|(p, _)| p.file_name().unwrap().to_string_lossy()[..21].to_string())
                .collect()
        };
        // 5 x 1000 bytes; a 2500-byte budget keeps the newest 2.
        let sink = CaptureSink::new(d.clone(), 4, manifest.clone()).with_max_bytes(2500);
        sink.enforce_retention().unwrap();
        assert_eq!(
            names(&d),
            ["capture-0000000000003", "capture-0000000000004"],
            "oldest removed first"
        );
        // Count limit; and the newest capture stays even if it alone exceeds the byte budget.
        let sink = CaptureSink::new(d.clone(), 1, manifest).with_max_bytes(10);
        sink.enforce_retention().unwrap();
        assert_eq!(names(&d), ["capture-0000000000004"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_temps_are_removed_and_finished_sets_kept() {
        let d = std::env::temp_dir().join(format!("dermcam-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let done = save_set_atomic(&d, "capture-1", &[("a", b"1"), ("b", b"2")]).unwrap();
        std::fs::create_dir_all(d.join(".capture-2.tmp")).unwrap();
        std::fs::write(d.join(".upload-3.jpg.tmp"), b"half").unwrap();
        assert_eq!(remove_stale_temps(&d), 2);
        assert_eq!(std::fs::read(done.join("b")).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }

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
