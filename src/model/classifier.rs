//! The inference seam: a `Classifier` turns an input tensor into logits. Calibrated
//! probabilities (softmax with the manifest's temperature) are computed here, in Rust, for every
//! backend (tract 0.23.9 mis-computes a quantised Softmax, so models export logits).

use crate::model::manifest::{BundleError, Manifest};
use crate::model::preprocess::InputTensor;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("inference failed: {0}")]
pub struct InferenceError(pub String);

/// What one forward pass gives: the logits, and where the bundle has them, the "not a lesion"
/// score and the class-activation maps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    pub logits: Vec<f32>,
    /// Distance of the image's features from the training lesions (manifest `ood`).
    pub ood: Option<f32>,
    /// One h x w map per class (manifest `cam`).
    pub cam: Option<Cam>,
}

/// Class-activation maps: `classes` maps of `height` x `width`, row-major, class after class.
#[derive(Debug, Clone, PartialEq)]
pub struct Cam {
    pub classes: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Cam {
    /// The map of one class, scaled to 0..1 (negative evidence clipped), or None when flat.
    pub fn heat(&self, class: usize) -> Option<HeatMap> {
        let n = self.height * self.width;
        let m = self.data.get(class * n..(class + 1) * n)?;
        let (lo, hi) = m
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let lo = lo.max(0.0).min(hi);
        if !(hi - lo > 1e-6) {
            return None;
        }
        Some(HeatMap {
            width: self.width,
            height: self.height,
            values: m
                .iter()
                .map(|&v| ((v - lo) / (hi - lo)).clamp(0.0, 1.0))
                .collect(),
        })
    }
}

/// Where the model looked for the shown class: values 0..1 on a coarse grid.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatMap {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

pub trait Classifier: Send + Sync {
    /// One forward pass: NCHW batch-1 tensor -> logits (one per class) and the extra outputs
    /// the manifest names.
    fn run(&self, input: &InputTensor) -> Result<Outputs, InferenceError>;
}

/// Which graph outputs (by position) hold the manifest's extra outputs. Both engines resolve
/// the names once at load and build `Outputs` the same way.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputMap {
    ood: Option<usize>,
    cam: Option<usize>,
}

impl OutputMap {
    /// `names`: the graph's outputs in order (the first is the logits). Errors name the file
    /// and what is missing.
    pub fn new(
        names: &[String],
        manifest: &Manifest,
        onnx: &std::path::Path,
    ) -> Result<OutputMap, BundleError> {
        let find = |want: &str| {
            names
                .iter()
                .position(|n| n == want)
                .filter(|&i| i > 0)
                .ok_or_else(|| BundleError::Model {
                    path: onnx.into(),
                    message: format!(
                        "the manifest names output {want:?}, the graph's outputs are {names:?}"
                    ),
                })
        };
        Ok(OutputMap {
            ood: manifest.ood.as_ref().map(|o| find(&o.output)).transpose()?,
            cam: manifest.cam.as_ref().map(|c| find(&c.output)).transpose()?,
        })
    }

    /// Output positions to fetch besides the logits (output 0).
    pub fn wanted(&self) -> impl Iterator<Item = usize> {
        self.ood.into_iter().chain(self.cam)
    }

    /// `get(i)`: shape and values of graph output `i`.
    pub fn build(
        &self,
        logits: Vec<f32>,
        mut get: impl FnMut(usize) -> Result<(Vec<usize>, Vec<f32>), InferenceError>,
    ) -> Result<Outputs, InferenceError> {
        let ood =
            match self.ood {
                Some(i) => Some(get(i)?.1.first().copied().ok_or_else(|| {
                    InferenceError("the \"not a lesion\" output is empty".into())
                })?),
                None => None,
            };
        let cam = match self.cam {
            Some(i) => {
                let (shape, data) = get(i)?;
                match shape.as_slice() {
                    [1, c, h, w] if c * h * w == data.len() => Some(Cam {
                        classes: *c,
                        height: *h,
                        width: *w,
                        data,
                    }),
                    _ => {
                        return Err(InferenceError(format!(
                            "class-activation output has shape {shape:?}, expected [1, classes, h, w]"
                        )));
                    }
                }
            }
            None => None,
        };
        Ok(Outputs { logits, ood, cam })
    }
}

