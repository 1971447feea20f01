//! Crash-safe file writes for captures and saved uploads: temp file, fsync, rename, fsync of
//! the directory. A reader never sees a partial file, even after power loss. Files are created
//! 0640 and folders 0750 whatever the umask; clean-up and retention touch only entries named
//! the way dermcam names them (`<prefix>-<ms>-<pid>-<n>`), never a symlink, never anything else
//! a user keeps in the same folder.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub(super) static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Marker file written first into every temp capture folder: clean-up removes only folders
/// that carry it.
const PARTIAL_MARKER: &str = ".dermcam-partial";

fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

fn create_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
}

/// Refuse a storage folder that is a symlink (it would make dermcam write, clean up and
/// delete somewhere else than configured).
pub fn check_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => Err(std::io::Error::other(format!(
            "{} is a symlink (to {}); refusing to store or delete anything through it: configure the real folder",
            dir.display(),
            std::fs::read_link(dir)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "?".into())
        ))),
        _ => Ok(()),
    }
}

/// True for `<prefix>-<digits>-<digits>-<digits>` optionally followed by `.<ext>`: the names
/// `save_atomic` and `CaptureSink` give their files.
pub fn is_own_name(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let stem = match rest.split_once('.') {
        Some((stem, ext)) if !ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric()) => {
            stem
        }
        Some(_) => return false,
        None => rest,
    };
    let parts: Vec<&str> = stem.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Write `bytes` atomically to `dir/<prefix>-<unix ms>-<pid>-<n>.<ext>`; returns the final path.
pub fn save_atomic(dir: &Path, prefix: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    check_dir(dir)?;
    create_dir_all(dir)?;
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
    let _ = std::fs::remove_file(&tmp);
    {
        let mut f = create_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path.to_path_buf())
}

/// Every file a capture folder may hold (the clean-up of interrupted writes deletes a temp
/// folder only when it holds nothing else).
pub const CAPTURE_FILES: [&str; 3] = ["image.jpg", "result.json", "heat.png"];

/// Write several files as one unit: they appear together as `parent/<name>/` or not at all
/// (built in a hidden temp folder, every file and the folder fsynced, then renamed).
pub fn save_set_atomic(
    parent: &Path,
    name: &str,
    files: &[(&str, &[u8])],
) -> std::io::Result<PathBuf> {
    create_dir_all(parent)?;
    let tmp = parent.join(format!(".{name}.tmp"));
    if std::fs::symlink_metadata(tmp.join(PARTIAL_MARKER)).is_ok() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    std::fs::DirBuilder::new().mode(0o750).create(&tmp)?;
    create_file(&tmp.join(PARTIAL_MARKER))?;
    for (file, bytes) in files {
        let mut f = create_file(&tmp.join(file))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::remove_file(tmp.join(PARTIAL_MARKER))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    let dst = parent.join(name);
    std::fs::rename(&tmp, &dst)?;
    std::fs::File::open(parent)?.sync_all()?;
    Ok(dst)
}

/// Remove temp files/folders left by writes that a crash or power loss interrupted: only
/// `.<prefix>-<ms>-<pid>-<n>[.ext].tmp` entries (prefix `capture`, `upload` or `result`) owned by this
/// user, folders only when they hold nothing but the files dermcam writes into them (its
/// marker and `CAPTURE_FILES`), never symlinks. Nothing is removed through a
/// symlinked `dir`.
pub fn remove_stale_temps(dir: &Path) -> usize {
    if check_dir(dir).is_err() {
        return 0;
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
            continue;
        };
        if !["capture", "upload", "result"]
            .iter()
            .any(|p| is_own_name(inner, p))
        {
            continue;
        }
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.file_type().is_symlink() || meta.uid() != uid {
            continue;
        }
        let ok = if meta.is_dir() {
            // A temp capture folder holds only what dermcam writes into one (a kill can land
            // before the marker is written): anything else means it is not ours to delete.
            let only_ours = std::fs::read_dir(&p).is_ok_and(|d| {
                d.flatten().all(|f| {
                    f.file_type().is_ok_and(|t| t.is_file())
                        && (f.file_name() == PARTIAL_MARKER
                            || CAPTURE_FILES.contains(&f.file_name().to_string_lossy().as_ref()))
                })
            });
            if !only_ours {
                continue;
            }
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        n += ok.is_ok() as usize;
    }
    n
}

/// dermcam's own entries `<prefix>-<ms>-<pid>-<n>[.ext]` in `dir` (folders for captures,
/// files for uploads; never symlinks), oldest first, with their sizes in bytes.
pub fn own_entries(dir: &Path, prefix: &str) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut v: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| is_own_name(&e.file_name().to_string_lossy(), prefix))
        .filter_map(|e| {
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            let bytes = if meta.is_dir() {
                std::fs::read_dir(e.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|f| f.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            } else if meta.is_file() {
                meta.len()
            } else {
                return None;
            };
            Some((e.path(), bytes))
        })
        .collect();
    // Names embed the time in ms (fixed width until 2286), so name order is age order.
    v.sort();
    Ok(v)
}

