//! The device around the pipeline: systemd readiness/watchdog and the GPIO push button.

#[cfg(feature = "gpio")]
pub mod button;
pub mod systemd;
