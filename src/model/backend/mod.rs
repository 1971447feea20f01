//! Inference engines behind the [`Classifier`](crate::model::classifier::Classifier) seam: one
//! file per engine, and only that file imports the engine's crate.

#[cfg(feature = "ort")]
pub mod ort;
pub mod tract;
