//! The inference seam: a `Classifier` turns an input tensor into logits. Calibrated
//! probabilities (softmax with the manifest's temperature) are computed here, in Rust, for every
//! backend (tract 0.23.9 mis-computes a quantised Softmax, so models export logits).

use crate::manifest::Manifest;
use crate::preprocess::InputTensor;
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
}

impl Prediction {
    pub fn from_logits(logits: &[f32], manifest: &Manifest) -> Prediction {
        Self::from_probabilities(softmax(logits, manifest.temperature), manifest)
    }

    pub fn from_probabilities(probabilities: Vec<f32>, manifest: &Manifest) -> Prediction {
        let top = probabilities.iter().cloned().fold(0.0f32, f32::max);
        Prediction {
            uncertain: top < manifest.abstain_threshold,
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
