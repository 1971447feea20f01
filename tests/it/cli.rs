//! The `dermcam` binary: classify / eval / models / check-config / boards, exit codes and
//! error lines.

use crate::*;
use std::process::Command;

fn dermcam(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dermcam"))
        .args(args)
        .env_remove("DERMCAM_MODEL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn classify_reports_each_bad_file_and_continues() {
    let tmp = scratch("cli-classify");
    let good = samples()[0].clone();
    let truncated = tmp.join("truncated.jpg");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 4]).unwrap();
    let text = tmp.join("notes.jpg");
    std::fs::write(&text, "this is not an image").unwrap();
    let missing = tmp.join("missing.png");
    let (code, out, err) = dermcam(&[
        "classify",
        "--json",
        good.to_str().unwrap(),
        truncated.to_str().unwrap(),
        text.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 4, "exit code for partial failure; stderr: {err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0]["top"].as_array().unwrap().len() == 3 && lines[0]["error"].is_null());
    // refer = malignant probability (melanoma + SCC) >= the bundle's threshold.
    let m = default_model();
    let mp = lines[0]["malignant_probability"].as_f64().unwrap();
    assert_eq!(
        lines[0]["refer"].as_bool().unwrap(),
        mp >= m.manifest.refer_threshold() as f64,
        "{}",
        lines[0]
    );
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("truncated.jpg"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2]["error"]
            .as_str()
            .unwrap()
            .contains("notes.jpg: not a JPEG or PNG"),
        "{}",
        lines[2]
    );
    assert!(
        lines[3]["error"]
            .as_str()
            .unwrap()
            .contains("missing.png: cannot read"),
        "{}",
        lines[3]
    );
    // Probabilities are calibrated and sum to one over all classes.
    let top: f64 = lines[0]["top"][0]["probability"].as_f64().unwrap();
    assert!(top > 0.0 && top <= 1.0);
}

