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
    app: axum::Router,
}

fn env() -> &'static Env {
    static E: OnceLock<Env> = OnceLock::new();
    E.get_or_init(|| {
        // The smallest shipped bundle keeps executions fast; parsing is the same for all.
        let dir = std::path::Path::new(dermcam::MODELS_DIR).join("resnet18-skin9-int8");
        let model = dermcam::model::Model::load(&dir, &Default::default()).expect("bundle");
        let cfg = dermcam::config::WebConfig {
            max_pixels: 4_000_000,
            ..Default::default()
        };
        let app = dermcam::web::router(dermcam::web::AppState::new(
            Arc::new(model),
            None,
            cfg,
            Default::default(),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Env { rt, app }
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
    let resp = e.rt.block_on(e.app.clone().oneshot(req)).unwrap();
    let s = resp.status().as_u16();
    assert!(s == 200 || (400..600).contains(&s), "status {s}");
    // A server error would mean an unhandled case.
    assert!(s != 500, "500 for a client body");
});
