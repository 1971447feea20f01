//! dermcam: an edge appliance that classifies skin-lesion images into nine classes.
//! Research and education software, not a medical device.
//!
//! Data flows one way: source -> preprocess -> classify -> sinks (screen, web status, log).

pub mod config;
pub mod device;
pub mod model;
pub mod offline;
pub mod paths;
pub mod pipeline;
pub mod screen;
pub mod sinks;
pub mod source;
#[cfg(feature = "web")]
pub mod web;

/// Shown on every screen and page.
pub const DISCLAIMER: &str = "Not a diagnosis - research/education only, not a medical device";

/// The default bundle's folder name (see [`paths`] for where bundles are looked up).
pub const DEFAULT_BUNDLE: &str = "effl2-v2";

/// The source tree's bundle folder, compiled in: only for tests and fuzz targets run from
/// the source tree. Commands resolve bundles through [`paths::models_dir`].
pub const MODELS_DIR: &str = paths::SOURCE_MODELS_DIR;
