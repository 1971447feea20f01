//! dermcam: an edge appliance that classifies skin-lesion images into nine classes.
//! Research and education software, not a medical device.
//!
//! Data flows one way: source -> quality gate -> preprocess -> classify -> sinks (screen, web
//! status, log, captures).
//!
//! # Architecture
//!
//! A [`source::FrameSource`] yields frames; the [`pipeline`] runs three threads (capture,
//! inference, display) joined by latest-value mailboxes, so a slow model skips stale frames
//! instead of queueing them. Inference goes through [`model::Model`], which owns a
//! [`model::classifier::Classifier`] from one of the [`model::backend`]s. Results land in the
//! pipeline's live state ([`pipeline::Shared`]), read by the [`screen`] (a pure renderer
//! plus a one-method driver), the [`web`] UI, and the [`sinks`]. Each seam is a small trait
//! with a factory beside it ([`source::open`], [`screen::open`]); the binary's `app.rs` only
//! composes them from a [`config::Config`].
//!
//! # Crate map
//!
//! - [`config`]: the TOML configuration, one file per section, board presets, validation.
//! - [`source`]: frame sources (images, synthetic, V4L2 camera behind feature `camera`).
//! - [`pipeline`]: the live loop, shared live state, the image-quality gate, the view model
//!   every surface shows (`pipeline::view`).
//! - [`model`]: bundle manifest, preprocessing, the classifier seam and its backends.
//! - [`screen`]: renderer and screen drivers (PNG, framebuffer, SPI TFT).
//! - [`sinks`]: per-frame log, frozen-frame captures, the fleet's result sink.
//! - [`storage`]: crash-safe files (atomic writes, retention) for captures, uploads, the fleet
//!   queue and model updates.
//! - `fleet` (feature `fleet`): the MQTT link: connection, status, commands, the disk queue,
//!   signed model announcements.
//! - [`device`]: systemd readiness/watchdog, GPIO button.
//! - `web` (feature `web`): router, auth, uploads, pages, JSON API, Prometheus metrics.
//! - [`offline`]: datasets, metrics, evaluation reports, benchmarks.
//! - [`paths`]: where bundles, boards and samples are found.

pub mod config;
pub mod device;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod model;
pub mod offline;
pub mod paths;
pub mod pipeline;
pub mod screen;
pub mod sinks;
pub mod source;
pub mod storage;
#[cfg(feature = "web")]
pub mod web;

/// Shown on every screen and page.
pub const DISCLAIMER: &str = "Not a diagnosis - research/education only, not a medical device";

/// The default bundle's folder name (see [`paths`] for where bundles are looked up).
pub const DEFAULT_BUNDLE: &str = "effl2-v2";

/// The source tree's bundle folder, compiled in: only for tests and fuzz targets run from
/// the source tree. Commands resolve bundles through [`paths::models_dir`].
pub const MODELS_DIR: &str = paths::SOURCE_MODELS_DIR;
