//! ONNX Runtime backend (feature `ort`) against a real `libonnxruntime.so` (CPU provider), e.g.
//! the one inside the PyPI `onnxruntime` wheel: `ORT_DYLIB_PATH=…/libonnxruntime.so.1.20.1
//! cargo test --release --features ort --test it ort::`. `.ci/run` does this.

use crate::{bundle_dir, samples};
use dermcam::model::preprocess::load_image;
use dermcam::model::{BackendKind, LoadOptions, Model, OrtOptions};
use std::process::Command;

/// The ONNX Runtime library these tests need, or `None` (the test then skips with a message):
/// plain `cargo test` stays hermetic. `DERMCAM_REQUIRE_ORT=1` (CI) turns a skip into a failure.
pub fn library() -> Option<String> {
    match std::env::var("ORT_DYLIB_PATH") {
        Ok(l) if !l.is_empty() => Some(l),
        _ => {
            assert!(
                std::env::var("DERMCAM_REQUIRE_ORT").is_err(),
                "DERMCAM_REQUIRE_ORT is set but ORT_DYLIB_PATH does not name libonnxruntime.so"
            );
            eprintln!(
                "skipped: set ORT_DYLIB_PATH to a libonnxruntime.so (e.g. from the PyPI onnxruntime wheel) to run the ONNX Runtime tests"
            );
            None
        }
    }
}

#[test]
fn ort_cpu_matches_tract_on_samples_fp32() {
    let Some(lib) = library() else { return };
    let dir = bundle_dir("effl0-v2");
    let tract = Model::load(
        &dir,
        &LoadOptions {
            backend: BackendKind::Tract,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let ort = Model::load(
        &dir,
        &LoadOptions {
            backend: BackendKind::Ort,
            threads: 2,
            ort: OrtOptions {
                library: Some(lib.into()),
                ..OrtOptions::default()
            },
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut worst = 0f32;
    for s in samples() {
        let img = load_image(&s, 50_000_000).unwrap();
        let (a, _) = tract.classify(&img, false).unwrap();
        let (b, _) = ort.classify(&img, false).unwrap();
        assert_eq!(a.top1().0, b.top1().0, "{}: top-1 differs", s.display());
        for (x, y) in a.probabilities.iter().zip(&b.probabilities) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("ort vs tract fp32: max |dp| {worst:.2e}");
    assert!(worst <= 1e-3, "probabilities differ by {worst}");
}

fn classify_with(lib: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(["classify", "--backend", "ort"])
        .args(args)
        .arg(&samples()[0])
        .env("ORT_DYLIB_PATH", lib)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_gpu_provider_is_an_error_not_a_cpu_fallback() {
    // The PyPI wheel has only the CPU provider: asking for TensorRT (then CUDA, then CPU) must
    // fail at start-up and say which provider, instead of quietly running on the CPU.
    let Some(lib) = library() else { return };
    let (code, err) = classify_with(&lib, &["--ort-providers", "tensorrt,cuda,cpu"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.to_lowercase().contains("tensorrt"), "{err}");
    assert!(err.contains("cannot register"), "{err}");
    let (code, err) = classify_with(&lib, &["--ort-providers", "cuda"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.to_lowercase().contains("cuda"), "{err}");
}

#[test]
fn wrong_library_path_is_named() {
    // Explicit `ort` never falls back: the missing library is an error naming the path.
    let (code, err) = classify_with("", &["--ort-library", "/nonexistent/libonnxruntime.so"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(err.contains("cannot load ONNX Runtime"), "{err}");
}

#[test]
fn auto_uses_onnx_runtime_when_it_loads_and_gives_the_same_answers() {
    let Some(lib) = library() else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(["classify", "--json", "--top-k", "9", "--model"])
        .arg(bundle_dir("effl0-v2"))
        .args(samples())
        .env("ORT_DYLIB_PATH", &lib)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("engine: ort ("), "{err}");
    assert!(err.contains("auto: ONNX Runtime loaded"), "{err}");
    let tract = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args([
            "classify",
            "--json",
            "--top-k",
            "9",
            "--backend",
            "tract",
            "--model",
        ])
        .arg(bundle_dir("effl0-v2"))
        .args(samples())
        .output()
        .unwrap();
    assert!(tract.status.success());
    let top = |o: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(o)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["top"][0]["name"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(top(&out.stdout), top(&tract.stdout));
}

#[test]
fn bench_compares_engines_with_a_ratio_column() {
    let Some(lib) = library() else { return };
    let out = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args([
            "bench",
            "--backend",
            "tract,ort",
            "--threads",
            "1",
            "--iterations",
            "3",
        ])
        .args(["--json", "--model"])
        .arg(bundle_dir("resnet18-v2"))
        .env("ORT_DYLIB_PATH", &lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["backend"], "tract");
    assert_eq!(rows[1]["backend"], "ort");
    let ratios: Vec<f64> = rows
        .iter()
        .map(|r| r["ratio_to_best"].as_f64().unwrap())
        .collect();
    assert!(
        ratios.iter().all(|&r| r >= 1.0) && ratios.contains(&1.0),
        "{ratios:?}"
    );
}
