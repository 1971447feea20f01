//! Golden images of the screen renderer: each layout with the real model's output on a real
//! sample. Regenerate after an intended change with DERMCAM_UPDATE_GOLDEN=1 and look at them.

use crate::*;
use dermcam::model::preprocess::{DEFAULT_MAX_PIXELS, load_image};
use dermcam::pipeline::quality::QualityIssue;
use dermcam::pipeline::view::{DisplayState, SourceStatus};
use dermcam::screen::render::{Canvas, render};

fn state_for_sample() -> (image::RgbImage, DisplayState) {
    let m = default_model();
    let s = samples()
        .into_iter()
        .find(|p| sample_class(p) == "melanoma")
        .unwrap();
    let img = load_image(&s, DEFAULT_MAX_PIXELS).unwrap();
    let (p, _) = m.classify(&img, false).unwrap();
    let top = p
        .top_k(3, &m.manifest)
        .into_iter()
        .map(|c| (c.name, c.probability))
        .collect();
    // Timing figures are fixed so the picture does not depend on machine speed.
    let st = DisplayState {
        model_name: m.manifest.name.clone(),
        model_sha256: m.manifest.sha256.clone(),
        top,
        uncertain: p.uncertain,
        refer: p.refer,
        malignant_probability: p.malignant_probability,
        quality: None,
        not_lesion: p.not_lesion,
        source: SourceStatus::Live,
        frozen: false,
        fps: 12.5,
        inference_ms: 42.0,
    };
    (img, st)
}

fn check_golden(name: &str, canvas: &Canvas) {
    let path = root().join("tests/golden").join(format!("{name}.png"));
    if std::env::var_os("DERMCAM_UPDATE_GOLDEN").is_some()
        || !path.exists() && std::env::var_os("CI").is_none()
    {
        canvas.0.save(&path).unwrap();
        eprintln!("wrote golden {}", path.display());
        return;
    }
    let golden = image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(
        golden.dimensions(),
        canvas.0.dimensions(),
        "{name}: size changed"
    );
    let differing = golden
        .pixels()
        .zip(canvas.0.pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0.iter()).any(|(x, y)| x.abs_diff(*y) > 8))
        .count();
    let share = differing as f64 / (golden.width() * golden.height()) as f64;
    if share > 0.002 {
        let actual = root()
            .join("target")
            .join(format!("golden-actual-{name}.png"));
        canvas.0.save(&actual).unwrap();
        panic!(
            "{name}: {:.2}% of pixels differ from {} (actual: {})",
            share * 100.0,
            path.display(),
            actual.display()
        );
    }
}

#[test]
fn layouts_match_golden_images() {
    let (img, st) = state_for_sample();
    for (w, h) in [(240, 240), (320, 240), (800, 480)] {
        let mut c = Canvas::new(w, h);
        render(&mut c, Some(&img), &st);
        check_golden(&format!("live-{w}x{h}"), &c);
    }
}

#[test]
fn states_match_golden_images() {
    let (img, mut st) = state_for_sample();
    st.uncertain = true;
    let mut c = Canvas::new(320, 240);
    render(&mut c, Some(&img), &st);
    check_golden("uncertain-320x240", &c);

    st.uncertain = false;
    st.quality = Some(QualityIssue::Blurred);
    render(&mut c, Some(&img), &st);
    check_golden("quality-320x240", &c);

    st.quality = None;
    st.source = SourceStatus::Disconnected("/dev/video0: No such device".into());
    render(&mut c, None, &st);
    check_golden("disconnected-320x240", &c);

    st.source = SourceStatus::Live;
    st.refer = true;
    st.malignant_probability = 0.42;
    for (w, h) in [(240, 240), (320, 240), (800, 480)] {
        let mut c = Canvas::new(w, h);
        render(&mut c, Some(&img), &st);
        check_golden(&format!("refer-{w}x{h}"), &c);
        // The banner's red is on screen, with its text (not colour alone): white pixels inside it.
        let red =
            c.0.pixels()
                .filter(|p| p[0] > 180 && p[1] < 50 && p[2] < 60)
                .count();
        assert!(red > 500, "{w}x{h}: refer banner missing");
    }
    // No banner without a current classification (bad quality frame).
    st.quality = Some(QualityIssue::TooDark);
    let mut c = Canvas::new(320, 240);
    render(&mut c, Some(&img), &st);
    let red =
        c.0.pixels()
            .filter(|p| p[0] > 180 && p[1] < 50 && p[2] < 60)
            .count();
    assert!(red < 50, "refer banner drawn over a refused frame");
    // Not a lesion: its own message, no classes, and never the refer banner.
    st.quality = None;
    st.not_lesion = true;
    for (w, h) in [(320, 240), (800, 480)] {
        let mut c = Canvas::new(w, h);
        render(&mut c, Some(&img), &st);
        check_golden(&format!("not-lesion-{w}x{h}"), &c);
        let red =
            c.0.pixels()
                .filter(|p| p[0] > 180 && p[1] < 50 && p[2] < 60)
                .count();
        assert!(red < 50, "{w}x{h}: refer banner drawn over a non-lesion");
    }
    assert_eq!(st.result_headline().as_deref(), Some("Not a skin lesion"));
    st.not_lesion = false;
    st.refer = false;

    st.frozen = true;
    let mut big = Canvas::new(800, 480);
    render(&mut big, Some(&img), &st);
    check_golden("frozen-800x480", &big);
}

#[test]
fn renderer_scales_to_odd_framebuffer_sizes() {
    let (img, st) = state_for_sample();
    for (w, h) in [(96, 96), (480, 320), (1024, 600), (1920, 1080), (600, 1024)] {
        let mut c = Canvas::new(w, h);
        render(&mut c, Some(&img), &st);
        // The disclaimer's yellow must be on screen at every size.
        let yellow =
            c.0.pixels()
                .filter(|p| p[0] > 200 && p[1] > 150 && p[2] < 60)
                .count();
        assert!(yellow > 20, "{w}x{h}: disclaimer not drawn");
    }
}
