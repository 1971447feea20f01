//! ONNX Runtime backend (feature `ort`) against a real `libonnxruntime.so` (CPU provider), e.g.
//! the one inside the PyPI `onnxruntime` wheel: `ORT_DYLIB_PATH=…/libonnxruntime.so.1.20.1
//! cargo test --release --features ort --test it ort::`. `.ci/run` does this.

use crate::{bundle_dir, samples};
use dermcam::model::{BackendKind, LoadOptions, Model, OrtOptions};
use dermcam::preprocess::load_image;
use std::process::Command;

fn library() -> String {
    std::env::var("ORT_DYLIB_PATH").expect(
        "ORT_DYLIB_PATH must name libonnxruntime.so (e.g. from the PyPI onnxruntime wheel) for the ort tests",
    )
}

#[test]
fn ort_cpu_matches_tract_on_samples_fp32() {
    let dir = bundle_dir("effl0-skin9");
    let tract = Model::load(&dir, &LoadOptions::default()).unwrap();
    let ort = Model::load(
        &dir,
        &LoadOptions {
            backend: BackendKind::Ort,
            threads: 2,
            ort: OrtOptions {
                library: Some(library().into()),
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

fn classify_with(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(["classify", "--backend", "ort"])
        .args(args)
        .arg(&samples()[0])
        .env("ORT_DYLIB_PATH", library())
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
    let (code, err) = classify_with(&["--ort-providers", "tensorrt,cuda,cpu"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("Tensorrt"), "{err}");
    assert!(err.contains("cannot register"), "{err}");
    let (code, err) = classify_with(&["--ort-providers", "cuda"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("Cuda"), "{err}");
}

#[test]
fn wrong_library_path_is_named() {
    let (code, err) = classify_with(&["--ort-library", "/nonexistent/libonnxruntime.so"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(err.contains("cannot load ONNX Runtime"), "{err}");
}
