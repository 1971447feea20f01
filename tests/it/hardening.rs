//! Regression tests for "Hardening II" (what a hostile client on the clinic network could do):
//! one test (or more) per item, each failing on the code before the fix. Hermetic: loopback
//! sockets only, no camera, GPU or network.

use crate::*;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dermcam::config::{Config, WebConfig};
use dermcam::model::preprocess::{DEFAULT_MAX_PIXELS, load_image};
use dermcam::web::{AppState, router};
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const TOKEN: &str = "3f9c1e7a0b5d48e2a6c4f1d9e8b7a2c5";

fn token_cfg() -> WebConfig {
    WebConfig {
        bind: "0.0.0.0:8080".into(),
        token: Some(TOKEN.into()),
        ..Default::default()
    }
}

fn app_with(
    cfg: WebConfig,
    live: Option<std::sync::Arc<dermcam::pipeline::Shared>>,
) -> axum::Router {
    router(AppState::new(
        default_model(),
        live,
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

fn login_req(body: impl Into<Body>) -> Request<Body> {
    Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body.into())
        .unwrap()
}

fn raw_upload(path: &str, bytes: Vec<u8>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes))
        .unwrap()
}

fn multipart(bytes: &[u8]) -> Request<Body> {
    let b = "XdermcamBoundaryX";
    let mut body = format!("--{b}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    Request::post("/classify")
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

fn jpeg_of(img: &image::RgbImage) -> Vec<u8> {
    let mut v = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut v), image::ImageFormat::Jpeg)
        .unwrap();
    v
}

/// Serve `app` on a loopback port with the real accept loop and `cfg`'s limits.
async fn serve(app: axum::Router, cfg: WebConfig) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { dermcam::web::serve(listener, app, &cfg).await });
    addr
}

/// Status line of the response on `c` (reads until the server closes or `limit` passes).
async fn status_line(c: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, c.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// True once the server has closed `c` (read returns 0 or an error) within `limit`.
async fn closed_within(c: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

// 1. Login (and every other non-upload route) no longer reads megabytes without the token.
#[tokio::test]
async fn item01_non_upload_bodies_are_capped_small() {
    let a = app_with(token_cfg(), None);
    // Declared 10 MB: refused before reading.
    let req = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::CONTENT_LENGTH, "10000000")
        .body(Body::from(vec![b'a'; 10_000_000]))
        .unwrap();
    let (st, _, _) = send(&a, req).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    // No declared length (as with chunked encoding): reading stops at the cap.
    let (st, _, _) = send(&a, login_req(vec![b'a'; 1_000_000])).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
    // Not just login: a POST to any non-upload route with a big body.
    let req = Request::post("/api/v1/freeze")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_LENGTH, "1000000")
        .body(Body::from(vec![0u8; 1_000_000]))
        .unwrap();
    let (st, _, _) = send(&a, req).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
}

