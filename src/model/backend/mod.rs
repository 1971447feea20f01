//! Inference engines behind the [`Classifier`](crate::model::classifier::Classifier) seam: one
//! file per engine, and only that file imports the engine's crate. This module holds what
//! chooses between them: [`BackendKind`], the ONNX Runtime options, where `libonnxruntime.so`
//! is found, and the crash-isolating probe that loads it first in a child process.

#[cfg(feature = "ort")]
pub mod ort;
pub mod tract;

use super::LoadOptions;
use crate::model::classifier::Classifier;
use crate::model::manifest::{BundleError, Manifest};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Which inference engine runs the bundle.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// ONNX Runtime when a `libonnxruntime` can be loaded (configured library,
    /// `$ORT_DYLIB_PATH`, the copy the package installs under `/usr/lib/dermcam/`), else tract.
    #[default]
    Auto,
    Tract,
    /// ONNX Runtime (TensorRT / CUDA / CPU execution providers); needs the `ort` feature.
    Ort,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Auto => "auto",
            BackendKind::Tract => "tract",
            BackendKind::Ort => "ort",
        }
    }
}

/// Where the arm64 package installs ONNX Runtime's CPU library (`auto` looks here last).
pub const PACKAGED_ORT_DIR: &str = "/usr/lib/dermcam";

/// Which engine a loaded model runs on, and why (start-up logs print `summary()`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Engine {
    /// `tract` or `ort`.
    pub backend: BackendKind,
    /// The ONNX Runtime library in use (`ort` only).
    pub library: Option<PathBuf>,
    /// Why this engine: the request and, for `auto`, why not the other one.
    pub reason: String,
}

impl Engine {
    pub fn summary(&self) -> String {
        match &self.library {
            Some(l) => format!("{} ({}): {}", self.backend.name(), l.display(), self.reason),
            None => format!("{}: {}", self.backend.name(), self.reason),
        }
    }
}

/// An ONNX Runtime execution provider.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OrtProvider {
    Tensorrt,
    Cuda,
    Cpu,
}

impl OrtProvider {
    /// The config / flag word (`tensorrt`, `cuda`, `cpu`).
    pub fn as_str(&self) -> &'static str {
        match self {
            OrtProvider::Tensorrt => "tensorrt",
            OrtProvider::Cuda => "cuda",
            OrtProvider::Cpu => "cpu",
        }
    }
}

/// `[model.ort]`: ONNX Runtime backend settings. Parsed on every build (the backend itself needs
/// the `ort` feature).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrtOptions {
    /// `libonnxruntime.so` to load; unset = `$ORT_DYLIB_PATH`, else the packaged copy under
    /// `/usr/lib/dermcam/`, else (`backend = "ort"` only) `libonnxruntime.so` from the dynamic
    /// loader's search path.
    pub library: Option<PathBuf>,
    /// Execution providers in order of preference. Every provider listed must load: a missing
    /// one is an error, never a silent fallback. Without `cpu` in the list, a graph that the GPU
    /// providers cannot run entirely is an error too.
    pub providers: Vec<OrtProvider>,
    /// CUDA / TensorRT device.
    pub device_id: i32,
    /// TensorRT engine cache (building engines takes minutes; cached ones load in seconds).
    pub trt_cache_dir: Option<PathBuf>,
    pub trt_fp16: bool,
    pub trt_int8: bool,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            library: None,
            providers: vec![OrtProvider::Cpu],
            device_id: 0,
            trt_cache_dir: None,
            trt_fp16: false,
            trt_int8: false,
        }
    }
}

impl OrtOptions {
    /// Problems with the settings themselves (the config reports them with the file name).
    pub fn problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.providers.is_empty() {
            v.push("providers must name at least one of tensorrt, cuda, cpu".into());
        }
        for (i, p) in self.providers.iter().enumerate() {
            if self.providers[..i].contains(p) {
                v.push(format!("provider {} is listed twice", p.as_str()));
            }
        }
        let trt = self.providers.contains(&OrtProvider::Tensorrt);
        if !trt && (self.trt_fp16 || self.trt_int8 || self.trt_cache_dir.is_some()) {
            v.push("trt_fp16 / trt_int8 / trt_cache_dir need \"tensorrt\" in providers".into());
        }
        v
    }
}

