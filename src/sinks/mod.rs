//! Where results go besides the screen and the web UI: crash-safe capture/upload storage with
//! retention. (The per-frame log sink lives with the pipeline's sink trait.)

pub mod storage;