// 2. Connections are capped, idle / half-sent requests time out, slow bodies lose their place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item02_idle_connections_time_out_and_are_capped() {
    let cfg = WebConfig {
        max_connections: 4,
        header_timeout_ms: 600,
        ..Default::default()
    };
    let addr = serve(app_with(cfg.clone(), None), cfg).await;
    // Four connections: two send nothing, two send half a request line.
    let mut idle = Vec::new();
    for i in 0..4 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            c.write_all(b"GET /heal").await.unwrap();
        }
        idle.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The cap is reached: a fifth client waits in the accept queue (no descriptor used)...
    let mut probe = tokio::net::TcpStream::connect(addr).await.unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), probe.read(&mut first)).await;
    assert!(
        early.is_err(),
        "a fifth connection was served beyond max_connections = 4"
    );
    // ...until the header timeout closes the idle ones; then it is answered.
    for c in idle.iter_mut() {
        assert!(
            closed_within(c, Duration::from_secs(3)).await,
            "idle connection not closed"
        );
    }
    let st = status_line(&mut probe, Duration::from_secs(3)).await;
    assert!(st.contains("200"), "{st}");
    // Keep-alive connections that go idle after a request are closed too.
    let mut ka = tokio::net::TcpStream::connect(addr).await.unwrap();
    ka.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    assert!(closed_within(&mut ka, Duration::from_secs(3)).await);
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item02_one_client_cannot_take_every_connection() {
    let cfg = WebConfig {
        max_connections: 16,
        header_timeout_ms: 30_000,
        ..Default::default()
    };
    assert_eq!(dermcam::web::per_client_limit(16), 4);
    let addr = serve(app_with(cfg.clone(), None), cfg).await;
    let mut hog = Vec::new();
    for _ in 0..4 {
        hog.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fifth from the same address is closed at once...
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut extra, Duration::from_secs(2)).await);
    // ...while another address (127.0.0.2, still loopback) is served.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = sock.connect(addr).await.unwrap();
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let st = status_line(&mut other, Duration::from_secs(3)).await;
    assert!(st.contains("200"), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item02_slow_uploaders_lose_their_place_and_cannot_take_them_all() {
    // 4 places (1 running + 3 queued); one client address may hold 2 of them.
    let cfg = WebConfig {
        max_concurrent: 1,
        queue: 3,
        ..Default::default()
    };
    let addr = serve(app_with(cfg.clone(), None), cfg).await;
    let jpg = std::fs::read(&samples()[0]).unwrap();
    let head = |len: usize| {
        format!(
            "POST /api/v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
        )
    };
    let from = |ip: &'static str| async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        sock.connect(addr).await.unwrap()
    };
    // Three slow clients from one machine send 100 bytes of a big upload, then trickle.
    let t0 = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut c = from("127.0.0.2").await;
        c.write_all(head(jpg.len()).as_bytes()).await.unwrap();
        c.write_all(&jpg[..100]).await.unwrap();
        slow.push(c);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The third is over that machine's share of the places.
    let st = status_line(&mut slow[2], Duration::from_secs(2)).await;
    assert!(st.contains("503"), "{st}");
    // Another client is served while they stall.
    let mut c = from("127.0.0.1").await;
    c.write_all(head(jpg.len()).as_bytes()).await.unwrap();
    c.write_all(&jpg).await.unwrap();
    let st = status_line(&mut c, Duration::from_secs(20)).await;
    assert!(st.contains("200"), "slow clients hold every place: {st}");
    // The stalled ones are cut off by the minimum upload rate (32 KiB/s after 2 s), long
    // before the 30 s body timeout, and give their places back.
    for c in slow.iter_mut().take(2) {
        let st = status_line(c, Duration::from_secs(10)).await;
        assert!(st.contains("408"), "{st}");
    }
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
}

#[test]
fn item02_unit_caps_open_files() {
    let unit = std::fs::read_to_string(root().join("systemd/dermcam.service")).unwrap();
    let n: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE= in the unit")
        .trim()
        .parse()
        .unwrap();
    // Connections (<= 4096 by config validation, 64 by default) plus the pipeline's own files.
    assert!(n >= 8192, "{n}");
}

// 3. `demo --web <network address>` goes through the same validation as `run`.
#[test]
fn item03_demo_on_a_network_address_needs_a_token() {
    let (code, out) = dermcam_bin(&[
        "demo",
        "--once",
        "--web",
        "0.0.0.0:18998",
        "--screen",
        "/dev/null",
    ]);
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("web.token"), "{out}");
}

