//! Argument groups shared by several commands: the engine settings (`bench` and every command
//! that loads a model) and the model to load (`classify`, `eval`, `demo`).

use anyhow::{Context, Result};
use dermcam::model::{BackendKind, LoadOptions, Model, OrtOptions, OrtProvider};
use std::path::PathBuf;

/// Engine settings every command takes (`bench` too, so TensorRT can be benchmarked on a Jetson).
#[derive(clap::Args, Clone)]
pub(super) struct EngineArgs {
    /// ONNX Runtime execution providers in order (ort / auto): tensorrt, cuda, cpu.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cpu")]
    ort_providers: Vec<OrtProvider>,
    /// libonnxruntime.so to load (default: $ORT_DYLIB_PATH, then /usr/lib/dermcam/, then, for
    /// --backend ort, the loader path).
    #[arg(long)]
    ort_library: Option<PathBuf>,
    /// CUDA / TensorRT device.
    #[arg(long, default_value_t = 0)]
    ort_device_id: i32,
    /// TensorRT engine cache folder.
    #[arg(long)]
    trt_cache_dir: Option<PathBuf>,
    /// TensorRT fp16 engine.
    #[arg(long)]
    trt_fp16: bool,
}

impl EngineArgs {
    pub(super) fn options(&self, backend: BackendKind, threads: usize) -> LoadOptions {
        LoadOptions {
            backend,
            threads,
            ort: OrtOptions {
                library: self.ort_library.clone(),
                providers: self.ort_providers.clone(),
                device_id: self.ort_device_id,
                trt_cache_dir: self.trt_cache_dir.clone(),
                trt_fp16: self.trt_fp16,
                ..OrtOptions::default()
            },
        }
    }
}

#[derive(clap::Args, Clone)]
pub(super) struct ModelArgs {
    /// Model bundle folder (model.onnx + model.json). Default: the shipped default bundle.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Inference threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub(super) threads: usize,
    /// Inference engine: auto = ONNX Runtime when its library can be loaded, else tract.
    #[arg(long, value_enum, default_value = "auto")]
    pub(super) backend: BackendKind,
    #[command(flatten)]
    engine: EngineArgs,
}

impl ModelArgs {
    pub(super) fn options(&self) -> LoadOptions {
        self.engine.options(self.backend, self.threads)
    }
    pub(super) fn dir(&self) -> PathBuf {
        self.model
            .clone()
            .unwrap_or_else(dermcam::paths::default_model_dir)
    }
    pub(super) fn load(&self) -> Result<Model> {
        let dir = self.dir();
        let m = Model::load(&dir, &self.options())
            .with_context(|| format!("loading model bundle {}", dir.display()))?;
        log::info!("engine: {}", m.engine.summary());
        Ok(m)
    }
}
