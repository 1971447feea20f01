//! Offline tools run on a workstation or the device, never in the live loop: labelled image
//! folders (`dataset`), classification metrics, evaluation reports, and engine benchmarks.

pub mod bench;
pub mod dataset;
pub mod eval;
pub mod metrics;
