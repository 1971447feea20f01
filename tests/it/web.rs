//! Web handlers through `tower::ServiceExt::oneshot` (no socket): every route and every
//! bad-input case.

use crate::*;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dermcam::config::WebConfig;
use dermcam::web::{AppState, router};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn app(cfg: WebConfig) -> axum::Router {
    router(AppState::new(
        default_model(),
        None,
        cfg,
        Default::default(),
    ))
}

async fn send(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes().to_vec(),
    )
}

fn raw(bytes: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/classify")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes))
        .unwrap()
}

fn multipart(path: &str, filename: &str, bytes: &[u8]) -> Request<Body> {
    let b = "XdermcamBoundaryX";
    let mut body = format!("--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    Request::post(path)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={b}"),
        )
        .body(Body::from(body))
        .unwrap()
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

fn sample_bytes() -> (std::path::PathBuf, Vec<u8>) {
    let s = samples()[0].clone();
    let b = std::fs::read(&s).unwrap();
    (s, b)
}

#[tokio::test]
async fn index_has_upload_form_and_disclaimer() {
    let a = app(WebConfig::default());
    let (st, h, body) = send(&a, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(
        html.contains("type=\"file\"")
            && html.contains("capture")
            && html.contains("Not a diagnosis")
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
}

#[tokio::test]
async fn api_classify_raw_and_multipart_match_the_library() {
    let a = app(WebConfig::default());
    let (path, bytes) = sample_bytes();
    let m = default_model();
    let (direct, _) = m
        .classify(
            &dermcam::model::preprocess::load_image(&path, u64::MAX).unwrap(),
            false,
        )
        .unwrap();
    for req in [
        raw(bytes.clone()),
        multipart("/api/v1/classify", "lesion.jpg", &bytes),
    ] {
        let (st, _, body) = send(&a, req).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let v = json(&body);
        assert_eq!(v["classes"].as_array().unwrap().len(), 9);
        assert_eq!(
            v["classes"][0]["id"].as_u64().unwrap() as usize,
            direct.top1().0
        );
        assert!(
            (v["classes"][0]["probability"].as_f64().unwrap() - direct.top1().1 as f64).abs()
                < 1e-6
        );
        assert_eq!(v["model"]["sha256"], m.manifest.sha256);
        assert_eq!(v["uncertain"], direct.uncertain);
        // The refer decision travels with every classified upload.
        assert_eq!(v["refer"], direct.refer);
        assert!(
            (v["malignant_probability"].as_f64().unwrap() - direct.malignant_probability as f64)
                .abs()
                < 1e-6
        );
        assert!(v["timings"]["inference_ms"].as_f64().unwrap() > 0.0);
    }
    // PNG is accepted too (type by content: a PNG named .jpg).
    let img = image::open(&path).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (st, _, _) = send(&a, multipart("/api/v1/classify", "lies.jpg", &png)).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn form_upload_shows_result_page() {
    let a = app(WebConfig::default());
    let (_, bytes) = sample_bytes();
    let (st, _, body) = send(&a, multipart("/classify", "x.jpg", &bytes)).await;
    assert_eq!(st, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    assert!(
        html.contains("id=\"prediction\"")
            && html.contains("data:image/jpeg;base64,")
            && html.contains("Not a diagnosis")
    );
    // The refer decision is on the page as text (the banner is not colour alone).
    assert!(
        html.contains("id=\"refer\"")
            && (html.contains("REFER: a clinician should see this lesion")
                || html.contains("No referral flag")),
        "{html}"
    );
    let (st, _, body) = send(&a, multipart("/classify", "x.gif", b"GIF89a\x01\x00")).await;
    assert_eq!(st, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("only JPEG and PNG")
    );
}

#[tokio::test]
async fn bad_uploads_get_clear_errors() {
    let cfg = WebConfig {
        max_upload_bytes: 200_000,
        max_pixels: 1_000_000,
        ..Default::default()
    };
    let a = app(cfg);
    let (_, bytes) = sample_bytes();

    let (st, _, body) = send(&a, raw(b"GIF89a....".to_vec())).await;
    assert_eq!(
        st,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("JPEG and PNG")
    );

    let (st, _, body) = send(&a, raw(bytes[..bytes.len() / 3].to_vec())).await;
    assert_eq!(
        st,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("corrupt or truncated")
    );

    let (st, _, body) = send(&a, raw(vec![0xFF; 300_000])).await;
    assert_eq!(
        st,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&body)
    );

    let mut big = vec![0xFF, 0xD8, 0xFF];
    big.resize(300_000, 0);
    let (st, _, _) = send(&a, multipart("/api/v1/classify", "big.jpg", &big)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);

    // Decompression bomb: a tiny PNG that decodes to 4000x4000 pixels.
    let bomb = image::GrayImage::new(4000, 4000);
    let mut png = Vec::new();
    bomb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(png.len() < 200_000);
    let (st, _, body) = send(&a, raw(png)).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("exceeds the limit")
    );

    let (st, _, _) = send(&a, raw(vec![])).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    let (st, _, body) = send(&a, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let rejected: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("dermcam_uploads_rejected_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rejected >= 5, "{text}");
}

#[tokio::test]
async fn overload_gets_503_with_retry_after() {
    let a = app(WebConfig {
        max_concurrent: 1,
        queue: 0,
        ..Default::default()
    });
    // Large enough that one classification is still running when the others arrive.
    let img = image::RgbImage::from_fn(2400, 1800, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let reqs: Vec<_> = (0..6)
        .map(|_| {
            let (a, png) = (a.clone(), png.clone());
            async move { send(&a, raw(png)).await }
        })
        .collect();
    let results = futures_join_all(reqs).await;
    let ok = results.iter().filter(|r| r.0 == StatusCode::OK).count();
    let busy: Vec<_> = results
        .iter()
        .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(ok >= 1, "at least one served");
    assert!(
        !busy.is_empty(),
        "queue of 0 must refuse concurrent requests"
    );
    assert!(busy.iter().all(|r| r.1[header::RETRY_AFTER] == "1"));
    assert_eq!(ok + busy.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_vanished_uploaders_do_not_hold_places_and_bodies_are_not_read_when_busy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = app(WebConfig {
        max_concurrent: 1,
        queue: 0,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, a).await.unwrap() });
    let (_, jpg) = sample_bytes();
    let head = |len: usize| {
        format!(
            "POST /api/v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    async fn status(c: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    }
    // A: takes the only place, sends half its image, then stalls.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(head(jpg.len()).as_bytes()).await.unwrap();
    slow.write_all(&jpg[..jpg.len() / 2]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // B: refused at once, before its body is read (it sends only headers and still gets 503).
    let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
    b.write_all(head(jpg.len()).as_bytes()).await.unwrap();
    let st = tokio::time::timeout(std::time::Duration::from_secs(5), status(&mut b))
        .await
        .expect("busy answer must not wait for the body");
    assert!(st.contains("503"), "{st}");
    // A vanishes mid-upload: its place must come back.
    drop(slow);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(head(jpg.len()).as_bytes()).await.unwrap();
    c.write_all(&jpg).await.unwrap();
    let st = status(&mut c).await;
    assert!(
        st.contains("200"),
        "place not returned after a client vanished: {st}"
    );
}

async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output>
where
    F: Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn token_protects_everything_but_health() {
    let token = "correct-horse-battery-staple";
    let a = app(WebConfig {
        bind: "0.0.0.0:8080".into(),
        token: Some(token.into()),
        ..Default::default()
    });
    let (st, _, _) = send(
        &a,
        Request::get("/api/v1/status").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, h, _) = send(&a, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/login");
    let (st, _, _) = send(&a, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = send(
        &a,
        Request::get("/api/v1/model")
            .header(header::AUTHORIZATION, "Bearer wrong-token-wrong-token!")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _, body) = send(
        &a,
        Request::get("/api/v1/model")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(json(&body)["classes"].as_array().unwrap().len(), 9);
    // Login form sets a cookie that then works.
    let (st, h, _) = send(
        &a,
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let cookie = h[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("HttpOnly") || h[header::SET_COOKIE].to_str().unwrap().contains("HttpOnly")
    );
    let (st, _, _) = send(
        &a,
        Request::get("/")
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn status_model_health_metrics_and_static() {
    let a = app(WebConfig::default());
    for (path, ctype) in [
        ("/api/v1/status", "application/json"),
        ("/api/v1/model", "application/json"),
        ("/healthz", "text/plain"),
        ("/metrics", "text/plain"),
        ("/static/app.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ] {
        let (st, h, _) = send(&a, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(st, StatusCode::OK, "{path}");
        assert!(
            h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ctype),
            "{path}: {:?}",
            h[header::CONTENT_TYPE]
        );
    }
    for bad in [
        "/static/../Cargo.toml",
        "/static/%2e%2e/Cargo.toml",
        "/etc/passwd",
    ] {
        let (st, _, _) = send(&a, Request::get(bad).body(Body::empty()).unwrap()).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{bad}");
    }
    let (st, _, body) = send(
        &a,
        Request::post("/api/v1/freeze").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(
        st,
        StatusCode::CONFLICT,
        "no live pipeline: {}",
        String::from_utf8_lossy(&body)
    );
}

#[tokio::test]
async fn live_status_reflects_the_pipeline() {
    use dermcam::pipeline::Pipeline;
    let model = default_model();
    let src = slideshow(50, true);
    let p = Pipeline::start(
        model.clone(),
        Box::new(src),
        Box::new(dermcam::screen::NoScreen),
        vec![],
        Default::default(),
    );
    let shared = p.shared.clone();
    let a = router(AppState::new(
        model,
        Some(shared.clone()),
        WebConfig::default(),
        Default::default(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while shared.counters().inferences < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (st, _, body) = send(
        &a,
        Request::get("/api/v1/status").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["source"], "live");
    assert!(v["counters"]["inferences"].as_u64().unwrap() >= 2);
    assert!(v["last_prediction"]["classes"].as_array().unwrap().len() == 3);
    let (st, h, body) = send(
        &a,
        Request::get("/api/v1/frame.jpg")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "image/jpeg");
    assert!(body.starts_with(&[0xFF, 0xD8]));
    // No screen attached: nothing to show.
    let (st, _, _) = send(
        &a,
        Request::get("/api/v1/screen.png")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, body) = send(&a, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("dermcam_inferences_total")
    );
    let (st, _, _) = send(
        &a,
        Request::post("/api/v1/freeze").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    shared.request_shutdown();
    tokio::task::spawn_blocking(move || p.join()).await.unwrap();
}

#[tokio::test]
async fn screen_png_is_what_the_screen_shows() {
    // The board checks compare this with the framebuffer as the kernel scans it out.
    use dermcam::pipeline::Pipeline;
    let dir = crate::scratch("screen-api");
    let path = dir.join("screen.png");
    let model = default_model();
    let p = Pipeline::start(
        model.clone(),
        Box::new(slideshow(50, false)),
        Box::new(dermcam::screen::PngScreen::new(path.clone(), 320, 240)),
        vec![],
        Default::default(),
    );
    let a = router(AppState::new(
        model,
        Some(p.shared.clone()),
        WebConfig::default(),
        Default::default(),
    ));
    // The slideshow ends: the last screen stays.
    tokio::task::spawn_blocking(move || p.join()).await.unwrap();
    let (st, h, body) = send(
        &a,
        Request::get("/api/v1/screen.png")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "image/png");
    let api = image::load_from_memory(&body).unwrap().to_rgb8();
    let shown = image::open(&path).unwrap().to_rgb8();
    assert_eq!(api.dimensions(), (320, 240));
    assert!(
        api == shown,
        "the API's screen differs from the presented one"
    );
}

/// A classifier whose every run fails (a wedged accelerator, a corrupted engine state).
struct Broken;

impl dermcam::model::classifier::Classifier for Broken {
    fn run(
        &self,
        _: &dermcam::model::preprocess::InputTensor,
    ) -> Result<dermcam::model::classifier::Outputs, dermcam::model::classifier::InferenceError>
    {
        Err(dermcam::model::classifier::InferenceError(
            "engine fault".into(),
        ))
    }
}

#[tokio::test]
async fn inference_failure_is_the_devices_fault_500_not_a_rejected_upload() {
    let model = std::sync::Arc::new(dermcam::model::Model::with_classifier(
        default_model().manifest.clone(),
        Box::new(Broken),
        "test: always fails",
    ));
    let st = AppState::new(model, None, WebConfig::default(), Default::default());
    let counters = st.counters.clone();
    let a = router(st);
    let (_, bytes) = sample_bytes();
    let (status, _, body) = send(&a, raw(bytes)).await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(String::from_utf8_lossy(&body).contains("inference failed"));
    assert_eq!(
        counters
            .inference_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        counters
            .rejected_uploads
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// With a token, only the deliberately public routes answer without it: every other route
/// (pages, static script, API, metrics, state changes) is refused, and path tricks that try to
/// reach a protected route through a public prefix resolve to nothing.
#[tokio::test]
async fn only_the_public_router_answers_without_a_token() {
    let a = app(WebConfig {
        bind: "0.0.0.0:8080".into(),
        token: Some("Zq8mX3vR7kP2nL9wT4yB6cD1".into()),
        ..Default::default()
    });
    let get = |p: &str| Request::get(p).body(Body::empty()).unwrap();
    for p in ["/healthz", "/login", "/static/style.css"] {
        let (st, _, _) = send(&a, get(p)).await;
        assert_eq!(st, StatusCode::OK, "{p} is public");
    }
    for p in ["/", "/static/app.js"] {
        let (st, h, _) = send(&a, get(p)).await;
        assert_eq!(
            (st, &h[header::LOCATION]),
            (StatusCode::SEE_OTHER, &"/login".parse().unwrap()),
            "{p}"
        );
    }
    for p in [
        "/api/v1/status",
        "/api/v1/model",
        "/api/v1/frame.jpg",
        "/api/v1/screen.png",
        "/metrics",
    ] {
        let (st, _, _) = send(&a, get(p)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{p}");
    }
    for p in ["/api/v1/freeze", "/api/v1/classify"] {
        let (st, _, _) = send(&a, Request::post(p).body(Body::from("x")).unwrap()).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "POST {p}");
    }
    for p in [
        "/healthz/../api/v1/status",
        "/static/../api/v1/status",
        "//api/v1/status",
        "/healthz/",
    ] {
        let (st, _, body) = send(&a, get(p)).await;
        assert!(
            st == StatusCode::NOT_FOUND || st == StatusCode::UNAUTHORIZED,
            "{p}: {st}"
        );
        assert!(!String::from_utf8_lossy(&body).contains("counters"), "{p}");
    }
}