pub use crate::model::outcome::{NOT_LESION_ADVICE, NOT_LESION_HEADLINE, Outcome};

/// Softmax of `logits / temperature`, computed in f64 for stability.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature as f64;
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64 / t));
    let exps: Vec<f64> = logits.iter().map(|&v| (v as f64 / t - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassScore {
    pub id: usize,
    pub name: String,
    pub probability: f32,
}

/// Calibrated class probabilities for one image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    /// Probabilities in class-id order.
    pub probabilities: Vec<f32>,
    /// True when the top probability is under the manifest's abstain threshold.
    pub uncertain: bool,
    /// Calibrated probability that the lesion is one of the refer (malignant) classes.
    pub malignant_probability: f32,
    /// A clinician should see this lesion: `malignant_probability` >= the manifest's refer
    /// threshold. Decided for uncertain results too; never for an image that is not a lesion.
    pub refer: bool,
    /// The bundle's "not a lesion" score (higher = further from the training lesions).
    pub ood_score: Option<f32>,
    /// The score is over the manifest's threshold: no class, no referral.
    pub not_lesion: bool,
    /// Where the model looked for the top class (bundles with a `cam` output).
    #[serde(skip)]
    pub heat: Option<HeatMap>,
}

impl Prediction {
    pub fn from_logits(logits: &[f32], manifest: &Manifest) -> Prediction {
        Self::from_probabilities(softmax(logits, manifest.temperature), manifest)
    }

    /// Calibrated probabilities, the refer rule, and the "not a lesion" gate.
    pub fn from_outputs(out: &Outputs, manifest: &Manifest) -> Prediction {
        let p = Self::from_logits(&out.logits, manifest).with_ood(out.ood, manifest);
        let heat = out.cam.as_ref().and_then(|c| c.heat(p.top1().0));
        Prediction { heat, ..p }
    }

    /// Apply the "not a lesion" gate: over the threshold there is no referral.
    pub fn with_ood(mut self, score: Option<f32>, manifest: &Manifest) -> Prediction {
        self.ood_score = score;
        self.not_lesion = match (score, &manifest.ood) {
            // A NaN score (a broken graph) is not evidence of a lesion either.
            (Some(s), Some(o)) => !(s <= o.threshold),
            _ => false,
        };
        if self.not_lesion {
            self.refer = false;
        }
        self
    }

    /// The prediction as if the "not a lesion" gate were off (`classify --no-gates`); the
    /// score is kept for the record.
    pub fn ungated(mut self, manifest: &Manifest) -> Prediction {
        self.not_lesion = false;
        self.refer = self.malignant_probability >= manifest.refer_threshold();
        self
    }

    /// The result in one word (quality is decided before a prediction exists).
    pub fn outcome(&self) -> Outcome {
        if self.not_lesion {
            Outcome::NotLesion
        } else if self.uncertain {
            Outcome::Uncertain
        } else {
            Outcome::Class
        }
    }

    pub fn from_probabilities(probabilities: Vec<f32>, manifest: &Manifest) -> Prediction {
        let top = probabilities.iter().cloned().fold(0.0f32, f32::max);
        let malignant_probability: f32 = manifest
            .refer_class_ids()
            .iter()
            .filter_map(|&i| probabilities.get(i))
            .sum();
        Prediction {
            uncertain: top < manifest.abstain_threshold,
            refer: malignant_probability >= manifest.refer_threshold(),
            malignant_probability,
            probabilities,
            ood_score: None,
            not_lesion: false,
            heat: None,
        }
    }

    /// (class id, probability) of the most likely class.
    pub fn top1(&self) -> (usize, f32) {
        self.ranked()[0]
    }

    /// All classes, most likely first (stable for ties).
    pub fn ranked(&self) -> Vec<(usize, f32)> {
        let mut v: Vec<(usize, f32)> = self.probabilities.iter().cloned().enumerate().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    pub fn top_k(&self, k: usize, manifest: &Manifest) -> Vec<ClassScore> {
        self.ranked()
            .into_iter()
            .take(k)
            .map(|(id, probability)| ClassScore {
                id,
                name: manifest.classes[id].name.clone(),
                probability,
            })
            .collect()
    }

    /// What a screen or page shows as the headline: the class name, "Uncertain" or "Not a
    /// skin lesion".
    pub fn headline(&self, manifest: &Manifest) -> String {
        match self.outcome() {
            Outcome::NotLesion => NOT_LESION_HEADLINE.to_string(),
            Outcome::Uncertain | Outcome::Retake => "Uncertain".to_string(),
            Outcome::Class => manifest.classes[self.top1().0].name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(refer: serde_json::Value) -> Manifest {
        let mut v = serde_json::json!({
            "schema_version": 1, "name": "t", "architecture": "x", "precision": "fp32",
            "classes": [
                {"id": 0, "folder": "nevus", "name": "Nevus", "risk": "benign"},
                {"id": 1, "folder": "melanoma", "name": "Melanoma", "risk": "malignant"},
                {"id": 2, "folder": "scc", "name": "SCC", "risk": "malignant"}
            ],
            "input": {"width": 32, "height": 32, "channels": "RGB", "layout": "NCHW",
                      "resize": {"kind": "squash"}, "interpolation": "bilinear",
                      "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
            "output": {"kind": "logits"}, "temperature": 1.0, "abstain_threshold": 0.5,
            "sha256": "0".repeat(64), "provenance": {}
        });
        if !refer.is_null() {
            v["refer"] = refer;
        }
        Manifest::parse(&v.to_string(), std::path::Path::new("t/model.json")).unwrap()
    }

    #[test]
    fn refer_sums_the_refer_classes_and_compares_with_the_threshold() {
        let m = manifest(serde_json::json!({"classes": ["melanoma", "scc"], "threshold": 0.25}));
        // Nevus is the top class, but melanoma + SCC = 0.30 >= 0.25: refer.
        let p = Prediction::from_probabilities(vec![0.70, 0.20, 0.10], &m);
        assert!(!p.uncertain && p.refer);
        assert!((p.malignant_probability - 0.30).abs() < 1e-6);
        // Just under the threshold: no refer.
        let p = Prediction::from_probabilities(vec![0.76, 0.14, 0.10], &m);
        assert!(!p.refer);
        // An uncertain result still gets a refer decision.
        let p = Prediction::from_probabilities(vec![0.40, 0.35, 0.25], &m);
        assert!(p.uncertain && p.refer);
        // Exactly at the threshold refers (>=).
        let p = Prediction::from_probabilities(vec![0.75, 0.25, 0.0], &m);
        assert!(p.refer);
        // Only the named classes count.
        let m = manifest(serde_json::json!({"classes": ["scc"], "threshold": 0.25}));
        let p = Prediction::from_probabilities(vec![0.5, 0.45, 0.05], &m);
        assert!(!p.refer && (p.malignant_probability - 0.05).abs() < 1e-6);
        // No refer section: the malignant-risk classes with the uncalibrated default.
        let m = manifest(serde_json::Value::Null);
        let p = Prediction::from_probabilities(vec![0.45, 0.3, 0.25], &m);
        assert!(p.refer && (p.malignant_probability - 0.55).abs() < 1e-6);
    }

    #[test]
    fn outcome_rules_not_lesion_beats_uncertain_and_never_refers() {
        let mut v: serde_json::Value = serde_json::from_str(
            &serde_json::to_string(&manifest(
                serde_json::json!({"classes": ["melanoma"], "threshold": 0.2}),
            ))
            .unwrap(),
        )
        .unwrap();
        v["ood"] = serde_json::json!({"output": "ood", "threshold": 10.0, "method": "test"});
        let m = Manifest::parse(&v.to_string(), std::path::Path::new("t/model.json")).unwrap();
        let out = |logits: Vec<f32>, ood: f32| Outputs {
            logits,
            ood: Some(ood),
            cam: None,
        };
        // Confident melanoma, inside the lesion region: class + refer.
        let p = Prediction::from_outputs(&out(vec![0.0, 5.0, 0.0], 3.0), &m);
        assert_eq!((p.outcome(), p.refer), (Outcome::Class, true));
        // The same logits far from the training lesions: not a lesion, no referral.
        let p = Prediction::from_outputs(&out(vec![0.0, 5.0, 0.0], 10.5), &m);
        assert_eq!((p.outcome(), p.refer), (Outcome::NotLesion, false));
        assert_eq!(p.headline(&m), NOT_LESION_HEADLINE);
        // Exactly at the threshold is still a lesion; a NaN score is not.
        let p = Prediction::from_outputs(&out(vec![0.0, 5.0, 0.0], 10.0), &m);
        assert_eq!(p.outcome(), Outcome::Class);
        let p = Prediction::from_outputs(&out(vec![0.0, 5.0, 0.0], f32::NAN), &m);
        assert_eq!(p.outcome(), Outcome::NotLesion);
        // Not a lesion wins over uncertain; --no-gates gives the classifier's own answer back.
        let p = Prediction::from_outputs(&out(vec![0.1, 0.0, 0.05], 50.0), &m);
        assert_eq!(p.outcome(), Outcome::NotLesion);
        let u = p.clone().ungated(&m);
        assert_eq!((u.outcome(), u.refer), (Outcome::Uncertain, true));
        assert_eq!(u.ood_score, Some(50.0));
        // A bundle without the gate never says "not a lesion".
        let plain = manifest(serde_json::Value::Null);
        let p = Prediction::from_outputs(&out(vec![0.0, 5.0, 0.0], 1e9), &plain);
        assert_eq!(p.outcome(), Outcome::Class);
        assert_eq!(Outcome::NotLesion.as_str(), "not_lesion");
        assert_eq!(
            serde_json::to_value(Outcome::NotLesion).unwrap(),
            serde_json::json!("not_lesion")
        );
    }

    #[test]
    fn output_map_finds_named_outputs_and_checks_the_cam_shape() {
        let mut v: serde_json::Value = serde_json::from_str(
            &serde_json::to_string(&manifest(serde_json::Value::Null)).unwrap(),
        )
        .unwrap();
        v["ood"] = serde_json::json!({"output": "ood", "threshold": 1.0});
        v["cam"] = serde_json::json!({"output": "cam"});
        let m = Manifest::parse(&v.to_string(), std::path::Path::new("t/model.json")).unwrap();
        let names: Vec<String> = ["logits", "cam", "ood"].map(String::from).into();
        let onnx = std::path::Path::new("t/model.onnx");
        let map = OutputMap::new(&names, &m, onnx).unwrap();
        let out = map
            .build(vec![1.0, 2.0, 3.0], |i| match i {
                2 => Ok((vec![], vec![7.0])),
                1 => Ok((vec![1, 3, 2, 2], (0..12).map(|x| x as f32).collect())),
                _ => unreachable!(),
            })
            .unwrap();
        assert_eq!(out.ood, Some(7.0));
        let heat = out.cam.unwrap().heat(2).unwrap();
        assert_eq!(heat.values, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        let bad = map.build(vec![0.0; 3], |i| match i {
            2 => Ok((vec![], vec![1.0])),
            _ => Ok((vec![3, 4], vec![0.0; 12])),
        });
        assert!(bad.is_err());
        let missing: Vec<String> = ["logits", "ood"].map(String::from).into();
        let e = OutputMap::new(&missing, &m, onnx).unwrap_err().to_string();
        assert!(e.contains("\"cam\"") && e.contains("t/model.onnx"), "{e}");
    }

    #[test]
    fn softmax_applies_temperature() {
        let p = softmax(&[2.0, 0.0], 1.0);
        assert!((p[0] - 0.880797).abs() < 1e-5);
        let p2 = softmax(&[2.0, 0.0], 2.0);
        assert!((p2[0] - 0.731059).abs() < 1e-5);
        let big = softmax(&[1000.0, 0.0, -1000.0], 1.0);
        assert!((big.iter().sum::<f32>() - 1.0).abs() < 1e-6 && big[0] > 0.999);
    }
}
