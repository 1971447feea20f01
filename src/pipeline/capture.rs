//! The capture stage: reads the source as fast as it delivers and keeps only the newest frame
//! in the mailbox (an unread one it replaces counts as dropped).

use super::view::SourceStatus;
use super::{Shared, Stage};
use crate::source::{Frame, FrameSource, SourceError};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub(super) struct Capture {
    pub source: Box<dyn FrameSource>,
    pub shared: Arc<Shared>,
    pub frames: Arc<super::Latest<Frame>>,
    pub status: Arc<Mutex<SourceStatus>>,
}

impl Capture {
    fn set_status(&self, s: SourceStatus) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    pub fn run(mut self) {
        let shared = self.shared.clone();
        while !shared.is_shutdown() {
            let next = self.source.next_frame();
            shared.beat(Stage::Capture);
            match next {
                Ok(f) => {
                    self.set_status(SourceStatus::Live);
                    shared.counters.frames.fetch_add(1, Ordering::Relaxed);
                    if self.frames.put(f) {
                        shared
                            .counters
                            .dropped_frames
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(SourceError::BadFrame(m)) => {
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("{m}");
                }
                Err(SourceError::Disconnected(m)) => {
                    log::warn!("camera disconnected: {m}; retrying");
                    self.set_status(SourceStatus::Disconnected(m));
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(SourceError::Ended) => {
                    self.set_status(SourceStatus::Ended);
                    break;
                }
                Err(SourceError::Config(m)) => {
                    log::error!("source: {m}");
                    self.set_status(SourceStatus::Disconnected(m));
                    shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        shared.stage_done(Stage::Capture);
        shared.source_done.store(true, Ordering::SeqCst);
    }
}
