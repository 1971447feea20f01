//! What [`OrtClassifier::load`](super::OrtClassifier::load) checks before and after ONNX Runtime
//! builds the session, on plain values: no ONNX Runtime types here (only `mod.rs` imports `ort`).

use crate::model::backend::OrtOptions;
use crate::model::manifest::{BundleError, Manifest};
use std::path::Path;

/// An ONNX Runtime failure that is not the model's fault (the `auto` backend falls back on it).
pub(super) fn backend_error(onnx: &Path, message: String) -> BundleError {
    BundleError::Backend {
        path: onnx.into(),
        backend: "ort".into(),
        message,
    }
}

/// `e` and, when it has one, its cause (the load errors wrap the reason ONNX Runtime gives).
pub(super) fn with_cause(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(why) => format!("{e}: {why}"),
        None => e.to_string(),
    }
}

/// Before ONNX Runtime is touched: the settings are consistent and the TensorRT cache exists.
pub(super) fn preflight(onnx: &Path, opts: &OrtOptions) -> Result<(), BundleError> {
    if let Some(p) = opts.problems().first() {
        return Err(backend_error(onnx, format!("[model.ort] {p}")));
    }
    if let Some(dir) = &opts.trt_cache_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| backend_error(onnx, format!("trt_cache_dir {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Why the configured execution providers could not be registered.
pub(super) fn providers_refused(
    opts: &OrtOptions,
    lib: &Path,
    e: impl std::fmt::Display,
) -> String {
    let names: Vec<&str> = opts.providers.iter().map(|p| p.as_str()).collect();
    format!(
        "execution providers [{}] requested, but ONNX Runtime from {} cannot register them: {e}",
        names.join(", "),
        lib.display()
    )
}

/// A model-side failure (the file itself), reported as such even by the `auto` backend.
pub(super) fn model_error(onnx: &Path, message: impl Into<String>) -> BundleError {
    BundleError::Model {
        path: onnx.into(),
        message: message.into(),
    }
}

/// Fixed input dims must agree with the manifest (dynamic ones, negative, are fine).
pub(super) fn input_dims(
    onnx: &Path,
    manifest: &Manifest,
    dims: &[i64],
) -> Result<(), BundleError> {
    let dims: Vec<Option<i64>> = dims.iter().map(|&d| (d >= 0).then_some(d)).collect();
    crate::model::backend::check_input_dims(
        onnx,
        &dims,
        manifest.input.width,
        manifest.input.height,
    )
}

/// Values in the first output (dynamic dims count as 1); `None` = it is not a tensor.
pub(super) fn output_width(onnx: &Path, dims: Option<&[i64]>) -> Result<usize, BundleError> {
    dims.map(|s| s.iter().map(|&d| d.max(1) as usize).product::<usize>())
        .ok_or_else(|| model_error(onnx, "model has no tensor output"))
}
