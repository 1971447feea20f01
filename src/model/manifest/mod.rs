//! Model bundle manifest (`model.json`): the contract between the training toolchain and the
//! device. Loading validates every field and names the file and field on failure.

mod validate;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Manifest schema versions this build understands.
pub const SUPPORTED_SCHEMA: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: file is missing")]
    MissingFile { path: PathBuf },
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid manifest JSON")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: unsupported schema_version {found} (this dermcam reads version {supported})")]
    Schema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: &'static str,
        message: String,
    },
    #[error("{path}: sha256 mismatch: manifest says {expected}, file is {actual}")]
    Sha256 {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: the model cannot be loaded: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{path}: model input is {model:?} but model.json `input` says 1x3x{height}x{width}")]
    InputShape {
        path: PathBuf,
        model: Vec<String>,
        width: u32,
        height: u32,
    },
    #[error("{path}: model outputs {actual} logits but model.json `classes` lists {expected}")]
    OutputWidth {
        path: PathBuf,
        expected: usize,
        actual: usize,
    },
    #[error("{path}: backend `{backend}` is not available: {message}")]
    Backend {
        path: PathBuf,
        backend: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Int8,
    F16,
}

impl Precision {
    /// The manifest's word (`fp32`, `int8`, `f16`): what every output prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
            Precision::F16 => "f16",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    Malignant,
    PreMalignant,
    Benign,
    Inflammatory,
    Infectious,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassInfo {
    pub id: usize,
    /// Dataset folder / manifest.csv class name.
    pub folder: String,
    /// Name shown to people.
    pub name: String,
    pub risk: Risk,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResizePolicy {
    /// Resize the whole image to the input size (aspect ratio not kept).
    Squash,
    /// Take the centred crop with the input's aspect ratio whose short side is
    /// `crop_fraction` of the image's, then resize it to the input size.
    CenterCrop { crop_fraction: f64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub channels: String,
    pub layout: String,
    pub resize: ResizePolicy,
    pub interpolation: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Colour constancy on the resized crop, before mean/std (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour_constancy: Option<ColourConstancy>,
}

/// Shades of Gray (Finlayson & Trezzi 2004): each channel is scaled so that its p-norm over the
/// image equals the mean of the three; p = 1 is gray-world, large p approaches max-RGB. The ISIC
/// 2018/2019 winners used p = 6 for photos from many cameras.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ColourConstancy {
    ShadesOfGray { p: f64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub kind: String,
}

/// The "refer" decision: a clinician should see the lesion when the calibrated probabilities of
/// `classes` (the malignant ones) sum to at least `threshold`. The toolchain chooses the threshold
/// on lesion-clean validation for a target sensitivity and records what it gave.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReferSpec {
    pub classes: Vec<String>,
    pub threshold: f32,
    /// target_sensitivity, val_sensitivity, val_specificity, chosen_on: kept verbatim.
    #[serde(flatten)]
    pub recorded: serde_json::Map<String, serde_json::Value>,
}

/// The "not a lesion" gate: the graph output `output` is a distance from the training lesions;
/// over `threshold` the image is not classified. The toolchain sets the threshold from
/// lesion-clean validation lesions (the share it turns away) and records what it measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OodSpec {
    pub output: String,
    pub threshold: f32,
    /// method, val_turned_away, auroc, ...: kept verbatim.
    #[serde(flatten)]
    pub recorded: serde_json::Map<String, serde_json::Value>,
}

/// Class-activation maps: the graph output `output` has shape [1, classes, h, w].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CamSpec {
    pub output: String,
}

/// Threshold used for bundles made before the refer decision existed (no calibrated value).
pub const UNCALIBRATED_REFER_THRESHOLD: f32 = 0.5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub architecture: String,
    pub precision: Precision,
    pub classes: Vec<ClassInfo>,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub temperature: f32,
    pub abstain_threshold: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refer: Option<ReferSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood: Option<OodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cam: Option<CamSpec>,
    pub sha256: String,
    /// Dataset, split, training/export commands, git commit: kept verbatim.
    pub provenance: serde_json::Value,
    /// Validation metrics written by the toolchain (shown by `dermcam models`).
    #[serde(default)]
    pub metrics: serde_json::Value,
}

impl Manifest {
    /// Parse and validate a manifest's text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, BundleError> {
        // Read the version first so an unknown schema gets its own message, not a field error.
        #[derive(Deserialize)]
        struct Version {
            schema_version: Option<u32>,
        }
        let v: Version = serde_json::from_str(text).map_err(|source| BundleError::Json {
            path: path.into(),
            source,
        })?;
        let field = |field: &'static str, message: String| BundleError::Field {
            path: path.into(),
            field,
            message,
        };
        match v.schema_version {
            None => return Err(field("schema_version", "missing".into())),
            Some(SUPPORTED_SCHEMA) => {}
            Some(found) => {
                return Err(BundleError::Schema {
                    path: path.into(),
                    found,
                    supported: SUPPORTED_SCHEMA,
                });
            }
        }
        let m: Manifest = serde_json::from_str(text).map_err(|source| BundleError::Json {
            path: path.into(),
            source,
        })?;
        m.validate(path)?;
        Ok(m)
    }

    /// Validation metric by JSON pointer, e.g. `/val/balanced_accuracy`.
    pub fn metric(&self, pointer: &str) -> Option<f64> {
        self.metrics.pointer(pointer).and_then(|v| v.as_f64())
    }

    /// Class ids whose probabilities make up the refer score: the manifest's `refer.classes`, or
    /// the classes whose risk is "malignant" for bundles without a refer section.
    pub fn refer_class_ids(&self) -> Vec<usize> {
        match &self.refer {
            Some(r) => r
                .classes
                .iter()
                .filter_map(|c| self.class_by_folder(c))
                .collect(),
            None => self
                .classes
                .iter()
                .filter(|c| c.risk == Risk::Malignant)
                .map(|c| c.id)
                .collect(),
        }
    }

    pub fn refer_threshold(&self) -> f32 {
        self.refer
            .as_ref()
            .map_or(UNCALIBRATED_REFER_THRESHOLD, |r| r.threshold)
    }

    pub fn class_by_folder(&self, folder: &str) -> Option<usize> {
        self.classes.iter().position(|c| c.folder == folder)
    }
}

