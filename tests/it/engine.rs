//! Engine selection (`--backend auto`, the default) without any ONNX Runtime installed: the
//! fallback to tract is logged with its reason, a library that is absent or not ONNX Runtime
//! never crashes `auto`, and an explicit `--backend ort` turns the same problem into an error.
//! Also the int8 QDQ rewrite for tract. Hermetic: no ONNX Runtime library is needed.

use crate::{bundle_dir, samples, scratch};
use std::path::Path;
use std::process::{Command, Output};

fn classify(args: &[&str], ort_dir: &Path, dylib: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dermcam"));
    c.arg("classify")
        .args(args)
        .arg("--model")
        .arg(bundle_dir("resnet18-v2"))
        .arg(&samples()[0])
        .env("DERMCAM_ORT_DIR", ort_dir)
        .env_remove("ORT_DYLIB_PATH");
    if let Some(d) = dylib {
        c.env("ORT_DYLIB_PATH", d);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn auto_without_onnx_runtime_runs_tract_and_says_why() {
    let empty = scratch("engine-empty");
    let o = classify(&[], &empty, None);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("engine: tract: auto: no ONNX Runtime library"),
        "{err}"
    );
    assert!(err.contains(&empty.display().to_string()), "{err}");
}

#[test]
fn auto_with_a_library_that_is_not_onnx_runtime_falls_back_to_tract() {
    // A packaged "library" that is not a shared object at all.
    let dir = scratch("engine-garbage");
    std::fs::write(dir.join("libonnxruntime.so.1.99.0"), b"not an ELF file").unwrap();
    let o = classify(&[], &dir, None);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("engine: tract: auto: ONNX Runtime from"),
        "{err}"
    );
    assert!(err.contains("libonnxruntime.so.1.99.0"), "{err}");
    assert!(err.contains("falling back to tract"), "{err}");
    // A real shared object without ONNX Runtime's API (the C maths library).
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    if let Some(libm) = libm {
        let o = classify(&[], &dir, Some(libm));
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("falling back to tract"), "{err}");
        assert!(err.contains("OrtGetApiBase"), "{err}");
    }
}

#[test]
fn explicit_ort_with_a_bad_library_is_an_error_not_a_fallback() {
    let dir = scratch("engine-explicit");
    let bad = dir.join("libonnxruntime.so");
    std::fs::write(&bad, b"not an ELF file").unwrap();
    let o = classify(&["--backend", "ort"], &dir, None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot load ONNX Runtime"), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    // Explicit tract ignores any library.
    let o = classify(&["--backend", "tract"], &dir, None);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("engine: tract: requested"), "{err}");
}

#[test]
fn packaged_library_lookup_prefers_plain_name_then_newest_version() {
    let dir = scratch("engine-lookup");
    let auto_line = || {
        let o = Command::new(env!("CARGO_BIN_EXE_dermcam"))
            .arg("check-config")
            .env("DERMCAM_ORT_DIR", &dir)
            .env_remove("ORT_DYLIB_PATH")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .find(|l| l.contains("model.backend = \"auto\""))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    assert!(auto_line().contains("no ONNX Runtime library"));
    for v in ["1.9.0", "1.31.1", "1.20.1"] {
        std::fs::write(dir.join(format!("libonnxruntime.so.{v}")), b"x").unwrap();
    }
    assert!(
        auto_line().contains("libonnxruntime.so.1.31.1 if it loads"),
        "{}",
        auto_line()
    );
    std::fs::write(dir.join("libonnxruntime.so"), b"x").unwrap();
    assert!(
        auto_line().contains("libonnxruntime.so if it loads"),
        "{}",
        auto_line()
    );
}

#[test]
fn int8_bundle_runs_as_float_with_int8_weights_under_tract() {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dermcam"));
    let o = c
        .args(["classify", "--backend", "tract", "--model"])
        .arg(bundle_dir("resnet18-v2-int8"))
        .arg(&samples()[0])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("weight dequantisations folded at load"),
        "{err}"
    );
    assert!(
        err.contains("activation Q/DQ pairs replaced by clamps"),
        "{err}"
    );
}

#[test]
fn a_library_that_crashes_while_loading_is_probed_in_a_child_process() {
    // A shared object whose initialiser segfaults (as ONNX Runtime 1.31 does under qemu-user):
    // `auto` must log it and run tract, `ort` must fail with the reason, neither may crash.
    let dir = scratch("engine-crash");
    let src = dir.join("boom.c");
    std::fs::write(
        &src,
        "__attribute__((constructor)) static void boom(void) { *(volatile int *)0 = 0; }\n",
    )
    .unwrap();
    let lib = dir.join("libonnxruntime.so.1.99.9");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no C compiler (cc) to build the crashing library");
        return;
    }
    let o = classify(&[], &dir, None);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("crashed while loading (signal 11)"), "{err}");
    assert!(err.contains("falling back to tract"), "{err}");
    let o = classify(&["--backend", "ort"], &dir, None);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("crashed while loading"), "{err}");
}
