//! Field reliability III: decoder limits, corrupt images, special files, symlink loops (no
//! broker needed here; the fleet lifecycle cases are in `fleet.rs`).

use crate::*;
use dermcam::model::preprocess::{
    DEFAULT_MAX_PIXELS, ImageError, MAX_JPEG_SCANS, decode_image, jpeg_layout, load_image,
};
use std::process::Command;
use std::time::{Duration, Instant};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures").join(name)).unwrap()
}

/// The byte range of the first scan's entropy-coded data (after its SOS header, up to the
/// next marker).
fn first_scan_data(b: &[u8]) -> std::ops::Range<usize> {
    let sos = b.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let start = sos + 2 + u16::from_be_bytes([b[sos + 2], b[sos + 3]]) as usize;
    let mut i = start;
    while !(b[i] == 0xFF && !matches!(b[i + 1], 0x00 | 0xD0..=0xD7)) {
        i += 1;
    }
    start..i
}

/// Entropy data replaced by noise or by zeros (markers kept): refused as corrupt, never
/// classified as a confident "tinea".
#[test]
fn corrupt_entropy_data_is_refused() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for s in samples() {
        let good = std::fs::read(&s).unwrap();
        decode_image(&good, "good", u64::MAX).unwrap();
        let r = first_scan_data(&good);
        for kind in ["random", "zeros"] {
            let mut b = good.clone();
            for x in &mut b[r.clone()] {
                *x = if kind == "zeros" {
                    0
                } else {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Keep FF stuffed so only the data, not the structure, is damaged.
                    match (seed >> 24) as u8 {
                        0xFF => 0xFE,
                        v => v,
                    }
                };
            }
            match decode_image(&b, "corrupt", u64::MAX) {
                Err(ImageError::Decode { .. }) => {}
                Err(e) => panic!("{}: {kind} entropy data gave {e}", s.display()),
                Ok(_) => panic!("{}: {kind} entropy data decoded", s.display()),
            }
        }
    }
    // The CLI says so too, per file, with exit status 4.
    let tmp = scratch("rel-corrupt");
    let good = std::fs::read(&samples()[0]).unwrap();
    let mut b = good.clone();
    let r = first_scan_data(&good);
    b[r].fill(0);
    let f = tmp.join("zeros.jpg");
    std::fs::write(&f, &b).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(["classify", "--json"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("corrupt"), "{v}");
}

