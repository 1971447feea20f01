//! Where `libonnxruntime.so` is found (configured, `$ORT_DYLIB_PATH`, the packaged copy, an
//! active Python environment) and the crash-isolating probe that loads it first in a child
//! process. Plain paths and processes: no ONNX Runtime types, so it builds without `ort`.

use super::OrtOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the arm64 package installs ONNX Runtime's CPU library (`auto` looks here last).
pub const PACKAGED_ORT_DIR: &str = "/usr/lib/dermcam";

/// The library `backend = "ort"` loads: the configured one, else `$ORT_DYLIB_PATH`, else the
/// packaged copy, else `libonnxruntime.so` from the dynamic loader's search path.
pub fn explicit_ort_library(opts: &OrtOptions) -> PathBuf {
    auto_ort_library(opts)
        .0
        .unwrap_or_else(|| PathBuf::from("libonnxruntime.so"))
}

/// The library `auto` would try, or why there is none. The configured library and
/// `$ORT_DYLIB_PATH` win (a TensorRT-enabled build on Jetson) over the packaged CPU library.
pub fn auto_ort_library(opts: &OrtOptions) -> (Option<PathBuf>, String) {
    if !cfg!(feature = "ort") {
        return (
            None,
            format!(
                "{}: tract",
                crate::config::NotBuilt::new("model.backend = \"auto\" with ONNX Runtime", "ort")
            ),
        );
    }
    if let Some(l) = &opts.library {
        return (Some(l.clone()), String::new());
    }
    if let Some(l) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return (Some(PathBuf::from(l)), String::new());
    }
    let dir = std::env::var_os("DERMCAM_ORT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PACKAGED_ORT_DIR));
    if let Some(l) = packaged_ort_library(&dir) {
        return (Some(l), String::new());
    }
    if let Some(l) = python_env_ort_library() {
        return (Some(l), String::new());
    }
    (
        None,
        format!(
            "no ONNX Runtime library (no [model.ort] library, no $ORT_DYLIB_PATH, no libonnxruntime.so* in {}, no onnxruntime in an active Python environment): tract; for the faster engine `pip install onnxruntime` in an activated venv or set ORT_DYLIB_PATH",
            dir.display()
        ),
    )
}

/// The `onnxruntime` wheel's library in the active Python environment (`$VIRTUAL_ENV`,
/// `$CONDA_PREFIX`): a source checkout with the model toolchain's venv activated gets ONNX
/// Runtime without setting anything.
fn python_env_ort_library() -> Option<PathBuf> {
    ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .into_iter()
        .filter_map(|v| std::env::var_os(v).filter(|p| !p.is_empty()))
        .find_map(|prefix| {
            let lib = Path::new(&prefix).join("lib");
            let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("python3"))
                })
                .collect();
            pythons.sort();
            pythons
                .into_iter()
                .rev()
                .find_map(|py| packaged_ort_library(&py.join("site-packages/onnxruntime/capi")))
        })
}

/// `libonnxruntime.so` in `dir`, else its newest `libonnxruntime.so.<version>`.
fn packaged_ort_library(dir: &Path) -> Option<PathBuf> {
    let plain = dir.join("libonnxruntime.so");
    if plain.is_file() {
        return Some(plain);
    }
    let version = |p: &Path| -> Vec<u64> {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("libonnxruntime.so."))
            .map(|v| v.split('.').map(|x| x.parse().unwrap_or(0)).collect())
            .unwrap_or_default()
    };
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && !version(p).is_empty())
        .max_by_key(|p| version(p))
}

/// Environment variable that turns the `dermcam` binary into the ONNX Runtime probe child.
pub const PROBE_ENV: &str = "DERMCAM_PROBE_ORT";

/// The probe child: dlopen the library and look up `OrtGetApiBase` (this runs the library's
/// static initialisers, where a crash would happen). Exit status 0 = loaded, 2 = not loadable
/// (the in-process load then reports why); a crash shows as a signal to the parent.
pub fn probe_child(lib: &Path) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(lib.as_os_str().as_bytes()) else {
        return 2;
    };
    // SAFETY: loading a shared object in a process that exits right after.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() || libc::dlsym(h, c"OrtGetApiBase".as_ptr()).is_null() {
            return 2;
        }
    }
    0
}

/// Loads `lib` in a child process (the `dermcam` binary itself) before this process does: a
/// library whose initialisers crash (seen: ONNX Runtime 1.31 under qemu-user, which shows the
/// host's /proc/cpuinfo) is then an error, not a crash. Only where this process is the
/// `dermcam` binary (tests and other hosts of the library load in-process directly).
pub fn probe_ort_library(lib: &Path) -> Result<(), OrtProbeError> {
    // Once per library and process (the live and the web model load the same one).
    static DONE: std::sync::Mutex<Vec<(PathBuf, Result<(), OrtProbeError>)>> =
        std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = done.iter().find(|(p, _)| p == lib) {
        return r.clone();
    }
    let r = probe_uncached(lib);
    done.push((lib.to_path_buf(), r.clone()));
    r
}

/// An ONNX Runtime library that failed in the probe process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrtProbeError {
    #[error(
        "cannot load ONNX Runtime from {}: the library crashed while loading (signal {signal}) in a probe process",
        lib.display()
    )]
    Crashed { lib: PathBuf, signal: i32 },
    #[error(
        "cannot load ONNX Runtime from {}: loading it did not finish within 20 s in a probe process",
        lib.display()
    )]
    Hung { lib: PathBuf },
}

fn probe_uncached(lib: &Path) -> Result<(), OrtProbeError> {
    use std::os::unix::process::ExitStatusExt;
    let Ok(exe) = std::env::current_exe() else {
        return Ok(());
    };
    if exe.file_name().and_then(|n| n.to_str()) != Some("dermcam") {
        return Ok(());
    }
    let mut child = match std::process::Command::new(&exe)
        .env(PROBE_ENV, lib)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return Ok(()),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                return match st.signal() {
                    Some(signal) => Err(OrtProbeError::Crashed {
                        lib: lib.into(),
                        signal,
                    }),
                    None => Ok(()),
                };
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(OrtProbeError::Hung { lib: lib.into() });
            }
        }
    }
}
