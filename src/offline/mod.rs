//! Offline tools run on a workstation or the device, never in the live loop: labelled image
//! folders (`dataset`), classification metrics, evaluation reports and their figures (feature
//! `offline`, default on: a lean device build drops plotters, csv and indicatif), and engine
//! benchmarks.

pub mod bench;
#[cfg(feature = "offline")]
pub mod dataset;
#[cfg(feature = "offline")]
pub mod eval;
pub mod metrics;
#[cfg(feature = "offline")]
mod plots;
#[cfg(feature = "offline")]
mod report;
