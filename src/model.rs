//! A loaded model bundle: validated manifest + a classifier backend. Everything that classifies
//! (CLI, camera pipeline, web) goes through `Model::classify`.

use crate::classifier::{Classifier, Prediction};
use crate::manifest::{BundleError, Manifest, read_manifest};
use crate::preprocess::{InputTensor, preprocess};
use image::RgbImage;
use sha2::{Digest, Sha256};
use std::io::Read;
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
    #[default]
    Tract,
    /// ONNX Runtime (TensorRT / CUDA / CPU execution providers); needs the `ort` feature.
    Ort,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub backend: BackendKind,
    /// Inference threads; 0 = all cores.
    pub threads: usize,
    /// ONNX Runtime settings (used only by the `ort` backend).
    pub ort: OrtOptions,
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

/// `[model.ort]`: ONNX Runtime backend settings. Parsed on every build (the backend itself needs
/// the `ort` feature).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrtOptions {
    /// `libonnxruntime.so` to load; unset = `$ORT_DYLIB_PATH`, else `libonnxruntime.so` from the
    /// dynamic loader's search path.
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
                v.push(format!("provider {p:?} is listed twice"));
            }
        }
        let trt = self.providers.contains(&OrtProvider::Tensorrt);
        if !trt && (self.trt_fp16 || self.trt_int8 || self.trt_cache_dir.is_some()) {
            v.push("trt_fp16 / trt_int8 / trt_cache_dir need \"tensorrt\" in providers".into());
        }
        v
    }
}

pub struct Model {
    pub manifest: Manifest,
    pub dir: PathBuf,
    classifier: Box<dyn Classifier>,
    pub load_time: Duration,
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
        let (classifier, width): (Box<dyn Classifier>, usize) = match opts.backend {
            BackendKind::Tract => {
                let c =
                    crate::backend_tract::TractClassifier::load(&onnx, &manifest, opts.threads)?;
                let w = c.output_width();
                (Box::new(c), w)
            }
            BackendKind::Ort => load_ort(&onnx, &manifest, opts)?,
        };
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
        })
    }

    pub fn preprocess(&self, img: &RgbImage) -> InputTensor {
        preprocess(img, &self.manifest.input)
    }

    /// Raw logits for one tensor (with flip averaging of the logits when `tta`).
    pub fn logits(
        &self,
        input: &InputTensor,
        tta: bool,
    ) -> Result<Vec<f32>, crate::classifier::InferenceError> {
        let mut logits = self.classifier.logits(input)?;
        if tta {
            let flipped = self.classifier.logits(&input.flipped())?;
            for (a, b) in logits.iter_mut().zip(flipped) {
                *a = (*a + b) / 2.0;
            }
        }
        Ok(logits)
    }

    /// Preprocess + infer + calibrated softmax.
    pub fn classify(
        &self,
        img: &RgbImage,
        tta: bool,
    ) -> Result<(Prediction, Timings), crate::classifier::InferenceError> {
        let t0 = Instant::now();
        let input = self.preprocess(img);
        let t1 = Instant::now();
        let logits = self.logits(&input, tta)?;
        let t2 = Instant::now();
        let timings = Timings {
            preprocess_ms: (t1 - t0).as_secs_f64() * 1e3,
            inference_ms: (t2 - t1).as_secs_f64() * 1e3,
        };
        Ok((Prediction::from_logits(&logits, &self.manifest), timings))
    }
}

#[cfg(feature = "ort")]
fn load_ort(
    onnx: &Path,
    manifest: &Manifest,
    opts: &LoadOptions,
) -> Result<(Box<dyn Classifier>, usize), BundleError> {
    let c = crate::backend_ort::OrtClassifier::load(onnx, manifest, opts.threads, &opts.ort)?;
    let w = c.output_width();
    Ok((Box::new(c), w))
}

/// Without the `ort` feature a config or flag that asks for ONNX Runtime gets this error instead
/// of a silent fallback to tract.
#[cfg(not(feature = "ort"))]
fn load_ort(
    onnx: &Path,
    _: &Manifest,
    _: &LoadOptions,
) -> Result<(Box<dyn Classifier>, usize), BundleError> {
    Err(BundleError::Backend {
        path: onnx.into(),
        backend: "ort".into(),
        message: "this dermcam was built without feature ort (ONNX Runtime / TensorRT backend)"
            .into(),
    })
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
