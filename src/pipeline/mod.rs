//! The live pipeline: capture -> quality gate -> classify -> sinks (screen, web status, log).
//! Three threads, one stage each (`capture.rs`, `infer.rs`, `display.rs`), joined by "latest
//! value" mailboxes: a slow model never builds a queue of stale frames, it just skips to the
//! newest one (counted as dropped).

mod capture;
mod display;
mod infer;
mod live;
pub use live::*;

pub mod quality;
pub mod view;

use crate::config::PipelineConfig;
use crate::model::Model;
use crate::screen::Screen;
use crate::source::{Frame, FrameSource};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use view::{DisplayState, SourceStatus};

pub struct Pipeline {
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

fn initial_state(model: &Model) -> DisplayState {
    DisplayState {
        model_name: model.manifest.name.clone(),
        model_sha256: model.manifest.sha256.clone(),
        top: vec![],
        uncertain: false,
        refer: false,
        malignant_probability: 0.0,
        quality: None,
        not_lesion: false,
        source: SourceStatus::Starting,
        frozen: false,
        fps: 0.0,
        inference_ms: 0.0,
    }
}

/// Test knob for the watchdog checks (whoever can set a service's environment can stop it
/// anyway): `DERMCAM_TEST_HANG=capture:N` makes the source's read block for good after N
/// frames, like a V4L2 read that never returns; `infer:N` makes the N+1-th classification
/// never return, like a wedged inference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestHang {
    Capture(u64),
    Infer(u64),
}

fn test_hang_knob() -> Option<TestHang> {
    let knob = std::env::var("DERMCAM_TEST_HANG").ok()?;
    let (stage, n) = knob.split_once(':')?;
    let n = n.parse().ok()?;
    let hang = match stage {
        "capture" => TestHang::Capture(n),
        "infer" => TestHang::Infer(n),
        _ => return None,
    };
    log::warn!("DERMCAM_TEST_HANG: the {stage} stage hangs after {n}");
    Some(hang)
}

/// Blocks the calling thread for good (the hang the knob asks for).
fn hang_forever() -> ! {
    loop {
        std::thread::park();
    }
}

fn hang_capture_after(source: Box<dyn FrameSource>, n: u64) -> Box<dyn FrameSource> {
    struct HangAfter(Box<dyn FrameSource>, u64);
    impl FrameSource for HangAfter {
        fn next_frame(&mut self) -> Result<Frame, crate::source::SourceError> {
            if self.1 == 0 {
                hang_forever();
            }
            let f = self.0.next_frame();
            if f.is_ok() {
                self.1 -= 1;
            }
            f
        }
    }
    Box::new(HangAfter(source, n))
}

impl Pipeline {
    pub fn start(
        model: Arc<Model>,
        source: Box<dyn FrameSource>,
        screen: Box<dyn Screen>,
        sinks: Vec<Box<dyn Sink>>,
        cfg: PipelineConfig,
    ) -> Pipeline {
        let hang = test_hang_knob();
        let source = match hang {
            Some(TestHang::Capture(n)) => hang_capture_after(source, n),
            _ => source,
        };
        let shared = Arc::new(Shared::new(model.clone()));
        let frames: Arc<Latest<Frame>> = Arc::new(Latest::default());
        let status = Arc::new(Mutex::new(SourceStatus::Starting));
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .unwrap_or_else(|e| panic!("spawn {name} thread: {e}"))
        };
        let capture = capture::Capture {
            source,
            shared: shared.clone(),
            frames: frames.clone(),
            status: status.clone(),
        };
        let infer = infer::Infer {
            model,
            shared: shared.clone(),
            frames,
            status,
            sinks,
            cfg,
            hang_after: match hang {
                Some(TestHang::Infer(n)) => Some(n),
                _ => None,
            },
        };
        let display = display::Display {
            screen,
            shared: shared.clone(),
        };
        let threads = vec![
            spawn("capture", Box::new(move || capture.run())),
            spawn("inference", Box::new(move || infer.run())),
            spawn("display", Box::new(move || display.run())),
        ];
        Pipeline { shared, threads }
    }

    /// Wait for all threads (after the source ended or `request_shutdown`).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
