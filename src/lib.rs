//! dermcam: an edge appliance that classifies skin-lesion images into nine classes.
//! Research and education software, not a medical device.
//!
//! Data flows one way: source -> preprocess -> classify -> sinks (screen, web status, log).

#[cfg(feature = "ort")]
pub mod backend_ort;
pub mod backend_tract;
pub mod bench;
#[cfg(feature = "camera")]
pub mod camera;
pub mod classifier;
pub mod dataset;
pub mod eval;
#[cfg(feature = "fbdev")]
pub mod fbdev;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod paths;
pub mod preprocess;

/// Shown on every screen and page.
pub const DISCLAIMER: &str = "Not a diagnosis - research/education only, not a medical device";

/// The default bundle's folder name (see [`paths`] for where bundles are looked up).
pub const DEFAULT_BUNDLE: &str = "effl2-v2";

/// The source tree's bundle folder, compiled in: only for tests and fuzz targets run from
/// the source tree. Commands resolve bundles through [`paths::models_dir`].
pub const MODELS_DIR: &str = paths::SOURCE_MODELS_DIR;
#[cfg(feature = "gpio")]
pub mod button;
pub mod config;
pub mod pipeline;
pub mod quality;
pub mod render;
pub mod screen;
pub mod service;
pub mod source;
pub mod storage;
#[cfg(feature = "tft")]
pub mod tft;
#[cfg(feature = "web")]
pub mod web;