/// The backend factory: a classifier for `onnx` on the engine `opts.backend` selects (`auto`:
/// ONNX Runtime when a library loads, else tract), its output width, and which engine runs and
/// why. A new backend is one file here plus one arm in this match.
pub fn open(
    onnx: &Path,
    manifest: &Manifest,
    opts: &LoadOptions,
) -> Result<(Box<dyn Classifier>, usize, Engine), BundleError> {
    // The QDQ rewrite (int8 bundles) is noted in the engine line.
    let tract_note = std::cell::RefCell::new(String::new());
    let load_tract = || -> Result<(Box<dyn Classifier>, usize), BundleError> {
        let c = tract::TractClassifier::load(onnx, manifest, opts.threads)?;
        let w = c.output_width();
        if c.qdq.weights_folded + c.qdq.activation_pairs_removed > 0 {
            *tract_note.borrow_mut() = format!(
                "; int8 QDQ graph run as float with int8-rounded weights ({} weight dequantisations folded at load, {} activation Q/DQ pairs replaced by clamps)",
                c.qdq.weights_folded, c.qdq.activation_pairs_removed
            );
        }
        Ok((Box::new(c), w))
    };
    let ((classifier, width), engine) = match opts.backend {
        BackendKind::Tract => (
            load_tract()?,
            Engine {
                backend: BackendKind::Tract,
                library: None,
                reason: "requested (backend = \"tract\")".into(),
            },
        ),
        BackendKind::Ort => {
            let lib = explicit_ort_library(&opts.ort);
            let c = load_ort(onnx, manifest, opts, &lib)?;
            (
                c,
                Engine {
                    backend: BackendKind::Ort,
                    library: Some(lib),
                    reason: "requested (backend = \"ort\")".into(),
                },
            )
        }
        BackendKind::Auto => {
            let (candidate, why_not) = auto_ort_library(&opts.ort);
            match candidate {
                Some(lib) => match load_ort(onnx, manifest, opts, &lib) {
                    Ok(c) => (
                        c,
                        Engine {
                            backend: BackendKind::Ort,
                            library: Some(lib),
                            reason: "auto: ONNX Runtime loaded (tract not needed)".into(),
                        },
                    ),
                    // A model that is itself broken fails the same way on tract: report it.
                    Err(e @ (BundleError::InputShape { .. } | BundleError::OutputWidth { .. })) => {
                        return Err(e);
                    }
                    Err(e) => (
                        load_tract()?,
                        Engine {
                            backend: BackendKind::Tract,
                            library: None,
                            reason: format!(
                                "auto: ONNX Runtime from {} unusable ({}), falling back to tract",
                                lib.display(),
                                e
                            ),
                        },
                    ),
                },
                None => (
                    load_tract()?,
                    Engine {
                        backend: BackendKind::Tract,
                        library: None,
                        reason: format!("auto: {why_not}"),
                    },
                ),
            }
        }
    };
    let mut engine = engine;
    engine.reason.push_str(&tract_note.borrow());
    Ok((classifier, width, engine))
}

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
            "this dermcam was built without feature ort: tract".into(),
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
pub(super) fn packaged_ort_library(dir: &Path) -> Option<PathBuf> {
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

pub(super) fn probe_uncached(lib: &Path) -> Result<(), OrtProbeError> {
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

#[cfg(feature = "ort")]
pub(super) fn load_ort(
    onnx: &Path,
    manifest: &Manifest,
    opts: &LoadOptions,
    lib: &Path,
) -> Result<(Box<dyn Classifier>, usize), BundleError> {
    probe_ort_library(lib).map_err(|e| BundleError::Backend {
        path: onnx.into(),
        backend: "ort".into(),
        message: e.to_string(),
    })?;
    let c = crate::model::backend::ort::OrtClassifier::load(
        onnx,
        manifest,
        opts.threads,
        &opts.ort,
        lib,
    )?;
    let w = c.output_width();
    Ok((Box::new(c), w))
}

/// Without the `ort` feature a config or flag that asks for ONNX Runtime gets this error instead
/// of a silent fallback to tract.
#[cfg(not(feature = "ort"))]
pub(super) fn load_ort(
    onnx: &Path,
    _: &Manifest,
    _: &LoadOptions,
    _: &Path,
) -> Result<(Box<dyn Classifier>, usize), BundleError> {
    Err(BundleError::Backend {
        path: onnx.into(),
        backend: "ort".into(),
        message: "this dermcam was built without feature ort (ONNX Runtime / TensorRT backend)"
            .into(),
    })
}
