//! Inference engines behind the [`Classifier`](crate::model::classifier::Classifier) seam: one
//! module per engine, and only one file in it imports the engine's crate. This module holds what
//! chooses between them: [`BackendKind`], the ONNX Runtime options and the factory [`open`];
//! `library` finds `libonnxruntime.so` and probes it in a child process first.

mod library;
#[cfg(feature = "ort")]
pub mod ort;
pub mod tract;

pub use library::{
    OrtProbeError, PACKAGED_ORT_DIR, PROBE_ENV, auto_ort_library, explicit_ort_library,
    probe_child, probe_ort_library,
};

use super::LoadOptions;
use crate::model::classifier::Classifier;
use crate::model::manifest::{BundleError, Manifest};
use std::path::{Path, PathBuf};

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

/// A loaded classifier and its output width.
type Loaded = (Box<dyn Classifier>, usize);

/// A graph's declared input `[N, C, H, W]` against the manifest's size, for every engine
/// (`None`: a dynamic dim, which fits anything).
pub(crate) fn check_input_dims(
    onnx: &Path,
    dims: &[Option<i64>],
    width: u32,
    height: u32,
) -> Result<(), BundleError> {
    let expect = [1, 3, height as i64, width as i64];
    let ok = dims.len() == 4
        && dims
            .iter()
            .zip(expect)
            .all(|(d, e)| d.is_none_or(|d| d == e));
    if ok {
        return Ok(());
    }
    Err(BundleError::InputShape {
        path: onnx.into(),
        model: dims
            .iter()
            .map(|d| d.map_or("?".into(), |d| d.to_string()))
            .collect(),
        width,
        height,
    })
}

/// The backend factory: a classifier for `onnx` on the engine `opts.backend` selects (`auto`:
/// ONNX Runtime when a library loads, else tract), its output width, and which engine runs and
/// why. A new backend is one module here plus one arm in this match.
pub fn open(
    onnx: &Path,
    manifest: &Manifest,
    opts: &LoadOptions,
) -> Result<(Box<dyn Classifier>, usize, Engine), BundleError> {
    let ((classifier, width), engine) = match opts.backend {
        BackendKind::Tract => open_tract(onnx, manifest, opts, "requested (backend = \"tract\")")?,
        BackendKind::Ort => {
            let lib = explicit_ort_library(&opts.ort);
            let c = load_ort(onnx, manifest, opts, &lib)?;
            (c, ort_engine(lib, "requested (backend = \"ort\")"))
        }
        BackendKind::Auto => open_auto(onnx, manifest, opts)?,
    };
    Ok((classifier, width, engine))
}

/// `auto`: ONNX Runtime when a library is found and loads, else tract (saying why).
fn open_auto(
    onnx: &Path,
    manifest: &Manifest,
    opts: &LoadOptions,
) -> Result<(Loaded, Engine), BundleError> {
    let (candidate, why_not) = auto_ort_library(&opts.ort);
    let Some(lib) = candidate else {
        return open_tract(onnx, manifest, opts, format!("auto: {why_not}"));
    };
    match load_ort(onnx, manifest, opts, &lib) {
        Ok(c) => Ok((
            c,
            ort_engine(lib, "auto: ONNX Runtime loaded (tract not needed)"),
        )),
        // A model that is itself broken fails the same way on tract: report it.
        Err(e @ (BundleError::InputShape { .. } | BundleError::OutputWidth { .. })) => Err(e),
        Err(e) => {
            let reason = format!(
                "auto: ONNX Runtime from {} unusable ({}), falling back to tract",
                lib.display(),
                e
            );
            open_tract(onnx, manifest, opts, reason)
        }
    }
}

fn ort_engine(lib: PathBuf, reason: &str) -> Engine {
    Engine {
        backend: BackendKind::Ort,
        library: Some(lib),
        reason: reason.into(),
    }
}

/// tract, with `reason` followed by a note on the QDQ rewrite (int8 bundles) when there was one.
fn open_tract(
    onnx: &Path,
    manifest: &Manifest,
    opts: &LoadOptions,
    reason: impl Into<String>,
) -> Result<(Loaded, Engine), BundleError> {
    let c = tract::TractClassifier::load(onnx, manifest, opts.threads)?;
    let w = c.output_width();
    let mut reason = reason.into();
    if c.qdq.weights_folded + c.qdq.activation_pairs_removed > 0 {
        reason.push_str(&format!(
            "; int8 QDQ graph run as float with int8-rounded weights ({} weight dequantisations folded at load, {} activation Q/DQ pairs replaced by clamps)",
            c.qdq.weights_folded, c.qdq.activation_pairs_removed
        ));
    }
    let engine = Engine {
        backend: BackendKind::Tract,
        library: None,
        reason,
    };
    Ok(((Box::new(c), w), engine))
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
        message: crate::config::NotBuilt::new("model.backend = \"ort\"", "ort").to_string(),
    })
}