/// Keep at most `max_files` entries and `max_bytes` bytes (0 = no byte limit) of dermcam's own
/// `prefix` entries in `dir`, removing the oldest first; the newest always stays.
pub fn enforce_retention(
    dir: &Path,
    prefix: &str,
    max_files: usize,
    max_bytes: u64,
) -> std::io::Result<()> {
    check_dir(dir)?;
    let mut entries = own_entries(dir, prefix)?;
    let mut total: u64 = entries.iter().map(|c| c.1).sum();
    while entries.len() > 1
        && (entries.len() > max_files.max(1) || (max_bytes > 0 && total > max_bytes))
    {
        let (old, bytes) = entries.remove(0);
        if old.is_dir() {
            std::fs::remove_dir_all(old)?;
        } else {
            std::fs::remove_file(old)?;
        }
        total -= bytes;
    }
    Ok(())
}

/// Read a small file the configuration names (config, password, CA, key, state): regular files
/// only, opened without blocking (a FIFO or a terminal is refused at once, `/dev/zero` too), at
/// most `max` bytes (a file that grows past it while read is refused, not truncated).
pub fn read_small_file(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    if meta.len() > max {
        return Err(invalid(format!("{} bytes: larger than {max}", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(invalid(format!("grew past {max} bytes while read")));
    }
    Ok(bytes)
}

/// `read_small_file` as UTF-8 text.
pub fn read_small_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_small_file(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The most a configuration, password, key or certificate file may hold.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

pub(crate) fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reliability IV, row 10: special files and oversized files are refused at once.
    #[test]
    fn small_files_are_regular_and_capped() {
        for special in ["/dev/zero", "/dev/null", "/"] {
            let e = read_small_file(Path::new(special), 1 << 20).unwrap_err();
            assert!(
                e.to_string().contains("not a regular file")
                    || e.kind() == std::io::ErrorKind::IsADirectory,
                "{special}: {e}"
            );
        }
        let dir = std::env::temp_dir().join(format!("dermcam-small-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        assert!(read_small_file(&fifo, 100).is_err());
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "a FIFO blocked the read"
        );
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; 101]).unwrap();
        assert!(
            read_small_file(&big, 100)
                .unwrap_err()
                .to_string()
                .contains("larger than 100")
        );
        assert_eq!(read_small_file(&big, 101).unwrap().len(), 101);
        let _ = std::fs::remove_dir_all(&dir);
    }
    use crate::sinks::capture::CaptureSink;

    /// A write killed after its last file (heat map included) leaves a temp folder holding
    /// every capture file: the start-up clean-up must know them all as its own.
    #[test]
    fn interrupted_capture_with_every_file_is_cleaned_up() {
        let d = std::env::temp_dir().join(format!("dermcam-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let tmp = d.join(".capture-1700000000000-1-1.tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        for f in CAPTURE_FILES {
            std::fs::write(tmp.join(f), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(&d), 1);
        assert!(!tmp.exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn retention_by_count_and_bytes_removes_oldest_first() {
        let d = std::env::temp_dir().join(format!("dermcam-retain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for i in 0..5 {
            let kb = vec![0u8; 1000];
            save_set_atomic(&d, &format!("capture-{i:013}-1-{i}"), &[("image.jpg", &kb)]).unwrap();
        }
        let names = |d: &Path| -> Vec<String> {
            CaptureSink::captures(d)
                .unwrap()
                .iter()
                .map(|(p, _)| p.file_name().unwrap().to_string_lossy()[..21].to_string())
                .collect()
        };
        // 5 x 1000 bytes; a 2500-byte budget keeps the newest 2.
        let sink = CaptureSink::new(d.clone(), 4).with_max_bytes(2500);
        sink.enforce_retention().unwrap();
        assert_eq!(
            names(&d),
            ["capture-0000000000003", "capture-0000000000004"],
            "oldest removed first"
        );
        // Count limit; and the newest capture stays even if it alone exceeds the byte budget.
        let sink = CaptureSink::new(d.clone(), 1).with_max_bytes(10);
        sink.enforce_retention().unwrap();
        assert_eq!(names(&d), ["capture-0000000000004"]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_temps_are_removed_and_finished_sets_kept() {
        let d = std::env::temp_dir().join(format!("dermcam-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let done = save_set_atomic(&d, "capture-1-2-1", &[("a", b"1"), ("b", b"2")]).unwrap();
        std::fs::create_dir_all(d.join(".capture-1-2-2.tmp")).unwrap();
        std::fs::write(d.join(".capture-1-2-2.tmp").join(PARTIAL_MARKER), b"").unwrap();
        std::fs::write(d.join(".upload-1-2-3.jpg.tmp"), b"half").unwrap();
        // Not dermcam's: a user's hidden temp file, and a folder holding a file dermcam never
        // writes.
        std::fs::write(d.join(".important.tmp"), b"keep").unwrap();
        std::fs::create_dir_all(d.join(".capture-1-2-4.tmp")).unwrap();
        std::fs::write(d.join(".capture-1-2-4.tmp/notes.txt"), b"keep").unwrap();
        assert_eq!(remove_stale_temps(&d), 2);
        assert_eq!(std::fs::read(done.join("b")).unwrap(), b"2");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn own_names() {
        assert!(is_own_name("capture-1700000000000-12-3", "capture"));
        assert!(is_own_name("upload-1700000000000-12-3.jpg", "upload"));
        for n in [
            "capture-mine",
            "capture-1-2",
            "capture-1-2-3-4",
            "capture-1-2-3.",
            "xcapture-1-2-3",
            "upload-1-2-x.jpg",
        ] {
            assert!(
                !is_own_name(n, "capture") && !is_own_name(n, "upload"),
                "{n}"
            );
        }
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
