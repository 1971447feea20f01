//! The model manifest (model.json) parser and its validation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = dermcam::model::manifest::Manifest::parse(text, std::path::Path::new("model.json")) {
            assert!(!m.classes.is_empty());
            let _ = m.metric("/val/accuracy");
        }
    }
});
