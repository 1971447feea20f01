//! The live pipeline end to end with the real model and the images source, the camera
//! supervisor against a fake device, and the latest-frame mailbox.

use crate::*;
use dermcam::config::PipelineConfig;
use dermcam::pipeline::view::SourceStatus;
use dermcam::pipeline::{Latest, Pipeline, Sink, Update};
use dermcam::screen::PngScreen;
use dermcam::source::{Frame, FrameSource, Reconnecting, SourceError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Collect(Arc<Mutex<Vec<Update>>>);

impl Sink for Collect {
    fn publish(&mut self, u: &Update) {
        self.0.lock().unwrap().push(u.clone());
    }
}

#[test]
fn images_source_drives_the_real_model_to_the_screen() {
    let tmp = scratch("pipeline-images");
    let png = tmp.join("screen.png");
    let model = default_model();
    let source = slideshow(150, false);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::start(
        model.clone(),
        Box::new(source),
        Box::new(PngScreen::new(png.clone(), 320, 240)),
        vec![Box::new(Collect(seen.clone()))],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    p.join();
    let updates = seen.lock().unwrap();
    let classified: Vec<&Update> = updates.iter().filter(|u| u.prediction.is_some()).collect();
    assert_eq!(
        classified.len(),
        samples().len(),
        "every slide classified once"
    );
    for u in classified {
        let f = u.frame.as_ref().unwrap();
        let s = samples()
            .into_iter()
            .find(|s| s.file_name().unwrap().to_str() == f.label.as_deref())
            .unwrap();
        let (direct, _) = model
            .classify(
                &dermcam::model::preprocess::load_image(&s, u64::MAX).unwrap(),
                false,
            )
            .unwrap();
        assert_eq!(u.prediction.as_ref().unwrap().top1().0, direct.top1().0);
        // New scene per slide: smoothing must not blend two different lesions.
        assert_eq!(
            u.state.top[0].0,
            model.manifest.classes[direct.top1().0].name
        );
    }
    assert!(shared.first_frame_shown());
    let screen = image::open(&png).unwrap();
    assert_eq!((screen.width(), screen.height()), (320, 240));
    let c = shared.counters();
    assert_eq!(
        (c.frames as usize, c.inferences as usize, c.errors),
        (samples().len(), samples().len(), 0)
    );
}

#[test]
fn dark_frames_are_not_classified() {
    struct Dark(u64);
    impl FrameSource for Dark {
        fn next_frame(&mut self) -> Result<Frame, SourceError> {
            if self.0 >= 3 {
                return Err(SourceError::Ended);
            }
            self.0 += 1;
            std::thread::sleep(Duration::from_millis(20));
            Ok(Frame::live(
                image::RgbImage::from_pixel(640, 480, image::Rgb([8, 6, 5])),
                self.0,
            ))
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::start(
        default_model(),
        Box::new(Dark(0)),
        Box::new(dermcam::screen::NoScreen),
        vec![Box::new(Collect(seen.clone()))],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    p.join();
    assert_eq!(shared.counters().inferences, 0);
    assert!(shared.counters().quality_rejections >= 1);
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|u| u.state.quality == Some(dermcam::pipeline::quality::QualityIssue::TooDark))
    );
}

/// A fake camera: serves `ok` frames, then fails `fail` times (unplugged), then serves again.
struct FakeCam {
    frames_left: usize,
}

impl FrameSource for FakeCam {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        if self.frames_left == 0 {
            return Err(SourceError::Disconnected("read failed: ENODEV".into()));
        }
        self.frames_left -= 1;
        std::thread::sleep(Duration::from_millis(10));
        let img = dermcam::model::preprocess::load_image(&samples()[1], u64::MAX).unwrap();
        Ok(Frame::live(img, 0))
    }
}

#[test]
fn supervisor_reopens_an_unplugged_camera_with_backoff() {
    let opens = Arc::new(AtomicUsize::new(0));
    let o = opens.clone();
    // open #1 works (3 frames), #2 and #3 fail (device gone), #4 works again.
    let mut sup = Reconnecting::new(
        move || {
            let n = o.fetch_add(1, Ordering::SeqCst);
            match n {
                1 | 2 => Err(SourceError::Disconnected(
                    "/dev/video0: No such file or directory".into(),
                )),
                _ => Ok(Box::new(FakeCam { frames_left: 3 }) as Box<dyn FrameSource>),
            }
        },
        Duration::from_millis(20),
        Duration::from_millis(200),
    );
    let mut log = Vec::new();
    let start = Instant::now();
    for _ in 0..7 {
        log.push(match sup.next_frame() {
            Ok(_) => "frame",
            Err(SourceError::Disconnected(_)) => "gone",
            Err(e) => panic!("{e}"),
        });
    }
    assert_eq!(
        log,
        ["frame", "frame", "frame", "gone", "gone", "gone", "frame"]
    );
    assert_eq!(sup.reconnects, 1);
    // Backoff 20 + 40 ms between the failed opens: back well within 2 s.
    assert!(start.elapsed() < Duration::from_secs(2), "back within 2 s");
    assert_eq!(opens.load(Ordering::SeqCst), 4);
}

#[test]
fn pipeline_shows_disconnected_and_recovers() {
    let opens = Arc::new(AtomicUsize::new(0));
    let o = opens.clone();
    let sup = Reconnecting::new(
        move || match o.fetch_add(1, Ordering::SeqCst) {
            0 => Ok(Box::new(FakeCam { frames_left: 2 }) as Box<dyn FrameSource>),
            1..=3 => Err(SourceError::Disconnected("unplugged".into())),
            _ => Ok(Box::new(FakeCam { frames_left: 4 }) as Box<dyn FrameSource>),
        },
        Duration::from_millis(30),
        Duration::from_millis(100),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::start(
        default_model(),
        Box::new(sup),
        Box::new(dermcam::screen::NoScreen),
        vec![Box::new(Collect(seen.clone()))],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    wait_until(Duration::from_secs(10), || {
        shared.counters().inferences >= 5
    });
    shared.request_shutdown();
    p.join();
    let updates = seen.lock().unwrap();
    let states: Vec<&SourceStatus> = updates.iter().map(|u| &u.state.source).collect();
    let gone = states
        .iter()
        .position(|s| matches!(s, SourceStatus::Disconnected(_)))
        .expect("disconnection shown");
    assert!(
        states[gone..].iter().any(|s| **s == SourceStatus::Live),
        "live again after reconnect: {states:?}"
    );
    assert!(shared.counters().inferences >= 5);
}

#[test]
fn latest_slot_keeps_only_the_newest_frame() {
    let slot: Arc<Latest<Vec<u8>>> = Arc::new(Latest::default());
    let mut dropped = 0;
    for i in 0..1000u32 {
        if slot.put(vec![(i % 256) as u8; 1024]) {
            dropped += 1;
        }
    }
    assert_eq!(
        dropped, 999,
        "a slow reader sees only the newest; older ones are dropped, not queued"
    );
    let (v, frame) = slot.wait_newer(0, Duration::from_millis(10)).unwrap();
    assert_eq!((v, frame[0]), (1000, (999 % 256) as u8));
    assert!(slot.wait_newer(v, Duration::from_millis(10)).is_none());
}

#[test]
fn freeze_classifies_with_tta_and_holds() {
    let model = default_model();
    let source = slideshow(60, true);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::start(
        model.clone(),
        Box::new(source),
        Box::new(dermcam::screen::NoScreen),
        vec![Box::new(Collect(seen.clone()))],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    while shared.counters().inferences < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.toggle_freeze();
    std::thread::sleep(Duration::from_millis(400));
    let before = shared.counters().inferences;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        shared.counters().inferences,
        before,
        "no live inference while frozen"
    );
    let frozen = seen
        .lock()
        .unwrap()
        .iter()
        .find(|u| u.state.frozen)
        .cloned()
        .expect("a frozen update");
    let f = frozen.frame.unwrap();
    let (tta, _) = model.classify(&f.image, true).unwrap();
    assert_eq!(frozen.prediction.unwrap().probabilities, tta.probabilities);
    shared.toggle_freeze();
    wait_until(Duration::from_secs(5), || {
        shared.counters().inferences > before
    });
    assert!(
        shared.counters().inferences > before,
        "live again after release"
    );
    shared.request_shutdown();
    p.join();
}

#[test]
fn captures_are_complete_and_retention_holds() {
    let tmp = scratch("captures");
    let dir = tmp.join("captures");
    let model = default_model();
    let source = slideshow(40, true);
    let sink = dermcam::sinks::capture::CaptureSink::new(dir.clone(), 2);
    let p = Pipeline::start(
        model.clone(),
        Box::new(source),
        Box::new(dermcam::screen::NoScreen),
        vec![Box::new(sink)],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    for _ in 0..3 {
        let n = shared.counters().inferences;
        while shared.counters().inferences < n + 2 {
            std::thread::sleep(Duration::from_millis(10));
        }
        shared.toggle_freeze(); // freeze: saves
        std::thread::sleep(Duration::from_millis(400));
        shared.toggle_freeze(); // release
    }
    shared.request_shutdown();
    p.join();
    let caps = dermcam::sinks::capture::CaptureSink::captures(&dir).unwrap();
    assert_eq!(caps.len(), 2, "retention keeps the newest 2: {caps:?}");
    for (c, bytes) in caps {
        assert_capture_complete(&c, &model.manifest.sha256);
        assert!(bytes > 1000, "{bytes}");
    }
    assert!(
        !std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    );
}

/// A capture folder holds a decodable image and a result naming it, with a matching checksum.
pub fn assert_capture_complete(c: &std::path::Path, model_sha: &str) {
    let jpg = std::fs::read(c.join("image.jpg")).unwrap_or_else(|e| panic!("{}: {e}", c.display()));
    assert!(
        image::load_from_memory(&jpg).is_ok(),
        "{}: bad image",
        c.display()
    );
    let text = std::fs::read_to_string(c.join("result.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", c.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", c.display()));
    assert_eq!(v["model"]["sha256"], model_sha);
    assert_eq!(v["classes"].as_array().unwrap().len(), 9);
    assert!(
        v["refer"].is_boolean() && v["malignant_probability"].is_number(),
        "{v}"
    );
    assert_eq!(v["capture"], c.file_name().unwrap().to_str().unwrap());
    // The shipped bundles export class-activation maps: the capture keeps its heat map.
    if v["outcome"] != "not_lesion" {
        assert_eq!(v["heat_map"], "heat.png", "{v}");
        let heat = image::open(c.join("heat.png")).unwrap();
        assert_eq!((heat.width(), heat.height()), (224, 224));
    }
    use sha2::Digest;
    assert_eq!(
        v["image_sha256"],
        hex::encode(sha2::Sha256::digest(&jpg)).as_str()
    );
}

#[test]
fn capture_to_unwritable_place_is_refused_and_pipeline_continues() {
    let tmp = scratch("captures-ro");
    let not_a_dir = tmp.join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let model = default_model();
    let source = slideshow(40, true);
    let sink = dermcam::sinks::capture::CaptureSink::new(not_a_dir.join("captures"), 5);
    let p = Pipeline::start(
        model,
        Box::new(source),
        Box::new(dermcam::screen::NoScreen),
        vec![Box::new(sink)],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    while shared.counters().inferences < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.toggle_freeze();
    std::thread::sleep(Duration::from_millis(300));
    shared.toggle_freeze();
    let n = shared.counters().inferences;
    wait_until(Duration::from_secs(5), || {
        shared.counters().inferences >= n + 2
    });
    assert!(
        shared.counters().inferences >= n + 2,
        "pipeline kept classifying"
    );
    shared.request_shutdown();
    p.join();
}

/// RGB -> YUYV 4:2:2 (BT.601 limited range), as a UVC camera would deliver a frame.
fn to_yuyv(img: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::with_capacity((img.width() * img.height() * 2) as usize);
    for row in img.rows() {
        let px: Vec<[f32; 3]> = row
            .map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
            .collect();
        for pair in px.chunks_exact(2) {
            let y = |c: &[f32; 3]| {
                (16.0 + 0.257 * c[0] + 0.504 * c[1] + 0.098 * c[2])
                    .round()
                    .clamp(0.0, 255.0) as u8
            };
            let r = (pair[0][0] + pair[1][0]) / 2.0;
            let g = (pair[0][1] + pair[1][1]) / 2.0;
            let b = (pair[0][2] + pair[1][2]) / 2.0;
            let u = (128.0 - 0.148 * r - 0.291 * g + 0.439 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
            let v = (128.0 + 0.439 * r - 0.368 * g - 0.071 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
            out.extend_from_slice(&[y(&pair[0]), u, y(&pair[1]), v]);
        }
    }
    out
}

#[test]
fn camera_buffers_from_real_images_convert_and_classify_alike() {
    // MJPEG: a camera frame is one JPEG, so a real sample's bytes are a realistic buffer.
    let m = default_model();
    for s in samples() {
        let bytes = std::fs::read(&s).unwrap();
        let via_mjpeg = dermcam::source::mjpeg_to_rgb(&bytes, u64::MAX).unwrap();
        let direct = dermcam::model::preprocess::load_image(&s, u64::MAX).unwrap();
        assert_eq!(via_mjpeg, direct);
        // YUYV: the same picture as a 4:2:2 buffer; colour survives within chroma-subsampling
        // error and the model's answer does not change.
        let even = image::imageops::crop_imm(&direct, 0, 0, direct.width() & !1, direct.height())
            .to_image();
        let back =
            dermcam::source::yuyv_to_rgb(&to_yuyv(&even), even.width(), even.height()).unwrap();
        let mean_err = even
            .as_raw()
            .iter()
            .zip(back.as_raw())
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
            / even.as_raw().len() as f64;
        assert!(
            mean_err < 4.0,
            "{}: YUYV round trip mean error {mean_err}",
            s.display()
        );
        let (a, _) = m.classify(&even, false).unwrap();
        let (b, _) = m.classify(&back, false).unwrap();
        // Same answer, unless the image sits on a near-tie between two classes (then chroma
        // rounding may tip it): probabilities still agree closely.
        let r = a.ranked();
        let max_dp = a
            .probabilities
            .iter()
            .zip(&b.probabilities)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(
            a.top1().0 == b.top1().0 || r[0].1 - r[1].1 < 0.1,
            "{}: top-1 {:?} vs {:?}",
            s.display(),
            a.top1(),
            b.top1()
        );
        assert!(max_dp < 0.1, "{}: max |dp| {max_dp}", s.display());
        if (a.malignant_probability - m.manifest.refer_threshold()).abs() > 0.05 {
            assert_eq!(a.refer, b.refer, "{}", s.display());
        }
    }
    // Truncated MJPEG frames are bad frames, not grey pictures.
    let bytes = std::fs::read(&samples()[0]).unwrap();
    assert!(matches!(
        dermcam::source::mjpeg_to_rgb(&bytes[..bytes.len() / 2], u64::MAX),
        Err(SourceError::BadFrame(_))
    ));
}

/// A two-class model (another bundle's class table) that always answers the second class.
struct TwoClasses;

impl dermcam::model::classifier::Classifier for TwoClasses {
    fn run(
        &self,
        _: &dermcam::model::preprocess::InputTensor,
    ) -> Result<dermcam::model::classifier::Outputs, dermcam::model::classifier::InferenceError>
    {
        Ok(dermcam::model::classifier::Outputs {
            logits: vec![0.0, 4.0],
            ..Default::default()
        })
    }
}

/// After a model switch to a bundle with fewer classes, captures and the live status name the
/// new model and its classes (no start-up copy in any sink, no out-of-range class index).
#[test]
fn a_model_switch_with_fewer_classes_relabels_every_result() {
    let tmp = scratch("switch-classes");
    let dir = tmp.join("captures");
    let mut v = serde_json::to_value(&default_model().manifest).unwrap();
    v["name"] = "two-class-test".into();
    v["sha256"] = "ab".repeat(32).into();
    v["classes"] = serde_json::json!([
        {"id": 0, "folder": "benign", "name": "Benign", "risk": "benign"},
        {"id": 1, "folder": "melanoma", "name": "Melanoma", "risk": "malignant"}
    ]);
    v["refer"] = serde_json::json!({"classes": ["melanoma"], "threshold": 0.5});
    v.as_object_mut().unwrap().remove("ood");
    v.as_object_mut().unwrap().remove("cam");
    let manifest = dermcam::model::manifest::Manifest::parse(
        &v.to_string(),
        std::path::Path::new("t/model.json"),
    )
    .unwrap();
    let two = Arc::new(dermcam::model::Model::with_classifier(
        manifest,
        Box::new(TwoClasses),
        "test",
    ));
    let sink = dermcam::sinks::capture::CaptureSink::new(dir.clone(), 10);
    let p = Pipeline::start(
        default_model(),
        Box::new(slideshow(40, true)),
        Box::new(dermcam::screen::NoScreen),
        vec![Box::new(sink), Box::new(dermcam::sinks::log::LogSink)],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    wait_for("a first inference", Duration::from_secs(20), || {
        shared.counters().inferences > 0
    });
    shared.set_model(two.clone());
    wait_for("a result of the new model", Duration::from_secs(20), || {
        let l = shared.latest();
        l.is_some_and(|u| u.model.as_ref().is_some_and(|m| Arc::ptr_eq(m, &two)))
    });
    shared.toggle_freeze();
    wait_for("the capture", Duration::from_secs(20), || {
        dermcam::sinks::capture::CaptureSink::captures(&dir).is_ok_and(|c| !c.is_empty())
    });
    shared.request_shutdown();
    p.join();
    let (c, _) = &dermcam::sinks::capture::CaptureSink::captures(&dir).unwrap()[0];
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["model"]["name"], "two-class-test", "{r}");
    assert_eq!(r["classes"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["classes"][0]["name"], "Melanoma");
    assert_eq!(r["outcome"], "class");
    assert_eq!(r["refer"], true);
    assert_eq!(shared.counters().errors, 0);
}

/// A live source that alternates a sharp lesion and a held-back frame (`bad`: blurred or dark),
/// `every` frames each, one per `interval_ms`, for `n` frames (`n` = 0: forever).
struct Alternating {
    good: image::RgbImage,
    bad: image::RgbImage,
    every: u64,
    seq: u64,
    n: u64,
    interval_ms: u64,
}

impl FrameSource for Alternating {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        if self.n > 0 && self.seq >= self.n {
            return Err(SourceError::Ended);
        }
        self.seq += 1;
        std::thread::sleep(Duration::from_millis(self.interval_ms));
        let img = if (self.seq / self.every) % 2 == 0 {
            &self.good
        } else {
            &self.bad
        };
        Ok(Frame::live(img.clone(), self.seq))
    }
}

fn melanoma_sample() -> image::RgbImage {
    let s = samples()
        .into_iter()
        .find(|p| sample_class(p) == "melanoma")
        .unwrap();
    dermcam::model::preprocess::load_image(&s, u64::MAX).unwrap()
}

/// Reliability IV, row 1: freeze (button, Enter, API, MQTT all call `toggle_freeze`) goes
/// through the quality gate. A camera showing only a blurred lesion: live says "Hold steady", and
/// the frozen frame must say the same, with no class, no referral and no capture saved.
#[test]
fn freeze_gates_the_frozen_frame_like_a_live_one() {
    let tmp = scratch("freeze-gated");
    let blurred = image::imageops::blur(&melanoma_sample(), 12.0);
    let source = Alternating {
        good: blurred.clone(),
        bad: blurred,
        every: 1,
        seq: 0,
        n: 0,
        interval_ms: 15,
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dir = tmp.join("captures");
    let p = Pipeline::start(
        default_model(),
        Box::new(source),
        Box::new(dermcam::screen::NoScreen),
        vec![
            Box::new(Collect(seen.clone())),
            Box::new(dermcam::sinks::capture::CaptureSink::new(dir.clone(), 10)),
        ],
        PipelineConfig::default(),
    );
    let shared = p.shared.clone();
    wait_for("live rejections", Duration::from_secs(10), || {
        shared.counters().quality_rejections >= 2
    });
    shared.toggle_freeze();
    wait_for("a frozen update", Duration::from_secs(10), || {
        seen.lock().unwrap().iter().any(|u| u.state.frozen)
    });
    shared.request_shutdown();
    p.join();
    let frozen = seen
        .lock()
        .unwrap()
        .iter()
        .find(|u| u.state.frozen)
        .cloned()
        .unwrap();
    assert!(
        frozen.prediction.is_none(),
        "a blurred frame was classified when frozen"
    );
    assert_eq!(
        frozen.state.quality,
        Some(dermcam::pipeline::quality::QualityIssue::Blurred)
    );
    assert_eq!(
        frozen.outcome(),
        Some(dermcam::model::classifier::Outcome::Retake)
    );
    assert!(!frozen.state.refer && frozen.state.top.is_empty());
    assert_eq!(
        shared.counters().inferences,
        0,
        "nothing classified, live or frozen"
    );
    let caps = dermcam::sinks::capture::CaptureSink::captures(&dir).unwrap_or_default();
    assert!(
        caps.is_empty(),
        "a held-back frame saved as a capture: {caps:?}"
    );
}

/// Reliability IV, row 7: a lesion, then a dark frame: the dark frame's state is "retake" with
/// no classes and no referral left over from the lesion (the status API serialises this state).
#[test]
fn a_retake_clears_the_previous_result() {
    let dark = image::RgbImage::from_pixel(640, 480, image::Rgb([8, 6, 5]));
    let source = Alternating {
        good: melanoma_sample(),
        bad: dark,
        // Each phase lasts longer than an inference, so both kinds are taken (the mailbox
        // keeps only the newest frame).
        every: 4,
        seq: 0,
        n: 32,
        interval_ms: 80,
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::start(
        default_model(),
        Box::new(source),
        Box::new(dermcam::screen::NoScreen),
        vec![Box::new(Collect(seen.clone()))],
        PipelineConfig::default(),
    );
    p.join();
    let updates = seen.lock().unwrap();
    let retakes: Vec<&Update> = updates
        .iter()
        .filter(|u| u.state.quality.is_some())
        .collect();
    assert!(!retakes.is_empty() && updates.iter().any(|u| u.prediction.is_some()));
    for u in retakes {
        let st = serde_json::to_value(&u.state).unwrap();
        assert_eq!(st["refer"], false, "{st}");
        assert_eq!(st["top"], serde_json::json!([]), "{st}");
        assert_eq!(
            u.outcome(),
            Some(dermcam::model::classifier::Outcome::Retake)
        );
    }
    // And no surface reports a referral with "not a lesion".
    for u in updates.iter().filter(|u| u.state.not_lesion) {
        assert!(!u.state.refer);
    }
}
