//! ONNX Runtime backend (`mod.rs` is the only file that imports `ort`): CPU, CUDA and TensorRT
//! execution providers, in the configured order. `libonnxruntime.so` is loaded at run time
//! (`load-dynamic`), so the binary builds anywhere and uses whatever ONNX Runtime the board
//! provides (on Jetson: the TensorRT-enabled build from JetPack). A provider that cannot be
//! registered is an error: ONNX Runtime's default is to log and fall back to CPU, which would
//! hide a broken GPU setup. `checks` holds the load checks that need no ONNX Runtime types.

mod checks;

use crate::model::backend::{OrtOptions, OrtProvider};
use crate::model::classifier::{Classifier, InferenceError, OutputMap, Outputs};
use crate::model::manifest::{BundleError, Manifest};
use crate::model::preprocess::InputTensor;
use checks::backend_error;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct OrtClassifier {
    // `Session::run` needs `&mut`; one inference at a time per session.
    session: Mutex<Session>,
    input_name: String,
    outputs: usize,
    extra: OutputMap,
}

/// ONNX Runtime is loaded once per process: remember from where. A failed load is not
/// remembered, so a corrected path can be tried again.
static ENV: Mutex<Option<(PathBuf, ort::environment::Environment)>> = Mutex::new(None);

/// Why ONNX Runtime could not be loaded (the `auto` backend then falls back to tract).
#[derive(Debug, thiserror::Error)]
pub enum OrtLoadError {
    #[error(
        "ONNX Runtime was already loaded from {} in this process; cannot switch to {}",
        loaded.display(),
        wanted.display()
    )]
    AlreadyLoaded { loaded: PathBuf, wanted: PathBuf },
    #[error("cannot load ONNX Runtime")]
    Init(#[source] ort::LoadDynamicError),
    #[error("cannot create ONNX Runtime environment")]
    Environment(#[source] ort::Error),
    #[error("cannot load ONNX Runtime from {}: {what}", lib.display())]
    Panicked { lib: PathBuf, what: String },
}

fn environment(lib: &Path) -> Result<ort::environment::Environment, OrtLoadError> {
    let mut g = ENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((path, env)) = g.as_ref() {
        if path == lib {
            return Ok(env.clone());
        }
        return Err(OrtLoadError::AlreadyLoaded {
            loaded: path.clone(),
            wanted: lib.into(),
        });
    }
    // A library that is not ONNX Runtime (or an incompatible one) must give an error, never
    // take the process down: the `auto` backend then falls back to tract.
    let built = std::panic::catch_unwind(|| {
        ort::init_from(lib)
            .map_err(OrtLoadError::Init)?
            .with_name("dermcam")
            .build()
            .map_err(OrtLoadError::Environment)
    });
    let env = match built {
        Ok(r) => r?,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            return Err(OrtLoadError::Panicked {
                lib: lib.into(),
                what,
            });
        }
    };
    *g = Some((lib.to_path_buf(), env.clone()));
    Ok(env)
}

fn providers(opts: &OrtOptions) -> Vec<ExecutionProviderDispatch> {
    opts.providers
        .iter()
        .map(|p| match p {
            OrtProvider::Tensorrt => {
                let mut trt = ep::TensorRT::default()
                    .with_device_id(opts.device_id)
                    .with_fp16(opts.trt_fp16)
                    .with_int8(opts.trt_int8);
                if let Some(dir) = &opts.trt_cache_dir {
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display())
                        .with_timing_cache(true)
                        .with_timing_cache_path(dir.display());
                }
                trt.build().error_on_failure()
            }
            OrtProvider::Cuda => ep::CUDA::default()
                .with_device_id(opts.device_id)
                .build()
                .error_on_failure(),
            OrtProvider::Cpu => ep::CPU::default().build().error_on_failure(),
        })
        .collect()
}

impl OrtClassifier {
    /// `threads`: ONNX Runtime intra-op threads, 0 = its default (all cores).
    pub fn load(
        onnx: &Path,
        manifest: &Manifest,
        threads: usize,
        opts: &OrtOptions,
        lib: &Path,
    ) -> Result<Self, BundleError> {
        checks::preflight(onnx, opts)?;
        let env = environment(lib).map_err(|e| backend_error(onnx, checks::with_cause(&e)))?;
        let session = build_session(&env, onnx, threads, opts, lib)?;
        Self::from_session(session, onnx, manifest)
    }

    /// Checks the session's input and output against the manifest.
    fn from_session(
        session: Session,
        onnx: &Path,
        manifest: &Manifest,
    ) -> Result<Self, BundleError> {
        let input = session
            .inputs()
            .first()
            .ok_or_else(|| checks::model_error(onnx, "model has no inputs"))?;
        let input_name = input.name().to_string();
        if let Some(shape) = input.dtype().tensor_shape() {
            let dims: Vec<i64> = shape.iter().copied().collect();
            checks::input_dims(onnx, manifest, &dims)?;
        }
        let first_output: Option<Vec<i64>> = session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape())
            .map(|s| s.iter().copied().collect());
        let outputs = checks::output_width(onnx, first_output.as_deref())?;
        let names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let extra = OutputMap::new(&names, manifest, onnx)?;
        Ok(OrtClassifier {
            session: Mutex::new(session),
            input_name,
            outputs,
            extra,
        })
    }

    pub fn output_width(&self) -> usize {
        self.outputs
    }
}

/// A session for `onnx` on the configured execution providers (all of them must register).
fn build_session(
    env: &ort::environment::Environment,
    onnx: &Path,
    threads: usize,
    opts: &OrtOptions,
    lib: &Path,
) -> Result<Session, BundleError> {
    let mut builder = Session::builder(env)
        .map_err(|e| backend_error(onnx, e.to_string()))?
        .with_execution_providers(providers(opts))
        .map_err(|e| backend_error(onnx, checks::providers_refused(opts, lib, e)))?;
    if !opts.providers.contains(&OrtProvider::Cpu) {
        builder = builder
            .with_disable_cpu_fallback()
            .map_err(|e| backend_error(onnx, e.to_string()))?;
    }
    if threads > 0 {
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| backend_error(onnx, e.to_string()))?;
    }
    builder
        .commit_from_file(onnx)
        .map_err(|e| checks::model_error(onnx, format!("ONNX Runtime: {e}")))
}

impl Classifier for OrtClassifier {
    fn run(&self, input: &InputTensor) -> Result<Outputs, InferenceError> {
        let e = |e: ort::Error| InferenceError(format!("ONNX Runtime: {e}"));
        // A view of the preprocessed tensor: no per-frame copy.
        let tensor =
            TensorRef::from_array_view((input.shape(), input.data.as_slice())).map_err(e)?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let out = session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(e)?;
        let values = |i: usize| -> Result<(Vec<usize>, Vec<f32>), InferenceError> {
            let (shape, data) = out[i].try_extract_tensor::<f32>().map_err(e)?;
            Ok((
                shape.iter().map(|&d| d.max(0) as usize).collect(),
                data.to_vec(),
            ))
        };
        let logits = values(0)?.1;
        self.extra.build(logits, values)
    }
}
