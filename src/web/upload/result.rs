//! The answer to one upload: what `/api/v1/classify` returns and the result page shows.

use crate::model::Timings;
use crate::model::classifier::{Outcome, Prediction};
use crate::model::manifest::{Manifest, Precision};
use crate::pipeline::quality::QualityIssue;

#[derive(serde::Serialize)]
pub struct ClassifyResult {
    /// `class`, `uncertain`, `retake` (quality gate) or `not_lesion`.
    pub outcome: Outcome,
    /// For `retake`: `too_dark`, `too_bright` or `blurred`.
    pub quality_issue: Option<QualityIssue>,
    /// False for `retake` and `not_lesion`: like the live pipeline, such an image gets no
    /// class; `classes` is empty and `headline` says why.
    pub classified: bool,
    pub classes: Vec<crate::model::classifier::ClassScore>,
    pub headline: String,
    pub uncertain: bool,
    /// A clinician should see this lesion (malignant classes likely); null when not classified.
    pub refer: Option<bool>,
    /// Calibrated probability of the refer (malignant) classes; null when not classified.
    pub malignant_probability: Option<f32>,
    /// The bundle's "not a lesion" score, where it has one.
    pub ood_score: Option<f32>,
    /// Where the model looked for the top class: a PNG heat map (base64), when the bundle
    /// exports class-activation maps and a class or "uncertain" is the outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heat_png: Option<String>,
    pub quality: UploadQuality,
    pub model: ModelIdentity,
    pub timings: Timings,
    pub total_ms: f64,
}

/// What the quality gate measured on the upload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadQuality {
    /// Mean luma, 0-255.
    pub luma: f32,
    /// Variance of the Laplacian (sharpness).
    pub sharpness: f32,
    /// The gate's advice when it refused the image.
    pub warning: Option<&'static str>,
}

/// The model that classified the upload (the one taken for it, not the one loaded now).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelIdentity {
    pub name: String,
    pub sha256: String,
    pub precision: Precision,
}

impl ModelIdentity {
    pub fn of(m: &Manifest) -> ModelIdentity {
        ModelIdentity {
            name: m.name.clone(),
            sha256: m.sha256.clone(),
            precision: m.precision,
        }
    }
}

/// The result of an image the model classified (a class, uncertain, or not a lesion).
pub(super) fn classified_result(
    p: Prediction,
    timings: Timings,
    m: &Manifest,
    quality: UploadQuality,
    total_ms: f64,
) -> ClassifyResult {
    let outcome = p.outcome();
    let lesion = outcome != Outcome::NotLesion;
    ClassifyResult {
        outcome,
        quality_issue: None,
        classified: lesion,
        classes: if lesion {
            p.top_k(m.classes.len(), m)
        } else {
            vec![]
        },
        headline: p.headline(m),
        uncertain: p.uncertain,
        refer: Some(p.refer),
        malignant_probability: Some(p.malignant_probability),
        ood_score: p.ood_score,
        heat_png: lesion
            .then(|| {
                p.heat
                    .as_ref()
                    .and_then(crate::model::heat::png)
                    .map(|b| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b))
            })
            .flatten(),
        quality,
        model: ModelIdentity::of(m),
        timings,
        total_ms,
    }
}

/// The result of an image the quality gate refused: retake, no classes.
pub(super) fn retake_result(
    issue: Option<QualityIssue>,
    quality: UploadQuality,
    model: ModelIdentity,
    total_ms: f64,
) -> ClassifyResult {
    ClassifyResult {
        outcome: Outcome::Retake,
        quality_issue: issue,
        classified: false,
        classes: vec![],
        headline: format!(
            "Not classified: {}",
            issue.map_or("image quality", |i| i.advice())
        ),
        uncertain: true,
        refer: None,
        malignant_probability: None,
        ood_score: None,
        heat_png: None,
        quality,
        model,
        timings: Timings::default(),
        total_ms,
    }
}
