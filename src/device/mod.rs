//! The device around the pipeline: systemd readiness/watchdog, the GPIO push button, signed
//! model updates with rollback (feature `fleet`).

#[cfg(feature = "gpio")]
pub mod button;
pub mod systemd;
#[cfg(feature = "fleet")]
pub mod update;