/// The decode budget counts what the decoder holds: a progressive (and a CMYK) JPEG keeps
/// every coefficient (2 bytes x components x pixels), a baseline one does not.
#[test]
fn progressive_and_cmyk_jpegs_are_budgeted_by_their_real_buffers() {
    let base = fixture("baseline-rgb.jpg");
    let prog = fixture("progressive-rgb.jpg");
    let cmyk = fixture("progressive-cmyk.jpg");
    let l = jpeg_layout(&prog).unwrap();
    assert!(l.progressive && l.components == 3 && l.scans > 1, "{l:?}");
    let lc = jpeg_layout(&cmyk).unwrap();
    assert!(lc.progressive && lc.components == 4, "{lc:?}");
    assert_eq!(jpeg_layout(&base).unwrap().scans, 1);
    let pixels = (l.width * l.height) as u64;
    // Everything decodes under the default limits, progressive and CMYK included ...
    for b in [&base, &prog, &cmyk] {
        let img = decode_image(b, "fixture", 40_000_000).unwrap();
        assert_eq!((img.width(), img.height()), (l.width, l.height));
    }
    // ... but at a budget that fits a baseline decode exactly, the others are refused first.
    decode_image(&base, "baseline", pixels).unwrap();
    for (name, b) in [("progressive", &prog), ("cmyk", &cmyk)] {
        match decode_image(b, name, pixels) {
            Err(ImageError::OverBudget { kind, need_mb, .. }) => {
                assert!(kind.contains("progressive"), "{kind}");
                assert!(
                    need_mb as u64 * (1 << 20) > 4 * pixels,
                    "{name}: {need_mb} MB"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// A file with more scans than any encoder writes is refused before decoding (each scan is a
/// pass over the whole image).
#[test]
fn jpegs_with_too_many_scans_are_refused_at_once() {
    let prog = fixture("progressive-rgb.jpg");
    // Repeat the last scan (its SOS header and data) until the file has too many.
    let last_sos = prog.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
    let eoi = prog.len() - 2;
    let scan = prog[last_sos..eoi].to_vec();
    let mut b = prog[..eoi].to_vec();
    for _ in 0..MAX_JPEG_SCANS {
        b.extend_from_slice(&scan);
    }
    b.extend_from_slice(&[0xFF, 0xD9]);
    let t = Instant::now();
    let e = decode_image(&b, "many-scans", 40_000_000).unwrap_err();
    assert!(e.to_string().contains("scans"), "{e}");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

/// `classify` reads regular files only (a FIFO or /dev/zero would block or fill memory) and
/// never follows links to folders inside a folder (two links to `.` never ended).
#[test]
fn classify_refuses_special_files_and_does_not_loop_on_links() {
    let tmp = scratch("rel-special");
    let fifo = tmp.join("fifo.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path of our own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let dir = tmp.join("photos");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&samples()[0], dir.join("a.jpg")).unwrap();
    std::os::unix::fs::symlink(".", dir.join("loop1")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("loop2")).unwrap();
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(["classify", "--json", "/dev/zero"])
        .arg(&fifo)
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let done = wait_until(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    if !done {
        let _ = child.kill();
        panic!("classify hung on a FIFO, /dev/zero or a link loop");
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file")
    );
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file")
    );
    assert!(lines[2]["top"].is_array(), "{}", lines[2]);
    assert!(t.elapsed() < Duration::from_secs(60));
}

/// Every way the probes vary a photo: itself, inverted, grey, two half-size crops, a quarter
/// turn, a mirror image.
fn everyday_variants(img: &image::RgbImage) -> Vec<(&'static str, image::RgbImage)> {
    use image::imageops;
    let (w, h) = img.dimensions();
    let mut inv = img.clone();
    imageops::invert(&mut inv);
    let grey = image::DynamicImage::ImageLuma8(imageops::grayscale(img)).into_rgb8();
    vec![
        ("as is", img.clone()),
        ("inverted", inv),
        ("grey", grey),
        (
            "crop top-left",
            imageops::crop_imm(img, 0, 0, w / 2, h / 2).to_image(),
        ),
        (
            "crop bottom-right",
            imageops::crop_imm(img, w / 2, h / 2, w / 2, h / 2).to_image(),
        ),
        ("quarter turn", imageops::rotate90(img)),
        ("mirror", imageops::flip_horizontal(img)),
    ]
}

/// What every surface shows for `img`: the quality gate, then the model with its gate.
fn gated(
    m: &dermcam::model::Model,
    img: &image::RgbImage,
) -> (dermcam::model::classifier::Outcome, bool) {
    use dermcam::pipeline::quality;
    let q = quality::measure(img);
    if quality::check(&q, &dermcam::config::PipelineConfig::default()).is_some() {
        return (dermcam::model::classifier::Outcome::Retake, false);
    }
    let (p, _) = m.classify(img, false).unwrap();
    (p.outcome(), p.refer)
}

/// Reliability IV, row 2: everyday photos (animals on grass, people, plants, a building,
/// text) and every variant of them, and inverted lesions, are never shown as a class and never
/// referred; the real lesion samples still are classified.
#[test]
fn everyday_photos_and_their_variants_are_not_lesions() {
    use dermcam::model::classifier::Outcome;
    let m = default_model();
    let fixtures: Vec<_> = std::fs::read_dir(root().join("tests/fixtures/not-lesion"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    assert!(fixtures.len() >= 6);
    let mut shown = Vec::new();
    for f in &fixtures {
        let img = load_image(f, DEFAULT_MAX_PIXELS).unwrap();
        for (kind, v) in everyday_variants(&img) {
            let (o, refer) = gated(&m, &v);
            if !matches!(o, Outcome::NotLesion | Outcome::Retake) || refer {
                shown.push(format!("{} ({kind}): {o:?} refer {refer}", f.display()));
            }
        }
    }
    for s in samples() {
        let mut img = load_image(&s, DEFAULT_MAX_PIXELS).unwrap();
        let (o, _) = gated(&m, &img);
        assert!(
            matches!(o, Outcome::Class | Outcome::Uncertain),
            "{}: {o:?}",
            s.display()
        );
        image::imageops::invert(&mut img);
        let (o, refer) = gated(&m, &img);
        if !matches!(o, Outcome::NotLesion | Outcome::Retake) || refer {
            shown.push(format!(
                "{} (inverted lesion): {o:?} refer {refer}",
                s.display()
            ));
        }
    }
    assert!(shown.is_empty(), "shown as a result:\n{}", shown.join("\n"));
}

/// Row 2: a fully transparent PNG is blank white (retake), not the lesion its invisible
/// pixels hold; an animated PNG is refused with a reason, through the CLI as on every surface.
#[test]
fn transparent_and_animated_pngs_are_handled_deliberately() {
    let tmp = scratch("alpha-apng");
    let lesion = load_image(&samples()[0], DEFAULT_MAX_PIXELS).unwrap();
    let hidden = image::RgbaImage::from_fn(lesion.width(), lesion.height(), |x, y| {
        let p = lesion.get_pixel(x, y).0;
        image::Rgba([p[0], p[1], p[2], 0])
    });
    let clear = tmp.join("clear.png");
    hidden.save(&clear).unwrap();
    let apng = tmp.join("anim.png");
    {
        let f = std::fs::File::create(&apng).unwrap();
        let mut enc = png::Encoder::new(f, lesion.width(), lesion.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_animated(2, 0).unwrap();
        let mut w = enc.write_header().unwrap();
        w.write_image_data(lesion.as_raw()).unwrap();
        w.write_image_data(lesion.as_raw()).unwrap();
        w.finish().unwrap();
    }
    let (code, out) = dermcam_bin(&["classify", "--json", clear.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let r: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(r["outcome"], "retake", "{r}");
    assert_eq!(r["refer"], false, "{r}");
    let (code, out) = dermcam_bin(&["classify", "--json", apng.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("animated PNG (2 frames)"), "{out}");
}

/// Reliability IV, row 9: `bundle sign` refuses release numbers that would leave no newer
/// release (u64::MAX) and expiries it would have clamped.
#[test]
fn sign_refuses_unbounded_versions_and_expiries() {
    let tmp = scratch("sign-bounds");
    let key = tmp.join("key");
    let (private, _) = dermcam::model::signing::keygen().unwrap();
    std::fs::write(&key, private).unwrap();
    let archive = tmp.join("a.tar");
    std::fs::write(&archive, b"not checked before the bounds").unwrap();
    let sign = |version: &str, days: &str| {
        dermcam_bin(&[
            "bundle",
            "sign",
            archive.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--url",
            "http://h/a.tar",
            "--name",
            "effl0-v2",
            "--version",
            version,
            "--expires-days",
            days,
        ])
    };
    let (code, out) = sign("18446744073709551615", "90");
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("--version 18446744073709551615: 1 to 4294967295"),
        "{out}"
    );
    let (code, out) = sign("3", "40000");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--expires-days 40000: 1 to 3650"), "{out}");
    let (code, out) = sign("3", "90");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"version\":3") || out.contains("\"version\": 3"),
        "{out}"
    );
}
