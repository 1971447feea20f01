//! The appliance config parser + validation: any text gives a Config or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = dermcam::config::Config::parse(text, std::path::Path::new("fuzz.toml")) {
            let _ = cfg.missing_features();
            let _ = cfg.model.dir();
        }
    }
});
