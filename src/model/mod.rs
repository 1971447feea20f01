//! A loaded model bundle: validated manifest + a classifier backend. Everything that classifies
//! (CLI, camera pipeline, web) goes through `Model::classify`.

pub use backend::{
    BackendKind, Engine, OrtOptions, OrtProvider, PACKAGED_ORT_DIR, PROBE_ENV, auto_ort_library,
    explicit_ort_library, probe_child, probe_ort_library,
};

pub mod backend;
pub mod classifier;
pub mod decode;
pub mod heat;
pub mod manifest;
pub mod outcome;
pub mod preprocess;
#[cfg(feature = "fleet")]
pub mod signing;

use crate::model::classifier::{Classifier, Outputs, Prediction};
use crate::model::manifest::{BundleError, Manifest, read_manifest};
use crate::model::preprocess::{InputTensor, preprocess};
use image::RgbImage;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The model in use, replaceable while the appliance runs (fleet model updates, `reload-model`):
/// readers take an `Arc` per request, so a swap never waits for an inference in flight.
pub struct ModelSlot(std::sync::RwLock<std::sync::Arc<Model>>);

impl ModelSlot {
    pub fn new(m: std::sync::Arc<Model>) -> ModelSlot {
        ModelSlot(std::sync::RwLock::new(m))
    }
    pub fn get(&self) -> std::sync::Arc<Model> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set(&self, m: std::sync::Arc<Model>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = m;
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub backend: BackendKind,
    /// Inference threads; 0 = all cores.
    pub threads: usize,
    /// ONNX Runtime settings (used only by the `ort` backend).
    pub ort: OrtOptions,
}

pub struct Model {
    pub manifest: Manifest,
    pub dir: PathBuf,
    classifier: Box<dyn Classifier>,
    pub load_time: Duration,
    /// The engine actually running the bundle (resolves `auto`).
    pub engine: Engine,
    /// Last field: dropped after the engine's tensors.
    _release: ReleaseOnDrop,
}

/// Gives the pages a dropped model freed back to the system (glibc keeps them as holes in its
/// heaps otherwise): 12 `reload-model` commands on `effl0-v2` took RSS from 81 to 152 MB. Fixed
/// mmap thresholds would return them too, but make tract map and unmap its activations on
/// every inference (p50 20.6 -> 36.1 ms, measured); one `malloc_trim` per dropped model costs
/// nothing on the frame path.
struct ReleaseOnDrop;

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.manifest.name)
            .field("sha256", &self.manifest.sha256)
            .field("engine", &self.engine.backend)
            .finish()
    }
}

/// Per-call timings (milliseconds).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl Model {
    /// A model around any `Classifier` (a simulated or failing engine in tests): the manifest
    /// still decides classes, preprocessing, calibration and the refer rule.
    pub fn with_classifier(
        manifest: Manifest,
        classifier: Box<dyn Classifier>,
        reason: &str,
    ) -> Model {
        Model {
            manifest,
            dir: PathBuf::new(),
            classifier,
            load_time: Duration::ZERO,
            engine: Engine {
                backend: BackendKind::Tract,
                library: None,
                reason: reason.into(),
            },
            _release: ReleaseOnDrop,
        }
    }

    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model, BundleError> {
        let start = Instant::now();
        let manifest = read_manifest(dir)?;
        let onnx = dir.join("model.onnx");
        if !onnx.is_file() {
            return Err(BundleError::MissingFile { path: onnx });
        }
        let actual = sha256_file(&onnx).map_err(|source| BundleError::Io {
            path: onnx.clone(),
            source,
        })?;
        if !actual.eq_ignore_ascii_case(&manifest.sha256) {
            return Err(BundleError::Sha256 {
                path: onnx,
                expected: manifest.sha256.clone(),
                actual,
            });
        }
        let (classifier, width, engine) = backend::open(&onnx, &manifest, opts)?;
        if width != manifest.classes.len() {
            return Err(BundleError::OutputWidth {
                path: onnx,
                expected: manifest.classes.len(),
                actual: width,
            });
        }
        Ok(Model {
            manifest,
            dir: dir.to_path_buf(),
            classifier,
            load_time: start.elapsed(),
            engine,
            _release: ReleaseOnDrop,
        })
    }

    pub fn preprocess(&self, img: &RgbImage) -> InputTensor {
        preprocess(img, &self.manifest.input)
    }

    /// Raw outputs for one tensor; with `tta`, logits and the "not a lesion" score are averaged
    /// over the image and its mirror (the heat map stays the unflipped one's).
    pub fn outputs(
        &self,
        input: &InputTensor,
        tta: bool,
    ) -> Result<Outputs, crate::model::classifier::InferenceError> {
        let mut out = self.classifier.run(input)?;
        if tta {
            let flipped = self.classifier.run(&input.flipped())?;
            for (a, b) in out.logits.iter_mut().zip(flipped.logits) {
                *a = (*a + b) / 2.0;
            }
            if let (Some(a), Some(b)) = (out.ood.as_mut(), flipped.ood) {
                *a = (*a + b) / 2.0;
            }
        }
        Ok(out)
    }

    /// Raw logits for one tensor (with flip averaging when `tta`).
    pub fn logits(
        &self,
        input: &InputTensor,
        tta: bool,
    ) -> Result<Vec<f32>, crate::model::classifier::InferenceError> {
        Ok(self.outputs(input, tta)?.logits)
    }

    /// Preprocess + infer + calibrated softmax.
    pub fn classify(
        &self,
        img: &RgbImage,
        tta: bool,
    ) -> Result<(Prediction, Timings), crate::model::classifier::InferenceError> {
        let t0 = Instant::now();
        let input = self.preprocess(img);
        let t1 = Instant::now();
        let out = self.outputs(&input, tta)?;
        let t2 = Instant::now();
        let timings = Timings {
            preprocess_ms: (t1 - t0).as_secs_f64() * 1e3,
            inference_ms: (t2 - t1).as_secs_f64() * 1e3,
        };
        Ok((Prediction::from_outputs(&out, &self.manifest), timings))
    }
}

/// Bundle folders under `root` (each holding a model.json), sorted by name.
pub fn find_bundles(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.json").is_file())
        .collect();
    v.sort();
    v
}
