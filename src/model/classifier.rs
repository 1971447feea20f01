//! The inference seam: a `Classifier` turns an input tensor into logits. Calibrated
//! probabilities (softmax with the manifest's temperature) are computed here, in Rust, for every
//! backend (tract 0.23.9 mis-computes a quantised Softmax, so models export logits).

use crate::model::manifest::Manifest;
use crate::model::preprocess::InputTensor;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("inference failed: {0}")]
pub struct InferenceError(pub String);

pub trait Classifier: Send + Sync {
    /// One forward pass: NCHW batch-1 tensor -> logits (one per class).
    fn logits(&self, input: &InputTensor) -> Result<Vec<f32>, InferenceError>;
}

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
    /// threshold. Decided for uncertain results too.
    pub refer: bool,
}

impl Prediction {
    pub fn from_logits(logits: &[f32], manifest: &Manifest) -> Prediction {
        Self::from_probabilities(softmax(logits, manifest.temperature), manifest)
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

    /// What a screen or page shows as the headline: the class name, or "Uncertain".
    pub fn headline(&self, manifest: &Manifest) -> String {
        if self.uncertain {
            "Uncertain".to_string()
        } else {
            manifest.classes[self.top1().0].name.clone()
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
    fn softmax_applies_temperature() {
        let p = softmax(&[2.0, 0.0], 1.0);
        assert!((p[0] - 0.880797).abs() < 1e-5);
        let p2 = softmax(&[2.0, 0.0], 2.0);
        assert!((p2[0] - 0.731059).abs() < 1e-5);
        let big = softmax(&[1000.0, 0.0, -1000.0], 1.0);
        assert!((big.iter().sum::<f32>() - 1.0).abs() < 1e-6 && big[0] > 0.999);
    }
}