#[test]
fn classify_folder_table_matches_library() {
    let (code, out, err) = dermcam(&[
        "classify",
        "--top-k",
        "2",
        root().join("tests/samples").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Not a diagnosis"));
    let m = default_model();
    for s in samples() {
        let (p, _) = m
            .classify(
                &dermcam::model::preprocess::load_image(&s, u64::MAX).unwrap(),
                false,
            )
            .unwrap();
        let line = out
            .lines()
            .find(|l| l.contains(s.file_name().unwrap().to_str().unwrap()))
            .unwrap();
        let expect = if p.uncertain {
            "uncertain".to_string()
        } else {
            m.manifest.classes[p.top1().0].name.clone()
        };
        assert!(line.contains(&expect), "{line} should say {expect}");
    }
}

#[test]
fn bad_model_is_exit_code_3_with_chain() {
    let tmp = scratch("cli-badmodel");
    let d = copy_bundle(dermcam::DEFAULT_BUNDLE, &tmp);
    std::fs::write(d.join("model.json"), "{\"schema_version\": 1, \"name\": 3}").unwrap();
    let (code, _, err) = dermcam(&[
        "classify",
        "--model",
        d.to_str().unwrap(),
        samples()[0].to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("error: loading model bundle")
            && err.contains("caused by:")
            && err.contains("model.json"),
        "{err}"
    );
}

#[test]
fn eval_writes_reports_and_rejects_unknown_classes() {
    let tmp = scratch("cli-eval");
    let data = tmp.join("data");
    for s in samples() {
        let d = data.join(sample_class(&s));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(&s, d.join(s.file_name().unwrap())).unwrap();
    }
    let report = tmp.join("report");
    let (code, out, err) = dermcam(&[
        "eval",
        data.to_str().unwrap(),
        "--split",
        "all",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("balanced accuracy"), "{out}");
    for f in ["report.json", "report.md", "confusion_matrix.png"] {
        assert!(report.join(f).is_file(), "{f} missing");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(r["summary"]["n"], samples().len());
    let cm = r["summary"]["confusion_matrix"].as_array().unwrap();
    let total: u64 = cm
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, samples().len());
    let png = image::open(report.join("confusion_matrix.png")).unwrap();
    assert!(png.width() >= 600);
    // No lesion ids: every image is lesion-clean, so no separate refer row.
    assert!(r["refer"]["lesion_clean"].is_null(), "{}", r["refer"]);

    // The same images as val with lesion ids, the melanoma's lesion also in train: the refer
    // figures count it, the lesion-clean refer row (where the threshold was chosen) does not.
    let clean = tmp.join("clean");
    let mut csv = String::from("path,class,split,source,lesion_id\n");
    for (i, s) in samples().iter().enumerate() {
        let class = sample_class(s);
        let name = s.file_name().unwrap().to_str().unwrap();
        std::fs::create_dir_all(clean.join(&class)).unwrap();
        std::fs::copy(s, clean.join(&class).join(name)).unwrap();
        csv += &format!("{class}/{name},{class},val,isic,L{i}\n");
        if class == "melanoma" {
            std::fs::copy(s, clean.join(&class).join("train.jpg")).unwrap();
            csv += &format!("{class}/train.jpg,{class},train,isic,L{i}\n");
        }
    }
    std::fs::write(clean.join("manifest.csv"), csv).unwrap();
    let (code, out, err) = dermcam(&[
        "eval",
        clean.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("refer, lesion-clean (n="), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    let refer = &r["refer"];
    let malignant = refer["malignant_images"].as_u64().unwrap() as usize;
    assert!(malignant >= 2, "{refer}");
    assert_eq!(refer["lesion_clean"]["n"], samples().len() - 1, "{refer}");
    assert!(refer["per_source"]["isic"]["auc"].is_number(), "{refer}");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    let row = format!("| lesion-clean | {} |", samples().len() - 1);
    assert!(md.contains(&row), "{md}");

    std::fs::create_dir_all(data.join("psoriasis")).unwrap();
    std::fs::copy(&samples()[0], data.join("psoriasis/x.jpg")).unwrap();
    let (code, _, err) = dermcam(&[
        "eval",
        data.to_str().unwrap(),
        "--split",
        "all",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(code, 5);
    assert!(err.contains("psoriasis"), "{err}");
}

#[test]
fn every_board_preset_validates() {
    let boards = dermcam::config::list_boards();
    assert!(boards.len() >= 3, "{boards:?}");
    for (name, _) in boards {
        let (code, out, err) = dermcam(&["check-config", "--board", &name]);
        assert_eq!(code, 0, "{name}: {out}{err}");
        assert!(out.contains("OK"), "{name}: {out}");
    }
    let (code, _, err) = dermcam(&["check-config", "--board", "no-such-board"]);
    assert_eq!(code, 6);
    assert!(
        err.contains("unknown board") && err.contains("rpi4-st7789"),
        "{err}"
    );
}

#[test]
fn check_config_names_the_bad_line_and_missing_features() {
    let tmp = scratch("cli-config");
    let f = tmp.join("config.toml");
    std::fs::write(
        &f,
        "[source]\nkind = \"camera\"\n[screen]\nkind = \"fbdev\"\n[pipeline]\nmin_luma = 300\n",
    )
    .unwrap();
    let (code, _, err) = dermcam(&["check-config", f.to_str().unwrap()]);
    assert_eq!(code, 6);
    assert!(
        err.contains("config.toml") && err.contains("pipeline.min_luma"),
        "{err}"
    );
    std::fs::write(
        &f,
        "[source]\nkind = \"camera\"\n[screen]\nkind = \"fbdev\"\n",
    )
    .unwrap();
    let (code, out, _) = dermcam(&["check-config", f.to_str().unwrap()]);
    assert_eq!(code, 0);
    if !cfg!(feature = "camera") {
        assert!(out.contains("built without feature camera"), "{out}");
    }
    if !cfg!(feature = "fbdev") {
        assert!(out.contains("built without feature fbdev"), "{out}");
    }
}

#[test]
fn models_lists_bundles_with_metrics() {
    let (code, out, _) = dermcam(&["models"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(dermcam::DEFAULT_BUNDLE) && out.contains("int8") && out.contains("fp32"),
        "{out}"
    );
    let default_line = out
        .lines()
        .find(|l| l.starts_with(dermcam::DEFAULT_BUNDLE))
        .unwrap();
    assert!(default_line.trim_end().ends_with('*'), "{default_line}");
}

/// A config file named on the command line must exist, board preset or not (it was silently
/// ignored with `--board`, so a typo ran the board's defaults).
#[test]
fn run_with_a_missing_named_config_is_an_error_even_with_a_board() {
    let tmp = scratch("cli-missing-config");
    let missing = tmp.join("missing.toml");
    let (code, _, err) = dermcam(&[
        "run",
        "--config",
        missing.to_str().unwrap(),
        "--board",
        "rpi4-st7789",
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
}
