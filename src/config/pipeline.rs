//! The `[pipeline]` section: quality gate, smoothing and frame-rate settings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Weight of the newest frame in the probability moving average (1 = no smoothing).
    pub ema_alpha: f32,
    /// Mean luma (0-255) below which the screen says "More light".
    pub min_luma: f32,
    /// Mean luma above which the screen says "Too bright".
    pub max_luma: f32,
    /// Share of blown-out pixels (luma >= 250) above which the screen says "Too bright": a
    /// flash or a lamp washes the lesion out long before the mean reaches `max_luma`.
    pub max_clipped: f32,
    /// Variance of the Laplacian below which the screen says "Hold steady".
    pub min_sharpness: f32,
    /// Floor for the weakest of four directional second-derivative variances: a motion blur
    /// keeps edges across the motion (the Laplacian stays high) but wipes them along it.
    pub min_directional_sharpness: f32,
    /// Average the mirrored image when a frame is frozen with the button.
    pub freeze_tta: bool,
    /// A stage (capture, inference, display) that makes no progress for this long counts as
    /// hung: the systemd watchdog pings stop and systemd restarts the service. Must exceed the
    /// slowest inference and the camera's retry backoff.
    pub stall_timeout_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ema_alpha: 0.5,
            min_luma: 35.0,
            max_luma: 235.0,
            max_clipped: 0.3,
            min_sharpness: 8.0,
            min_directional_sharpness: 3.0,
            freeze_tta: true,
            stall_timeout_ms: 10_000,
        }
    }
}