// 4. DNS rebinding (foreign Host) and cross-origin state changes are refused.
#[tokio::test]
async fn item04_foreign_host_and_cross_origin_requests_are_refused() {
    let a = app_with(WebConfig::default(), None);
    let get = |host: &str, path: &str| {
        Request::get(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    for path in ["/api/v1/frame.jpg", "/api/v1/status", "/"] {
        let (st, _, _) = send(&a, get("rebind.attacker.example:8080", path)).await;
        assert_eq!(st, StatusCode::MISDIRECTED_REQUEST, "{path}");
    }
    let (st, _, _) = send(&a, get("127.0.0.1:8080", "/api/v1/status")).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = send(&a, get("localhost:8080", "/api/v1/status")).await;
    assert_eq!(st, StatusCode::OK);
    let named = app_with(
        WebConfig {
            allowed_hosts: vec!["dermcam.local".into()],
            ..Default::default()
        },
        None,
    );
    let (st, _, _) = send(&named, get("dermcam.local:8080", "/api/v1/status")).await;
    assert_eq!(st, StatusCode::OK);

    let post = |origin: Option<&str>, site: Option<&str>, path: &str| {
        let mut r = Request::post(path).header(header::HOST, "192.168.1.20:8080");
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.body(Body::empty()).unwrap()
    };
    for (origin, site) in [
        (Some("http://evil.example"), None),
        // Same IP, another port: SameSite cookies do not separate these.
        (Some("http://192.168.1.20:9000"), None),
        (Some("null"), None),
        (None, Some("cross-site")),
        (None, Some("same-site")),
    ] {
        for path in ["/api/v1/freeze", "/login", "/classify", "/api/v1/classify"] {
            let (st, _, _) = send(&a, post(origin, site, path)).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{path} {origin:?} {site:?}");
        }
    }
    // Same origin passes the check (then: no live pipeline here).
    let (st, _, _) = send(
        &a,
        post(Some("http://192.168.1.20:8080"), None, "/api/v1/freeze"),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _, _) = send(&a, post(None, Some("same-origin"), "/api/v1/freeze")).await;
    assert_eq!(st, StatusCode::CONFLICT);
}

fn live_pipeline(
    interval: Duration,
) -> (
    dermcam::pipeline::Pipeline,
    std::sync::Arc<dermcam::pipeline::Shared>,
) {
    let src = crate::slideshow(interval.as_millis() as u64, true);
    let p = dermcam::pipeline::Pipeline::start(
        default_model(),
        Box::new(src),
        Box::new(dermcam::screen::NoScreen),
        vec![],
        Default::default(),
    );
    let shared = p.shared.clone();
    (p, shared)
}

// 4 (rate limit) and 5 (frame encoded once, blocking work bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item04_05_freeze_is_rate_limited_and_frames_are_encoded_once() {
    // A slow slideshow: the frame changes at most once while the requests run.
    let (p, shared) = live_pipeline(Duration::from_secs(3));
    let st = AppState::new(
        default_model(),
        Some(shared.clone()),
        WebConfig::default(),
        Default::default(),
    );
    let counters = st.counters.clone();
    let a = router(st);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.latest_frame().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reqs: Vec<_> = (0..50)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                send(
                    &a,
                    Request::get("/api/v1/frame.jpg")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for r in reqs {
        let (st, _, body) = r.await.unwrap();
        assert_eq!(st, StatusCode::OK);
        bodies.push(body);
    }
    assert!(bodies.iter().all(|b| b.starts_with(&[0xFF, 0xD8])));
    let encodes = counters
        .frame_encodes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        encodes <= 2,
        "50 requests for (at most two) frames took {encodes} encodes"
    );
    let freeze = || Request::post("/api/v1/freeze").body(Body::empty()).unwrap();
    let (st, _, _) = send(&a, freeze()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, h, _) = send(&a, freeze()).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key(header::RETRY_AFTER));
    shared.request_shutdown();
    tokio::task::spawn_blocking(move || p.join()).await.unwrap();
}

/// A 16-bit RGBA PNG of repeated rows (compresses to almost nothing).
fn png16(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, width, height);
        e.set_color(png::ColorType::Rgba);
        e.set_depth(png::BitDepth::Sixteen);
        e.set_compression(png::Compression::Fast);
        let mut w = e.write_header().unwrap();
        let row: Vec<u8> = (0..width as usize * 8)
            .map(|i| ((i / 8) % 200 + (i % 8) * 5) as u8)
            .collect();
        let mut s = w.stream_writer().unwrap();
        for _ in 0..height {
            std::io::Write::write_all(&mut s, &row).unwrap();
        }
        s.finish().unwrap();
    }
    out
}

// 6. Decode memory is budgeted by the real bytes per pixel, and PNGs decode straight to RGB8.
#[test]
fn item06_decode_budget_counts_the_formats_bytes_per_pixel() {
    // Non-interlaced 16-bit RGBA: decoded row by row to RGB8, within the budget.
    let flat = png16(1000, 1000);
    let img = dermcam::model::preprocess::decode_image(&flat, "t", 1_000_000).unwrap();
    assert_eq!(img.dimensions(), (1000, 1000));
    // Alpha composited over white, as a viewer shows it (reliability IV, row 2).
    let rgba = image::load_from_memory(&flat).unwrap().into_rgba8();
    let reference = image::RgbImage::from_fn(1000, 1000, |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        image::Rgb([0, 1, 2].map(|k| ((p[k] as u32 * a + 255 * (255 - a) + 127) / 255) as u8))
    });
    let max_diff = img
        .as_raw()
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert!(max_diff <= 1, "{max_diff}");
    // A grayscale JPEG that EXIF says to rotate: 1 (Y) + 3 (RGB8) + 3 (the rotated copy)
    // bytes per pixel, over the 4-bytes-per-pixel budget at max_pixels = its size: refused
    // before allocating; with room to spare it decodes (rotated).
    let gray = image::GrayImage::from_fn(1000, 500, |x, y| image::Luma([((x + y) % 256) as u8]));
    let mut jpg = Vec::new();
    gray.write_to(
        &mut std::io::Cursor::new(&mut jpg),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    let exif: &[u8] = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    app1.extend_from_slice(exif);
    let rotated: Vec<u8> = jpg[..2]
        .iter()
        .chain(&app1)
        .chain(&jpg[2..])
        .copied()
        .collect();
    let e = dermcam::model::preprocess::decode_image(&rotated, "t", 500_000).unwrap_err();
    assert!(e.to_string().contains("decode budget"), "{e}");
    let ok = dermcam::model::preprocess::decode_image(&rotated, "t", 1_000_000).unwrap();
    assert_eq!(ok.dimensions(), (500, 1000), "EXIF rotation applied");
}

