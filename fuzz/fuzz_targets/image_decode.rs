//! Image decoding (JPEG, PNG: every accepted format, sniffed from the bytes) + the model's
//! preprocessing, with the web server's pixel limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

/// Small enough that a 64 MB malloc limit catches any allocation past the pixel check.
const MAX_PIXELS: u64 = 4_000_000;

fn spec() -> &'static dermcam::model::manifest::InputSpec {
    static M: std::sync::OnceLock<dermcam::model::manifest::Manifest> = std::sync::OnceLock::new();
    &M.get_or_init(|| {
        dermcam::model::manifest::read_manifest(
            &Path::new(dermcam::MODELS_DIR).join(dermcam::DEFAULT_BUNDLE),
        )
        .expect("default bundle manifest")
    })
    .input
}

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = dermcam::model::preprocess::decode_image(data, "fuzz", MAX_PIXELS) {
        assert!(img.width() as u64 * img.height() as u64 <= MAX_PIXELS);
        let t = dermcam::model::preprocess::preprocess(&img, spec());
        assert_eq!(t.data.len(), t.shape().iter().product::<usize>());
        assert!(t.data.iter().all(|v| v.is_finite()));
    }
});
