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
pub mod preprocess;

/// Shown on every screen and page.
pub const DISCLAIMER: &str = "Not a diagnosis - research/education only, not a medical device";

/// Where bundles live in the source tree (and the default bundle's folder name).
pub const MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
pub const DEFAULT_BUNDLE: &str = "effl0-skin9-int8";

/// Where the .deb installs the shipped bundles.
pub const INSTALLED_MODELS_DIR: &str = "/usr/share/dermcam/models";

/// The folder holding the shipped bundle `name`: the installed copy, else the source tree's.
pub fn shipped_bundle_dir(name: &str) -> std::path::PathBuf {
    let installed = std::path::Path::new(INSTALLED_MODELS_DIR).join(name);
    if installed.join("model.json").is_file() {
        return installed;
    }
    std::path::Path::new(MODELS_DIR).join(name)
}

/// The default bundle: `$DERMCAM_MODEL`, else the installed copy, else the source tree's.
pub fn default_model_dir() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("DERMCAM_MODEL") {
        return p.into();
    }
    shipped_bundle_dir(DEFAULT_BUNDLE)
}
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
