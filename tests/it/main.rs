//! dermcam integration tests (one binary). They use the real shipped model bundles and the
//! bundled sample images; nothing here needs a camera, a GPU, the network or apt.

mod bundle;
mod cli;
mod engine;
mod faults;
#[cfg(feature = "fleet")]
mod fleet;
#[cfg(feature = "web")]
mod hardening;
mod installed;
#[cfg(feature = "ort")]
mod ort;
mod pipeline;
mod reliability;
mod render;
mod service;
#[cfg(feature = "web")]
mod web;

use dermcam::model::{LoadOptions, Model};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bundle_dir(name: &str) -> PathBuf {
    root().join("models").join(name)
}

pub fn default_bundle() -> PathBuf {
    bundle_dir(dermcam::DEFAULT_BUNDLE)
}

pub fn samples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/samples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "bundled samples missing");
    v
}

/// True class folder from a sample file name (`<class>__<ISIC id>.jpg`).
pub fn sample_class(p: &Path) -> String {
    p.file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .split("__")
        .next()
        .unwrap()
        .to_string()
}

/// Models are loaded once per test binary (loading costs ~0.5 s each).
pub fn model(name: &str) -> Arc<Model> {
    static CACHE: OnceLock<Mutex<Vec<(String, Arc<Model>)>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // A failed load panics after the lock is released, so one missing bundle cannot poison
    // the cache for every other test.
    let loaded = {
        let mut g = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, m)) = g.iter().find(|(n, _)| n == name) {
            return m.clone();
        }
        let r = Model::load(
            &bundle_dir(name),
            &LoadOptions {
                threads: 2,
                ..Default::default()
            },
        )
        .map(Arc::new);
        if let Ok(m) = &r {
            g.push((name.to_string(), m.clone()));
        }
        r
    };
    loaded.unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn default_model() -> Arc<Model> {
    model(dermcam::DEFAULT_BUNDLE)
}

/// Poll `f` every 10 ms until it holds or `timeout` passes; returns its last answer.
pub fn wait_until(timeout: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    f()
}

/// `wait_until`, failing the test with `what` on timeout.
pub fn wait_for(what: &str, timeout: std::time::Duration, f: impl FnMut() -> bool) {
    assert!(wait_until(timeout, f), "timed out waiting for {what}");
}

/// A slideshow of the bundled samples, one every `interval_ms`.
pub fn slideshow(interval_ms: u64, repeat: bool) -> dermcam::source::ImagesSource {
    dermcam::source::ImagesSource::new(
        root().join("tests/samples").to_str().unwrap(),
        std::time::Duration::from_millis(interval_ms),
        repeat,
    )
    .unwrap()
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Write `dir/config.toml` for `dermcam run`: a slideshow of `images` (a file, folder or glob)
/// every `interval_ms`, the given `[screen]` body, web off, then `extra` sections.
pub fn run_config(
    dir: &Path,
    images: &Path,
    interval_ms: u64,
    repeat: bool,
    screen: &str,
    extra: &str,
) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"images\"\npath = \"{}\"\ninterval_ms = {interval_ms}\nloop = {repeat}\n\n[screen]\n{screen}\n\n[web]\nenabled = false\n\n{extra}\n",
            images.display()
        ),
    )
    .unwrap();
    config
}

/// A fresh scratch folder under target/.
pub fn scratch(name: &str) -> PathBuf {
    let d = root()
        .join("target/test-scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn copy_bundle(name: &str, to: &Path) -> PathBuf {
    let dst = to.join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["model.onnx", "model.json"] {
        std::fs::copy(bundle_dir(name).join(f), dst.join(f)).unwrap();
    }
    dst
}

/// Run the built `dermcam` binary: (exit code, stdout + stderr).
pub fn dermcam_bin(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(args)
        .env_remove("DERMCAM_MODEL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}
