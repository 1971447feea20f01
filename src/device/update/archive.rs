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

/// Fetch `url` into `dest` (at most `max` bytes); returns the sha256 of what was written.
/// `file://` reads a local path (a bundle on a USB stick); `ca_file` adds a clinic CA for
/// HTTPS.
pub fn download(
    url: &str,
    dest: &Path,
    max: u64,
    ca_file: Option<&Path>,
) -> Result<String, UpdateError> {
    let reader: Box<dyn Read> = if let Some(path) = url.strip_prefix("file://") {
        Box::new(std::fs::File::open(path).map_err(|e| io(Path::new(path), e))?)
    } else if url.starts_with("http://") || url.starts_with("https://") {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca).map_err(|e| io(ca, e))?;
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
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_connect(Some(std::time::Duration::from_secs(10)))
                .timeout_global(Some(std::time::Duration::from_secs(600)))
                .max_redirects(3)
                .tls_config(tls.build())
                .build(),
        );
        let resp = agent
            .get(url)
            .call()
            .map_err(|e| UpdateError::Download(format!("{url}: {e}")))?;
        if let Some(n) = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if n > max {
                return Err(UpdateError::TooLarge { max });
            }
        }
        Box::new(resp.into_body().into_with_config().limit(max + 1).reader())
    } else {
        return Err(UpdateError::Download(format!(
            "{url:?}: only http://, https:// and file:// URLs"
        )));
    };
    let mut reader = reader.take(max + 1);
    let mut f = std::fs::File::create(dest).map_err(|e| io(dest, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n: u64 = 0;
    loop {
        let k = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(UpdateError::Download(format!("{url}: {e}")));
            }
        };
        n += k as u64;
        if n > max {
            return Err(UpdateError::TooLarge { max });
        }
        h.update(&buf[..k]);
        f.write_all(&buf[..k]).map_err(|e| io(dest, e))?;
    }
    f.sync_all().map_err(|e| io(dest, e))?;
    Ok(hex::encode(h.finalize()))
}

/// Unpack a bundle archive into the (new, empty) folder `dest`: regular files and folders
/// only, relative paths without `..`, at most `max_bytes` in all.
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
                std::fs::create_dir_all(&target).map_err(|e| io(&target, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                total = total.saturating_add(size);
                if total > max_bytes {
                    return Err(UpdateError::TooLarge { max: max_bytes });
                }
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| io(&target, e))?;
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
