//! systemd `Type=notify` protocol, seen from a fake service manager: a datagram socket passed as
//! NOTIFY_SOCKET, with WATCHDOG_USEC set, while `dermcam run` classifies real sample images.

use crate::{Killed, samples, scratch};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Messages received until `until` returns true or `timeout` passes, with arrival times.
fn collect(
    sock: &UnixDatagram,
    timeout: Duration,
    mut until: impl FnMut(&[(Duration, String)]) -> bool,
) -> Vec<(Duration, String)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while start.elapsed() < timeout && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                got.push((start.elapsed(), line.to_string()));
            }
        }
    }
    got
}

#[test]
fn notify_ready_after_first_frame_then_watchdog_only_while_progressing() {
    let dir = scratch("notify");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for s in samples() {
        std::fs::copy(&s, images.join(s.file_name().unwrap())).unwrap();
    }
    // A "camera" that hangs after the real images, like a V4L2 read that never returns (image
    // files are read as regular files only, so a FIFO no longer blocks the slideshow).
    let n_images = samples().len().to_string();
    let config = crate::run_config(
        &dir,
        &images,
        300,
        false,
        &format!(
            "kind = \"png\"\npath = \"{}\"\nwidth = 240\nheight = 240",
            dir.join("screen.png").display()
        ),
        "[pipeline]\nstall_timeout_ms = 1500",
    );
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("DERMCAM_TEST_HANG", format!("capture:{n_images}"))
        .env("DERMCAM_MODEL", crate::default_bundle())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _child = Killed(child);

    let msgs = collect(&sock, Duration::from_secs(60), |m| {
        m.iter().any(|(_, s)| s.starts_with("STATUS=stalled"))
    });
    let texts: Vec<&str> = msgs.iter().map(|(_, s)| s.as_str()).collect();
    let ready = texts
        .iter()
        .position(|s| *s == "READY=1")
        .unwrap_or_else(|| panic!("no READY=1 in {texts:?}"));
    // Nothing is reported ready before the model is loaded and a frame is on screen.
    assert!(
        !texts[..ready].contains(&"WATCHDOG=1"),
        "watchdog ping before READY: {texts:?}"
    );
    assert!(
        dir.join("screen.png").is_file(),
        "READY before the first screen"
    );
    let stalled = texts
        .iter()
        .position(|s| s.starts_with("STATUS=stalled"))
        .unwrap_or_else(|| panic!("capture hang never reported: {texts:?}"));
    assert!(
        texts[stalled].contains("capture"),
        "wrong stage blamed: {}",
        texts[stalled]
    );
    let pings = texts[ready..stalled]
        .iter()
        .filter(|s| **s == "WATCHDOG=1")
        .count();
    // ~2 s of frames at a 200 ms ping interval.
    assert!(pings >= 3, "only {pings} pings while healthy: {texts:?}");

    // Once stalled, the pings stay off (systemd would now kill and restart the service).
    let after = collect(&sock, Duration::from_secs(2), |_| false);
    assert!(
        !after.iter().any(|(_, s)| s == "WATCHDOG=1"),
        "pinged while hung: {after:?}"
    );
}

#[test]
fn a_hung_inference_stops_the_watchdog_pings_and_is_blamed() {
    // The knob the emulated board's watchdog check uses: the third classification never returns.
    let dir = scratch("notify-infer");
    let config = crate::run_config(
        &dir,
        &samples()[0],
        100,
        true,
        &format!(
            "kind = \"png\"\npath = \"{}\"\nwidth = 240\nheight = 240",
            dir.join("screen.png").display()
        ),
        "[pipeline]\nstall_timeout_ms = 1500",
    );
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("DERMCAM_TEST_HANG", "infer:2")
        .env("DERMCAM_MODEL", crate::default_bundle())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _child = Killed(child);
    let msgs = collect(&sock, Duration::from_secs(60), |m| {
        m.iter().any(|(_, s)| s.starts_with("STATUS=stalled"))
    });
    let texts: Vec<&str> = msgs.iter().map(|(_, s)| s.as_str()).collect();
    let stalled = texts
        .iter()
        .find(|s| s.starts_with("STATUS=stalled"))
        .unwrap_or_else(|| panic!("inference hang never reported: {texts:?}"));
    assert!(
        stalled.contains("inference"),
        "wrong stage blamed: {stalled}"
    );
    let after = collect(&sock, Duration::from_secs(2), |_| false);
    assert!(
        !after.iter().any(|(_, s)| s == "WATCHDOG=1"),
        "pinged while hung: {after:?}"
    );
}
