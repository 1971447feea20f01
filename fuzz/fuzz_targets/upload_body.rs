//! The upload handlers' body parsing, raw (`POST /api/v1/classify`) and multipart (`POST
//! /classify`, the upload form), through the real router with the real model: any body gets
//! a response (2xx or a 4xx/5xx error), never a panic.
#![no_main]
use axum::body::Body;
use axum::http::{Request, header};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

struct Env {
    rt: tokio::runtime::Runtime,
    /// The real limits: decodable images go on to the model.
    full: axum::Router,
    /// A 1-pixel limit: every image is refused right after its header is parsed, so most
    /// executions exercise the HTTP/multipart/sniffing/limit layers at full speed (one model
    /// inference under ASan takes ~0.2 s).
    parse_only: axum::Router,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        // The fastest shipped bundle under tract (fp32 ResNet-18 at 128 px) keeps executions
        // fast; body parsing is the same for every bundle.
        let dir = std::path::Path::new(dermcam::MODELS_DIR).join("resnet18-v2");
        let model = dermcam::model::Model::load(&dir, &Default::default()).expect("bundle");
        let model = Arc::new(model);
        let app = |max_pixels| {
            let cfg = dermcam::config::WebConfig {
                max_pixels,
                ..Default::default()
            };
            dermcam::web::router(dermcam::web::AppState::new(
                model.clone(),
                None,
                cfg,
                Default::default(),
            ))
        };
        let (full, parse_only) = (app(4_000_000), app(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Env {
            rt,
            full,
            parse_only,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let e = env();
    let req = match mode % 3 {
        0 => Request::post("/api/v1/classify")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(body.to_vec())),
        1 => Request::post("/classify")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XdermcamX")
            .body(Body::from(body.to_vec())),
        _ => Request::post("/api/v1/classify")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=XdermcamX")
            .body(Body::from(body.to_vec())),
    }
    .unwrap();
    // Mode byte 0xFF goes all the way through the model. Inputs that reach the model gain
    // coverage inside tract, so libFuzzer keeps breeding them; the model path on decoded
    // images is image_decode's and the web tests' job, this target is about body parsing.
    let app = if mode == 0xFF { &e.full } else { &e.parse_only };
    let resp = e.rt.block_on(app.clone().oneshot(req)).unwrap();
    let s = resp.status().as_u16();
    assert!(s == 200 || (400..600).contains(&s), "status {s}");
    // A server error would mean an unhandled case.
    assert!(s != 500, "500 for a client body");
});
