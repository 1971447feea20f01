//! Bundle archives: `pack` (clinic side: bundle + self-test samples and their reference
//! outputs, as a plain tar), `download` (size-capped, HTTP(S) or file://, hashed while written)
//! and `unpack` (regular files and folders only, no path escapes, size-capped).

use super::UpdateError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The self-test record inside a bundle: what the bundle itself says its samples give.
#[derive(Debug, Serialize, Deserialize)]
pub struct SelfTest {
    pub samples: Vec<SelfTestSample>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SelfTestSample {
    /// Path inside the bundle (`selftest/<name>`).
    pub file: String,
    pub top1: String,
    pub probabilities: Vec<f32>,
}

/// Most entries an archive may hold (a bundle is a handful of files plus samples).
const MAX_ENTRIES: usize = 512;
/// Largest `selftest.json` read (a real one is a few kB: file names, classes, probabilities).
pub const MAX_SELFTEST_JSON_BYTES: u64 = 1 << 20;

/// Build `out` (a tar) from `bundle`: its top-level files, the `samples` (copied to
/// `selftest/`) and `selftest.json` with their reference outputs from the tract backend.
/// Returns the archive's sha256.
pub fn pack(bundle: &Path, samples: &[PathBuf], out: &Path) -> Result<String, UpdateError> {
    let model = super::reference_model(bundle)?;
    if samples.is_empty() {
        return Err(UpdateError::Bundle(
            "no self-test samples: a device refuses a bundle it cannot test".into(),
        ));
    }
    let mut record = SelfTest { samples: vec![] };
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for e in std::fs::read_dir(bundle).map_err(|e| io(bundle, e))? {
        let e = e.map_err(|e| io(bundle, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        let meta = std::fs::symlink_metadata(e.path()).map_err(|err| io(&e.path(), err))?;
        if meta.is_file() && !name.starts_with('.') && name != "selftest.json" {
            files.push((
                name,
                std::fs::read(e.path()).map_err(|err| io(&e.path(), err))?,
            ));
        }
    }
    for s in samples {
        let name = s
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .ok_or_else(|| UpdateError::Bundle(format!("{}: not a file", s.display())))?;
        let img =
            crate::model::preprocess::load_image(s, crate::model::preprocess::DEFAULT_MAX_PIXELS)
                .map_err(|e| UpdateError::Bundle(format!("{}: {e}", s.display())))?;
        let (p, _) = model
            .classify(&img, false)
            .map_err(|e| UpdateError::Bundle(format!("{}: {e}", s.display())))?;
        let file = format!("selftest/{name}");
        record.samples.push(SelfTestSample {
            file: file.clone(),
            top1: model.manifest.classes[p.top1().0].name.clone(),
            probabilities: p.probabilities.clone(),
        });
        files.push((file, std::fs::read(s).map_err(|e| io(s, e))?));
    }
    files.push((
        "selftest.json".into(),
        serde_json::to_vec_pretty(&record).expect("serialisable"),
    ));
    files.sort();
    let tmp = out.with_extension("tar.partial");
    {
        let f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(f));
        for (name, bytes) in &files {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, bytes.as_slice())
                .map_err(|e| io(&tmp, e))?;
        }
        b.into_inner()
            .and_then(|mut w| w.flush())
            .map_err(|e| io(&tmp, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| io(out, e))?;
    crate::model::sha256_file(out).map_err(|e| io(out, e))
}

fn io(path: &Path, source: std::io::Error) -> UpdateError {
    UpdateError::Io {
        path: path.into(),
        source,
    }
}

/// Disk kept free for the capture folder and the fleet queue, which share the disk.
const DISK_RESERVE: u64 = 64 << 20;

/// A body slower than this over a whole window is a stall (a 1 byte/s server), not a download.
const STALL_WINDOW: std::time::Duration = std::time::Duration::from_secs(20);
const STALL_MIN_BYTES: u64 = 256 << 10;

/// Bytes free for an unprivileged writer in the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statvfs fills the zeroed struct; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// How many archive bytes the disk holding `dir` can take: the archive and its unpacked copy
/// both need room, beyond the reserve.
fn room_for_archive(dir: &Path) -> Result<u64, UpdateError> {
    let free = free_bytes(dir).map_err(|e| io(dir, e))?;
    Ok(free.saturating_sub(DISK_RESERVE) / 2)
}

fn no_space(dir: &Path, needed: u64) -> UpdateError {
    UpdateError::NoSpace {
        path: dir.into(),
        free: free_bytes(dir).unwrap_or(0),
        needed: needed.saturating_mul(2).saturating_add(DISK_RESERVE),
    }
}

/// A local archive (a USB stick): a regular file only; opened without blocking, so a FIFO or a
/// device node named by the URL can never hold the update thread.
fn open_local(path: &Path) -> Result<(std::fs::File, u64), UpdateError> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io(path, e))?;
    let meta = f.metadata().map_err(|e| io(path, e))?;
    if !meta.is_file() {
        return Err(UpdateError::Download(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    Ok((f, meta.len()))
}

/// Fetch `url` into `dest` (at most `max` bytes, and no more than the disk can hold beside
/// what it already holds); returns the sha256 of what was written. `file://` reads a local
/// regular file (a bundle on a USB stick); `ca_file` adds a clinic CA for HTTPS. A body that
/// stalls (under 256 KiB in 20 s) or takes longer than `timeout` is abandoned.
pub fn download(
    url: &str,
    dest: &Path,
    max: u64,
    ca_file: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<String, UpdateError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let room = room_for_archive(dir)?;
    let (reader, length) = open_source(url, max, ca_file, timeout)?;
    if let Some(n) = length {
        if n > max {
            return Err(UpdateError::TooLarge { max });
        }
        if n > room {
            return Err(no_space(dir, n));
        }
    }
    let limits = CopyLimits { max, room, timeout };
    copy_hashed(url, reader.take(max + 1), dest, &limits)
}

/// What a download may take: bytes, disk room, time.
struct CopyLimits {
    max: u64,
    room: u64,
    timeout: std::time::Duration,
}

/// The archive's bytes and their announced length: a regular local file, or an HTTP(S) body
/// (clinic CA when given; connect / response / whole-transfer timeouts; ≤ 3 redirects).
fn open_source(
    url: &str,
    max: u64,
    ca_file: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<(Box<dyn Read>, Option<u64>), UpdateError> {
    if let Some(path) = url.strip_prefix("file://") {
        let (f, len) = open_local(Path::new(path))?;
        return Ok((Box::new(f), Some(len)));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(UpdateError::Download(format!(
            "{url:?}: only http://, https:// and file:// URLs"
        )));
    }
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca) = ca_file {
        tls = tls.root_certs(clinic_roots(ca)?);
    }
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(std::time::Duration::from_secs(10)))
            .timeout_recv_response(Some(std::time::Duration::from_secs(30)))
            .timeout_global(Some(timeout))
            .max_redirects(3)
            .tls_config(tls.build())
            .build(),
    );
    let resp = agent
        .get(url)
        .call()
        .map_err(|e| UpdateError::Download(format!("{url}: {e}")))?;
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    Ok((
        Box::new(resp.into_body().into_with_config().limit(max + 1).reader()),
        length,
    ))
}

/// The clinic CA file's certificates as the only roots.
fn clinic_roots(ca: &Path) -> Result<ureq::tls::RootCerts, UpdateError> {
    let pem = crate::storage::read_small_file(ca, crate::storage::MAX_CONFIG_FILE_BYTES)
        .map_err(|e| io(ca, e))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(UpdateError::Download(format!(
            "{}: no certificate in it",
            ca.display()
        )));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// Copies the body into `dest` (fsynced) while hashing it, within the size, disk, stall
/// (< STALL_MIN_BYTES per STALL_WINDOW) and time limits; returns the sha256.
fn copy_hashed(
    url: &str,
    mut reader: impl Read,
    dest: &Path,
    limits: &CopyLimits,
) -> Result<String, UpdateError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut f = std::fs::File::create(dest).map_err(|e| io(dest, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n: u64 = 0;
    let started = std::time::Instant::now();
    let (mut window_start, mut window_bytes) = (started, 0u64);
    loop {
        let k = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UpdateError::Download(format!("{url}: {e}"))),
        };
        n += k as u64;
        if n > limits.max {
            return Err(UpdateError::TooLarge { max: limits.max });
        }
        if n > limits.room {
            return Err(no_space(dir, n));
        }
        window_bytes += k as u64;
        if window_start.elapsed() >= STALL_WINDOW {
            if window_bytes < STALL_MIN_BYTES {
                return Err(UpdateError::Download(format!(
                    "{url}: stalled ({window_bytes} bytes in {} s)",
                    STALL_WINDOW.as_secs()
                )));
            }
            (window_start, window_bytes) = (std::time::Instant::now(), 0);
        }
        if started.elapsed() > limits.timeout {
            return Err(UpdateError::Download(format!(
                "{url}: not finished within {} s",
                limits.timeout.as_secs()
            )));
        }
        h.update(&buf[..k]);
        f.write_all(&buf[..k]).map_err(|e| io(dest, e))?;
    }
    f.sync_all().map_err(|e| io(dest, e))?;
    Ok(hex::encode(h.finalize()))
}

/// Unpack a bundle archive into the (new, empty) folder `dest`: regular files and folders
/// only, relative paths without `..`, at most `max_bytes` in all.
/// A folder that cannot be made inside the fresh staging folder: an entry of the archive is
/// in the way (a file where a folder goes), which is the archive's fault, not the disk's.
fn clash(entry: &Path, at: &Path, e: std::io::Error) -> UpdateError {
    use std::io::ErrorKind::*;
    match e.kind() {
        AlreadyExists | NotADirectory | IsADirectory => UpdateError::Archive(format!(
            "entry {:?} clashes with another entry",
            entry.display()
        )),
        _ => io(at, e),
    }
}

pub fn unpack(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), UpdateError> {
    let bad = |m: String| UpdateError::Archive(m);
    std::fs::create_dir(dest).map_err(|e| io(dest, e))?;
    let f = std::fs::File::open(archive).map_err(|e| io(archive, e))?;
    let mut a = tar::Archive::new(f);
    let mut total: u64 = 0;
    let mut count = 0;
    for entry in a
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("damaged archive: {e}")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let path = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .into_owned();
        // `./x` (what `tar -C dir .` writes) is fine; `..`, `/x` and the like are not.
        let clean = path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !clean {
            return Err(bad(format!(
                "entry {:?} leaves the bundle folder",
                path.display()
            )));
        }
        let target = dest.join(&path);
        if path.components().all(|c| c == Component::CurDir) {
            continue; // the archive's own root folder
        }
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(|e| clash(&path, &target, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                total = total.saturating_add(size);
                if total > max_bytes {
                    return Err(UpdateError::TooLarge { max: max_bytes });
                }
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| clash(&path, parent, e))?;
                }
                // A name given twice (or a file where a folder was) is the archive's fault, not
                // the disk's: refused for good, never retried as a passing failure.
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => {
                            bad(format!("entry {:?} appears twice", path.display()))
                        }
                        std::io::ErrorKind::NotADirectory | std::io::ErrorKind::IsADirectory => {
                            bad(format!(
                                "entry {:?} clashes with another entry",
                                path.display()
                            ))
                        }
                        _ => io(&target, e),
                    })?;
                let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)
                    .map_err(|e| bad(format!("{}: {e}", path.display())))?;
                if copied != size {
                    return Err(bad(format!("{}: truncated", path.display())));
                }
                out.sync_all().map_err(|e| io(&target, e))?;
            }
            t => {
                return Err(bad(format!(
                    "entry {:?} is a {t:?}: only files and folders are accepted",
                    path.display()
                )));
            }
        }
    }
    if count == 0 {
        return Err(bad("empty archive".into()));
    }
    Ok(())
}