/// Read `dir/model.json` (validated); does not touch model.onnx.
pub fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
    let path = dir.join("model.json");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            BundleError::MissingFile { path: path.clone() }
        } else {
            BundleError::Io {
                path: path.clone(),
                source,
            }
        }
    })?;
    Manifest::parse(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1, "name": "t", "architecture": "resnet18", "precision": "fp32",
            "classes": [
                {"id": 0, "folder": "a", "name": "A", "risk": "benign"},
                {"id": 1, "folder": "b", "name": "B", "risk": "pre-malignant"}
            ],
            "input": {"width": 32, "height": 32, "channels": "RGB", "layout": "NCHW",
                      "resize": {"kind": "center_crop", "crop_fraction": 1.0}, "interpolation": "bilinear",
                      "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
            "output": {"kind": "logits"}, "temperature": 1.5, "abstain_threshold": 0.5,
            "sha256": "0".repeat(64), "provenance": {}, "metrics": {}
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Manifest, BundleError> {
        Manifest::parse(&v.to_string(), Path::new("b/model.json"))
    }

    #[test]
    fn refer_section_is_validated_and_drives_the_class_ids() {
        let mut v = sample();
        assert_eq!(parse(&v).unwrap().refer_class_ids(), Vec::<usize>::new());
        assert_eq!(
            parse(&v).unwrap().refer_threshold(),
            UNCALIBRATED_REFER_THRESHOLD
        );
        v["refer"] =
            serde_json::json!({"classes": ["b"], "threshold": 0.2, "val_sensitivity": 0.96});
        let m = parse(&v).unwrap();
        assert_eq!((m.refer_class_ids(), m.refer_threshold()), (vec![1], 0.2));
        // Recorded figures survive a round trip.
        assert!(
            serde_json::to_string(&m)
                .unwrap()
                .contains("\"val_sensitivity\":0.96")
        );
        v["refer"]["threshold"] = serde_json::json!(1.5);
        assert!(
            parse(&v)
                .unwrap_err()
                .to_string()
                .contains("refer.threshold")
        );
        v["refer"] = serde_json::json!({"classes": ["zz"], "threshold": 0.2});
        assert!(parse(&v).unwrap_err().to_string().contains("refer.classes"));
    }

    #[test]
    fn valid_manifest_parses() {
        let m = parse(&sample()).unwrap();
        assert_eq!(m.classes[1].risk, Risk::PreMalignant);
        assert_eq!(
            m.input.resize,
            ResizePolicy::CenterCrop { crop_fraction: 1.0 }
        );
    }

    #[test]
    fn errors_name_file_and_field() {
        let mut v = sample();
        v["schema_version"] = 7.into();
        let e = parse(&v).unwrap_err().to_string();
        assert!(
            e.contains("b/model.json") && e.contains("schema_version 7"),
            "{e}"
        );

        let mut v = sample();
        v["classes"][1]["id"] = 5.into();
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("`classes`") && e.contains("id 5"), "{e}");

        let mut v = sample();
        v["output"]["kind"] = "probabilities".into();
        assert!(parse(&v).unwrap_err().to_string().contains("`output.kind`"));

        let mut v = sample();
        v["temperature"] = (-1.0).into();
        assert!(parse(&v).unwrap_err().to_string().contains("`temperature`"));

        let mut v = sample();
        v["sha256"] = "xyz".into();
        assert!(parse(&v).unwrap_err().to_string().contains("`sha256`"));

        let mut v = sample();
        v.as_object_mut().unwrap().remove("input");
        assert!(
            parse(&v)
                .unwrap_err()
                .to_string()
                .contains("invalid manifest JSON")
        );
        assert!(Manifest::parse("{not json", Path::new("x")).is_err());
    }
}
