//! Bundle loading, validation errors, preprocessing parity with the Python toolchain, and
//! int8/fp32 agreement on the sample images.

use crate::*;
use dermcam::model::preprocess::{DEFAULT_MAX_PIXELS, load_image, normalize, preprocess};
use dermcam::model::{LoadOptions, Model, find_bundles};

fn load_err(dir: &Path) -> String {
    match Model::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("model.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn shipped_bundles_load_and_default_exists() {
    let bundles = find_bundles(&root().join("models"));
    assert!(
        bundles.len() >= 4,
        "expected fp32 + int8 bundles for two architectures, found {bundles:?}"
    );
    for b in &bundles {
        let m = Model::load(
            b,
            &LoadOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.manifest.classes.len(), 9);
        assert!(m.manifest.temperature > 0.0);
        assert!(
            m.manifest.metric("/val/balanced_accuracy").is_some(),
            "{} has no val metrics",
            b.display()
        );
    }
    assert!(
        bundles.contains(&default_bundle()),
        "default bundle {} not shipped",
        default_bundle().display()
    );
}

#[test]
fn bad_bundles_fail_with_file_and_field() {
    let tmp = scratch("bad-bundles");
    let name = dermcam::DEFAULT_BUNDLE;

    let d = copy_bundle(name, &tmp.join("sha"));
    edit_manifest(&d, |v| v["sha256"] = "ab".repeat(32).into());
    let e = load_err(&d);
    assert!(
        e.contains("model.onnx") && e.contains("sha256 mismatch"),
        "{e}"
    );

    let d = copy_bundle(name, &tmp.join("missing"));
    std::fs::remove_file(d.join("model.onnx")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("model.onnx: file is missing"), "{e}");

    let d = copy_bundle(name, &tmp.join("classes"));
    edit_manifest(&d, |v| {
        v["classes"].as_array_mut().unwrap().pop();
    });
    let e = load_err(&d);
    assert!(
        e.contains("outputs 9 logits") && e.contains("lists 8"),
        "{e}"
    );

    let d = copy_bundle(name, &tmp.join("shape"));
    edit_manifest(&d, |v| v["input"]["width"] = 100.into());
    let e = load_err(&d);
    assert!(e.contains("model input is") && e.contains("1x3x"), "{e}");

    let d = copy_bundle(name, &tmp.join("schema"));
    edit_manifest(&d, |v| v["schema_version"] = 99.into());
    let e = load_err(&d);
    assert!(
        e.contains("model.json") && e.contains("unsupported schema_version 99"),
        "{e}"
    );

    let d = copy_bundle(name, &tmp.join("garbage"));
    let onnx = std::fs::read(d.join("model.onnx")).unwrap();
    std::fs::write(d.join("model.onnx"), &onnx[..onnx.len() / 3]).unwrap();
    let sha = dermcam::model::sha256_file(&d.join("model.onnx")).unwrap();
    edit_manifest(&d, |v| v["sha256"] = sha.into());
    let e = load_err(&d);
    assert!(e.contains("model.onnx: the model cannot be loaded"), "{e}");
}

/// Rust preprocessing vs the toolchain's PIL preprocessing, on the real sample images.
/// tests/parity holds, per image, PIL's resized 8-bit crop (lossless PNG) and ONNX Runtime's
/// calibrated probabilities, written by `python -m dermtrain parity`.
#[test]
fn preprocessing_matches_python_toolchain() {
    let dir = root().join("tests/parity");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let bundle = reference["bundle"].as_str().unwrap();
    let m = model(bundle);
    assert_eq!(
        reference["sha256"].as_str().unwrap(),
        m.manifest.sha256,
        "reference made for another model file"
    );
    let spec = &m.manifest.input;
    let mut worst = 0f32;
    let mut checked = 0;
    for (file, r) in reference["images"].as_object().unwrap() {
        let img = load_image(&root().join("tests/samples").join(file), DEFAULT_MAX_PIXELS).unwrap();
        let ours = preprocess(&img, spec);
        let stem = file.trim_end_matches(".jpg");
        let theirs_img = image::open(dir.join(format!("{stem}.resized.png")))
            .unwrap()
            .to_rgb8();
        let theirs = normalize(&theirs_img, spec);
        assert_eq!(ours.shape(), theirs.shape());
        let max = ours
            .data
            .iter()
            .zip(&theirs.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let mean = ours
            .data
            .iter()
            .zip(&theirs.data)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / ours.data.len() as f32;
        // One 8-bit level is 1/255/0.225 = 0.0174 after normalisation: decoders (libjpeg vs
        // zune-jpeg) and resampler rounding may differ by a few levels on single pixels.
        assert!(max <= 0.07, "{file}: max |diff| {max}");
        assert!(mean <= 0.008, "{file}: mean |diff| {mean}");
        worst = worst.max(max);
        let want: Vec<f32> = r["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        // Same tensor through tract vs ONNX Runtime: runtimes agree to float precision, for
        // the logits and for the "not a lesion" score the bundle's graph computes.
        let outputs = m.outputs(&theirs, false).unwrap();
        if let Some(want) = r["ood"].as_f64() {
            let got = outputs.ood.expect("the bundle has an ood output") as f64;
            assert!(
                (got - want).abs() <= 1e-3 * want.abs().max(10.0),
                "{file}: ood score tract {got} vs ONNX Runtime {want}"
            );
            assert!(
                (got as f32) <= m.manifest.ood.as_ref().unwrap().threshold,
                "{file}: a real lesion sample scored as not a lesion ({got})"
            );
        }
        let same_input =
            dermcam::model::classifier::Prediction::from_logits(&outputs.logits, &m.manifest);
        let dr = same_input
            .probabilities
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            dr <= 1e-3,
            "{file}: tract vs ONNX Runtime on the same tensor differ by {dr}"
        );
        // Whole Rust path (our decoder + resize): same top-1, probabilities close.
        let (p, _) = m.classify(&img, false).unwrap();
        assert_eq!(
            p.top1().0,
            r["top1"].as_u64().unwrap() as usize,
            "{file}: top-1 differs from the toolchain"
        );
        let dp = p
            .probabilities
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(dp <= 0.08, "{file}: probabilities differ by {dp}");
        eprintln!(
            "parity {file}: preprocessing max {max:.4} mean {mean:.5}; tract-vs-ORT {dr:.2e}; end-to-end prob {dp:.4}"
        );
        checked += 1;
    }
    assert!(checked >= 5);
    eprintln!("parity: {checked} images, worst max |diff| {worst:.4}");
}

#[test]
fn int8_agrees_with_fp32_on_samples() {
    for arch in ["effl0-v2", "resnet18-v2"] {
        let (f, q) = (model(arch), model(&format!("{arch}-int8")));
        assert_eq!(
            f.manifest.precision,
            dermcam::model::manifest::Precision::Fp32
        );
        assert_eq!(
            q.manifest.precision,
            dermcam::model::manifest::Precision::Int8
        );
        // The model cards give the val agreement (0.89 for effl0-v2 through ONNX Runtime): a
        // confident fp32 answer must survive quantisation, a borderline one may flip.
        let mut flips = 0;
        for s in samples() {
            let img = load_image(&s, DEFAULT_MAX_PIXELS).unwrap();
            let (pf, _) = f.classify(&img, false).unwrap();
            let (pq, _) = q.classify(&img, false).unwrap();
            if pf.top1().0 != pq.top1().0 {
                flips += 1;
                assert!(
                    pf.top1().1 < 0.6,
                    "{arch} {}: confident fp32 {:?} vs int8 {:?}",
                    s.display(),
                    pf.top1(),
                    pq.top1()
                );
            }
        }
        assert!(
            flips <= 1,
            "{arch}: {flips} of {} samples flip",
            samples().len()
        );
    }
}

#[test]
fn default_model_recognises_most_samples() {
    // Not a benchmark (val figures live in the model card): a sanity check that the shipped
    // model and the Rust pipeline together still make sense on real images.
    let m = default_model();
    let right = samples()
        .iter()
        .filter(|s| {
            let (p, _) = m
                .classify(&load_image(s, DEFAULT_MAX_PIXELS).unwrap(), true)
                .unwrap();
            m.manifest.classes[p.top1().0].folder == sample_class(s)
        })
        .count();
    assert!(
        right * 2 > samples().len(),
        "only {right} of {} samples right",
        samples().len()
    );
}