/// Peak RSS (MB) of one `dermcam` run, from wait4 on that child alone.
fn child_peak_rss_mb(args: &[&str]) -> f64 {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(args)
        .env_remove("DERMCAM_MODEL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: plain wait4 on our own child; rusage is written by the kernel.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    ru.ru_maxrss as f64 / 1024.0
}

#[test]
fn item06_sixteen_bit_png_peak_memory_is_rgb8_sized() {
    let d = scratch("hardening-png16");
    let big = d.join("big16.png");
    // 12 M pixels: RGBA16 + RGB8 would be 11 bytes/pixel = 132 MB over the baseline.
    std::fs::write(&big, png16(4000, 3000)).unwrap();
    let base = child_peak_rss_mb(&["classify", samples()[0].to_str().unwrap()]);
    let peak = child_peak_rss_mb(&["classify", big.to_str().unwrap()]);
    eprintln!("classify peak RSS: sample {base:.0} MB, 12 MP 16-bit RGBA PNG {peak:.0} MB");
    assert!(
        peak - base < 75.0,
        "12 MP 16-bit PNG added {:.0} MB (RGB8 is 36 MB)",
        peak - base
    );
}

// 7. Percent-decoding of the login body cannot panic, and nothing is echoed.
#[tokio::test]
async fn item07_crafted_login_bodies_do_not_panic() {
    let a = app_with(token_cfg(), None);
    for body in [
        "token=%€".as_bytes().to_vec(),
        "token=%é1".as_bytes().to_vec(),
        b"token=%".to_vec(),
        b"token=%zz&token=%ff%fe".to_vec(),
        vec![b't', b'o', b'k', b'e', b'n', b'=', 0xff, 0xfe],
    ] {
        let (st, _, html) = send(&a, login_req(body.clone())).await;
        assert!(
            st == StatusCode::UNAUTHORIZED || st == StatusCode::BAD_REQUEST,
            "{st} for {body:?}"
        );
        assert!(!String::from_utf8_lossy(&html).contains('€'));
    }
    let (st, _, _) = send(&a, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
}

fn cookie_of(h: &axum::http::HeaderMap) -> String {
    h[header::SET_COOKIE].to_str().unwrap().to_string()
}

// 8. Random, expiring, revocable sessions; rate-limited failures; strong tokens only; Bearer
// in any case.
#[tokio::test]
async fn item08_sessions_are_random_expiring_and_revocable() {
    let a = app_with(
        WebConfig {
            cookie_secure: true,
            ..token_cfg()
        },
        None,
    );
    let (st, h, _) = send(&a, login_req(format!("token={TOKEN}"))).await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    let set = cookie_of(&h);
    assert!(!set.contains(TOKEN), "cookie holds the raw token: {set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Secure"] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let id = cookie.strip_prefix("dermcam_session=").unwrap();
    assert_eq!(id.len(), 32);
    let (_, h2, _) = send(&a, login_req(format!("token={TOKEN}"))).await;
    assert_ne!(
        cookie_of(&h2).split(';').next().unwrap(),
        cookie,
        "ids must differ"
    );
    let get = |c: &str| {
        Request::get("/api/v1/status")
            .header(header::COOKIE, c)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&a, get(&cookie)).await.0, StatusCode::OK);
    // The old cookie form (the raw token) is no credential.
    assert_eq!(
        send(&a, get(&format!("dermcam_token={TOKEN}"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Logout revokes the id server-side.
    let (st, h, _) = send(
        &a,
        Request::post("/logout")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::SEE_OTHER);
    assert!(cookie_of(&h).contains("Max-Age=0"));
    assert_eq!(send(&a, get(&cookie)).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn item08_wrong_tokens_are_rate_limited_and_bearer_is_case_insensitive() {
    let a = app_with(token_cfg(), None);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (st, _, _) = send(
            &a,
            Request::get("/api/v1/model")
                .header(header::AUTHORIZATION, format!("{scheme} {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(st, StatusCode::OK, "{scheme}");
    }
    for _ in 0..5 {
        let (st, _, _) = send(&a, login_req("token=wrong-guess-0000000000")).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, h, _) = send(&a, login_req("token=wrong-guess-0000000001")).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key(header::RETRY_AFTER));
    // Locked out means no answer about the token at all, even the right one.
    let (st, _, _) = send(&a, login_req(format!("token={TOKEN}"))).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    let (st, _, _) = send(
        &a,
        Request::get("/api/v1/model")
            .header(header::AUTHORIZATION, "Bearer wrong-guess-0000000002")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn item08_weak_or_unusable_tokens_are_refused_by_config() {
    let p = Path::new("c.toml");
    let cfg = |token: &str| {
        Config::parse(
            &format!("[web]\nbind = \"0.0.0.0:8080\"\ntoken = {token:?}\n"),
            p,
        )
    };
    for bad in [
        "aaaaaaaaaaaaaaaa",
        "a-long-random-secret-of-16+-chars",
        "change-me-change-me",
        "0123456789abcdef",
        "abcdefghijklmnopq",
        "3f9c1e7a0b5d;8e2a6c4f1d9e8b7a2c5",
        "3f9c1e7a0b5d48e2 6c4f1d9e8b7a2c5",
        "3f9c1e7a0b5d48e2ä6c4f1d9e8b7a2c5",
        "short",
    ] {
        let e = cfg(bad).unwrap_err().to_string();
        assert!(e.contains("web.token"), "{bad}: {e}");
    }
    // `openssl rand -hex 16`, `openssl rand -base64 24` style tokens pass.
    cfg(TOKEN).unwrap();
    cfg("q8Zr+M1xV/4kP9sT2wYb7nLc0eH5").unwrap();
}

// 9. Saved uploads: said so on the page, private files, retention, no metadata.
#[tokio::test]
async fn item09_saved_uploads_are_private_stripped_and_retained() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("hardening-uploads");
    let a = app_with(
        WebConfig {
            save_uploads: Some(dir.clone()),
            save_max_files: 2,
            ..Default::default()
        },
        None,
    );
    let (_, _, html) = send(&a, Request::get("/").body(Body::empty()).unwrap()).await;
    let html = String::from_utf8(html).unwrap();
    assert!(
        !html.contains("not stored") && html.contains("stored on this device"),
        "{html}"
    );
    // A JPEG carrying an EXIF segment with a recognisable string (think GPS position).
    let jpg = std::fs::read(&samples()[0]).unwrap();
    let secret = b"GPS-POSITION-SECRET";
    let mut app1 = vec![0xFF, 0xE1];
    let payload: Vec<u8> = b"Exif\0\0".iter().chain(secret.iter()).copied().collect();
    app1.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    app1.extend_from_slice(&payload);
    let tagged: Vec<u8> = jpg[..2]
        .iter()
        .chain(&app1)
        .chain(&jpg[2..])
        .copied()
        .collect();
    for _ in 0..3 {
        let (st, _, body) = send(&a, raw_upload("/api/v1/classify", tagged.clone())).await;
        assert_eq!(st, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    }
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 2, "retention keeps 2: {files:?}");
    for f in files {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o007,
            0,
            "{} is world-accessible ({mode:o})",
            f.display()
        );
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "metadata kept"
        );
        image::load_from_memory(&bytes).unwrap();
    }
}

// 10. Start-up clean-up and retention touch only dermcam's own entries; no symlinked folders.
#[test]
fn item10_cleanup_and_retention_leave_other_files_alone() {
    let d = scratch("hardening-captures");
    let caps = d.join("captures");
    std::fs::create_dir_all(caps.join("capture-notes")).unwrap();
    std::fs::write(caps.join("capture-notes/mine.txt"), b"user data").unwrap();
    std::fs::write(caps.join(".important.tmp"), b"user data").unwrap();
    std::fs::create_dir_all(caps.join(".capture-1-2-3.tmp")).unwrap();
    std::fs::write(caps.join(".capture-1-2-3.tmp/mine.txt"), b"user data").unwrap();
    std::fs::write(caps.join("capture-list.csv"), b"user data").unwrap();
    for n in 1..=2 {
        dermcam::storage::save_set_atomic(
            &caps,
            &format!("capture-170000000000{n}-1-{n}"),
            &[("image.jpg", b"x"), ("result.json", b"{}")],
        )
        .unwrap();
    }
    // Start-up clean-up, then retention (max 1): the older capture goes, nothing else.
    let _sink = dermcam::sinks::capture::CaptureSink::new(caps.clone(), 1);
    dermcam::storage::enforce_retention(&caps, "capture", 1, 0).unwrap();
    for kept in [
        "capture-notes/mine.txt",
        ".important.tmp",
        ".capture-1-2-3.tmp",
        "capture-list.csv",
    ] {
        assert!(caps.join(kept).exists(), "{kept} was removed");
    }
    assert_eq!(
        dermcam::sinks::capture::CaptureSink::captures(&caps)
            .unwrap()
            .len(),
        1
    );
    // A symlinked capture folder is refused, and nothing behind it is cleaned up.
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(elsewhere.join(".capture-1-2-9.tmp")).unwrap();
    std::fs::write(elsewhere.join(".capture-1-2-9.tmp/.dermcam-partial"), b"").unwrap();
    let link = d.join("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    assert!(dermcam::storage::check_dir(&link).is_err());
    let _ = dermcam::sinks::capture::CaptureSink::new(link.clone(), 5);
    assert!(elsewhere.join(".capture-1-2-9.tmp").exists());
}

// 11. check-config refuses what would crash `run`.
#[test]
fn item11_check_config_rejects_values_that_crash_run() {
    let d = scratch("hardening-config");
    for (line, field) in [
        ("max_concurrent = 9223372036854775807", "web.max_concurrent"),
        ("inference_threads = 100000", "web.inference_threads"),
        ("queue = 9223372036854775807", "web.queue"),
        ("max_pixels = 9223372036854775807", "web.max_pixels"),
        ("max_connections = 0", "web.max_connections"),
    ] {
        let f = d.join("c.toml");
        std::fs::write(
            &f,
            format!("[source]\nkind = \"synthetic\"\n[web]\n{line}\n"),
        )
        .unwrap();
        let (code, out) = dermcam_bin(&["check-config", f.to_str().unwrap()]);
        assert_eq!(code, 6, "{line}: {out}");
        assert!(out.contains(field), "{line}: {out}");
    }
    for (section, line, field) in [
        ("model", "threads = 100000", "model.threads"),
        ("capture", "max_files = 0", "capture.max_files"),
        (
            "pipeline",
            "stall_timeout_ms = 9223372036854775807",
            "pipeline.stall_timeout_ms",
        ),
    ] {
        let e = Config::parse(&format!("[{section}]\n{line}\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(field), "{line}: {e}");
    }
}

// 12. Uploads pass the same quality gate as the live pipeline.
#[tokio::test]
async fn item12_black_upload_gets_no_class() {
    let a = app_with(WebConfig::default(), None);
    let black = jpeg_of(&image::RgbImage::new(640, 480));
    let (st, _, body) = send(&a, raw_upload("/api/v1/classify", black.clone())).await;
    assert_eq!(st, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["classified"], false, "{v}");
    assert_eq!(v["outcome"], "retake");
    assert_eq!(v["quality_issue"], "too_dark");
    assert_eq!(v["uncertain"], true);
    assert!(v["classes"].as_array().unwrap().is_empty());
    assert_eq!(v["headline"], "Not classified: More light");
    let (st, _, html) = send(&a, multipart(&black)).await;
    assert_eq!(st, StatusCode::OK);
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains("Retake the photo")
            && html.contains("More light")
            && !html.contains("<progress"),
        "{html}"
    );
    // A real lesion photo is still classified.
    let (st, _, body) = send(
        &a,
        raw_upload("/api/v1/classify", std::fs::read(&samples()[0]).unwrap()),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(json(&body)["classified"], true);
}

// 13. Preview size in 64-bit arithmetic, aspect kept; no silent empty preview.
#[tokio::test]
async fn item13_extreme_aspect_preview_fits_and_keeps_aspect() {
    use dermcam::web::preview_size;
    assert_eq!(preview_size(1, 8_947_849), (1, 480));
    assert_eq!(preview_size(8_947_849, 1), (480, 1));
    assert_eq!(preview_size(640, 480), (480, 360));
    assert_eq!(preview_size(100, 50), (100, 50));
    let tall = image::GrayImage::from_fn(1, 8_947_849, |_, y| image::Luma([(y % 256) as u8]));
    let mut png = Vec::new();
    tall.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    drop(tall);
    let a = app_with(WebConfig::default(), None);
    let (st, _, html) = send(&a, multipart(&png)).await;
    assert_eq!(st, StatusCode::OK);
    let html = String::from_utf8(html).unwrap();
    let b64 = html
        .split("data:image/jpeg;base64,")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("preview present");
    use base64::Engine;
    let jpg = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let thumb = image::load_from_memory(&jpg).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (1, 480));
}

/// Field reliability III #7, #12, tried as a client on the clinic network: two `Host` headers
/// (a proxy and the device may each read another one) get 400 over a real socket, in either
/// order; an upload whose JPEG entropy data was wiped is refused (422), not diagnosed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_host_and_wiped_jpeg_uploads_are_refused() {
    use tokio::io::AsyncWriteExt;
    let a = app_with(WebConfig::default(), None);
    let addr = serve(a.clone(), WebConfig::default()).await;
    for hosts in [
        ["127.0.0.1", "rebind.attacker.example"],
        ["rebind.attacker.example", "127.0.0.1"],
        ["127.0.0.1", "127.0.0.1"],
    ] {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /api/v1/status HTTP/1.1\r\nHost: {}\r\nHost: {}\r\nConnection: close\r\n\r\n",
            hosts[0], hosts[1]
        );
        c.write_all(req.as_bytes()).await.unwrap();
        let line = status_line(&mut c, Duration::from_secs(5)).await;
        assert!(line.contains(" 400 "), "{hosts:?}: {line}");
    }
    let mut good = std::fs::read(&samples()[0]).unwrap();
    let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let start = sos + 2 + u16::from_be_bytes([good[sos + 2], good[sos + 3]]) as usize;
    let end = good.len() - 2; // EOI kept
    good[start..end].fill(0);
    let (st, _, body) = send(&a, raw_upload("/api/v1/classify", good)).await;
    assert_eq!(
        st,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&body)
    );
}

// Model v3: one outcome word on every surface, the same gates in `classify` as on the camera.

fn not_lesion_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures/not-lesion"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    assert!(v.len() >= 2);
    v
}

#[test]
fn classify_applies_the_camera_gates_and_no_gates_bypasses_them() {
    let tmp = scratch("cli-gates");
    let sample = samples()[0].clone();
    let img = load_image(&sample, DEFAULT_MAX_PIXELS).unwrap();
    // Too dark: a tenth of the light.
    let dark = image::RgbImage::from_fn(img.width(), img.height(), |x, y| {
        image::Rgb(img.get_pixel(x, y).0.map(|c| c / 10))
    });
    // A one-direction (motion) blur, 8 % of the width: the Laplacian alone lets it through.
    let n = (img.width() / 12).max(3);
    let moved = image::RgbImage::from_fn(img.width(), img.height(), |x, y| {
        let mut acc = [0u32; 3];
        for d in 0..n {
            let p = img.get_pixel((x + d).min(img.width() - 1), y);
            for c in 0..3 {
                acc[c] += p[c] as u32;
            }
        }
        image::Rgb(acc.map(|a| (a / n) as u8))
    });
    let (dark_p, moved_p) = (tmp.join("dark.png"), tmp.join("moved.png"));
    dark.save(&dark_p).unwrap();
    moved.save(&moved_p).unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec!["classify", "--json"];
        a.extend_from_slice(extra);
        a.extend([
            sample.to_str().unwrap(),
            dark_p.to_str().unwrap(),
            moved_p.to_str().unwrap(),
        ]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let (code, out) = dermcam_bin(&refs);
        assert_eq!(code, 0, "{out}");
        out.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let gated = run(args(&[]));
    assert_eq!(gated.len(), 3);
    assert!(
        ["class", "uncertain"].contains(&gated[0]["outcome"].as_str().unwrap()),
        "{}",
        gated[0]
    );
    assert_eq!(gated[1]["outcome"], "retake", "{}", gated[1]);
    assert_eq!(gated[1]["quality_issue"], "too_dark");
    assert_eq!(gated[2]["outcome"], "retake", "{}", gated[2]);
    assert_eq!(gated[2]["quality_issue"], "blurred");
    for r in &gated[1..] {
        assert_eq!(r["refer"], false);
        assert!(
            r.get("top").is_none(),
            "a held-back image has no classes: {r}"
        );
    }
    let ungated = run(args(&["--no-gates"]));
    for r in &ungated {
        assert!(r["top"].as_array().is_some_and(|t| !t.is_empty()), "{r}");
        assert_ne!(r["outcome"], "retake");
        assert_ne!(r["outcome"], "not_lesion");
    }
}

#[test]
fn photos_that_are_not_lesions_get_not_lesion_and_never_refer() {
    let mut a = vec!["classify".to_string(), "--json".into()];
    let fixtures = not_lesion_fixtures();
    a.extend(fixtures.iter().map(|p| p.display().to_string()));
    a.extend(samples().iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    let (code, out) = dermcam_bin(&refs);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), fixtures.len() + samples().len());
    // Held back either way: by the score, or (sweets on a white table) by the quality gate's
    // blown-out share first. Never a class, never a referral.
    let mut not_lesion = 0;
    for r in &rows[..fixtures.len()] {
        match r["outcome"].as_str().unwrap() {
            "not_lesion" => {
                not_lesion += 1;
                assert_eq!(r["headline"], "Not a skin lesion");
            }
            "retake" => assert!(r.get("top").is_none(), "{r}"),
            _ => panic!("a non-lesion photo shown as a result: {r}"),
        }
        assert_eq!(r["refer"], false, "{r}");
    }
    assert!(not_lesion >= 2, "{rows:?}");
    // Every bundled lesion photo passes the gate.
    for r in &rows[fixtures.len()..] {
        assert!(
            ["class", "uncertain"].contains(&r["outcome"].as_str().unwrap()),
            "{r}"
        );
        assert!(r["ood_score"].as_f64().is_some(), "{r}");
    }
}

#[tokio::test]
async fn uploads_say_the_outcome_and_show_where_the_model_looked() {
    let a = app_with(WebConfig::default(), None);
    let photo = std::fs::read(&not_lesion_fixtures()[0]).unwrap();
    let (st, _, body) = send(&a, raw_upload("/api/v1/classify", photo.clone())).await;
    assert_eq!(st, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["outcome"], "not_lesion", "{v}");
    assert_eq!(v["classified"], false);
    assert_eq!(v["refer"], false);
    assert!(v["classes"].as_array().unwrap().is_empty());
    assert!(v.get("heat_png").is_none());
    let (_, _, html) = send(&a, multipart(&photo)).await;
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains("data-outcome=\"not_lesion\"")
            && html.contains("Not a skin lesion")
            && !html.contains("<progress")
            && !html.contains("REFER"),
        "{html}"
    );
    // A lesion: a class or uncertain, classes listed, the heat map as a PNG.
    let lesion = std::fs::read(&samples()[0]).unwrap();
    let (_, _, body) = send(&a, raw_upload("/api/v1/classify", lesion.clone())).await;
    let v = json(&body);
    assert!(
        ["class", "uncertain"].contains(&v["outcome"].as_str().unwrap()),
        "{v}"
    );
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        v["heat_png"].as_str().expect("heat map for a lesion"),
    )
    .unwrap();
    let heat = image::load_from_memory(&png).unwrap();
    assert_eq!((heat.width(), heat.height()), (224, 224));
    let (_, _, html) = send(&a, multipart(&lesion)).await;
    assert!(String::from_utf8(html).unwrap().contains("id=\"heatmap\""));
    // Retake: which issue, no class.
    let black = jpeg_of(&image::RgbImage::new(640, 480));
    let (_, _, body) = send(&a, raw_upload("/api/v1/classify", black)).await;
    let v = json(&body);
    assert_eq!(
        (v["outcome"].as_str(), v["quality_issue"].as_str()),
        (Some("retake"), Some("too_dark"))
    );
}

/// Reliability IV, row 4: clients that request and never read the response (their receive
/// window full) lose their connections after `write_timeout_ms`, so a client from another
/// address is answered although they held every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_lose_their_connections() {
    let cfg = WebConfig {
        max_connections: 64,
        header_timeout_ms: 60_000,
        write_timeout_ms: 1_000,
        ..Default::default()
    };
    assert_eq!(dermcam::web::per_client_limit(64), 8);
    let addr = serve(app_with(cfg.clone(), None), cfg).await;
    let mut request = Vec::new();
    // More response bytes than the loopback send buffer holds, so the server's writes block.
    for _ in 0..6000 {
        request.extend_from_slice(b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    }
    // Eight addresses x eight connections: every slot, each pipelining requests it never reads.
    let mut hogs = Vec::new();
    for a in 2..10u8 {
        for _ in 0..8 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            sock.bind(std::net::SocketAddr::from(([127, 0, 0, a], 0)))
                .unwrap();
            let c = sock.connect(addr).await.unwrap();
            let req = request.clone();
            // Written in the background: the server stops reading once its writes block.
            let (r, mut w) = c.into_split();
            tokio::spawn(async move {
                let _ = w.write_all(&req).await;
                std::future::pending::<()>().await;
                drop(w);
            });
            hogs.push(r);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(std::net::SocketAddr::from(([127, 0, 0, 20], 0)))
        .unwrap();
    let mut probe = sock.connect(addr).await.unwrap();
    let t0 = Instant::now();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let st = status_line(&mut probe, Duration::from_secs(5)).await;
    assert!(st.contains("200"), "healthz not answered: {st:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    drop(hogs);
}
