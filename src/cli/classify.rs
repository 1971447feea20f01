//! `dermcam classify`: classify image files and folders.

use super::args::ModelArgs;
use super::print::print_table;
use anyhow::Result;
use dermcam::model::classifier::Prediction;
use dermcam::model::preprocess::{DEFAULT_MAX_PIXELS, load_image};
use dermcam::model::{Model, Timings};
use dermcam::pipeline::quality::{Quality, QualityIssue};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Expand folders into their image files (sorted, recursive); files are kept as given so a
/// non-image file named on the command line gets its own error line. Symbolic links to
/// folders inside a folder are not followed (two links to `.` would never end).
pub(super) fn expand_inputs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for i in inputs {
        if i.is_dir() {
            out.extend(dermcam::paths::image_files(i, true).unwrap_or_default())
        } else {
            out.push(i.clone())
        }
    }
    out
}

#[derive(clap::Args)]
pub(super) struct Args {
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    /// How many classes to list per image.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Average with the horizontally mirrored image (test-time augmentation).
    #[arg(long)]
    tta: bool,
    /// Classify every image: skip the quality gate (too dark / too bright / blurred) and
    /// the "not a lesion" gate that the camera and the upload page apply.
    #[arg(long)]
    no_gates: bool,
}

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let Args {
        inputs,
        model,
        top_k,
        json,
        tta,
        no_gates,
    } = args;
    let gates = !no_gates;
    use dermcam::pipeline::quality;
    // The live path's thresholds: an image the camera would not classify is not classified here.
    let gate = dermcam::config::PipelineConfig::default();
    let model = model.load()?;
    let files = expand_inputs(&inputs);
    if files.is_empty() {
        anyhow::bail!("no images found in {:?}", inputs);
    }
    let mut failed = 0;
    if !json {
        println!(
            "model {} ({}); {}",
            model.manifest.name,
            model.manifest.precision.as_str(),
            dermcam::DISCLAIMER
        );
    }
    for f in &files {
        let result = load_image(f, DEFAULT_MAX_PIXELS)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                let q = quality::measure(&img);
                match quality::check(&q, &gate).filter(|_| gates) {
                    Some(issue) => Ok(Err((issue, q))),
                    None => Ok(Ok(model.classify(&img, tta)?)),
                }
            });
        match result {
            Ok(Err((issue, q))) => print_retake(f, issue, &q, &model, json),
            Ok(Ok((p, t))) => {
                let p = if gates { p } else { p.ungated(&model.manifest) };
                print_prediction(f, &p, &t, &model, top_k, json);
            }
            Err(e) => {
                failed += 1;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"path": f, "error": format!("{e:#}")})
                    );
                } else {
                    log::error!("{e:#}");
                }
            }
        }
    }
    if failed > 0 {
        log::info!("{failed} of {} inputs failed", files.len());
        return Ok(ExitCode::from(4));
    }
    Ok(ExitCode::SUCCESS)
}

/// An image the quality gate held back.
fn print_retake(f: &Path, issue: QualityIssue, q: &Quality, model: &Model, json: bool) {
    if json {
        let v = serde_json::json!({
            "path": f, "outcome": "retake", "quality_issue": issue,
            "headline": issue.advice(), "refer": false,
            "quality": q, "model": model.manifest.name,
        });
        println!("{v}");
    } else {
        println!(
            "{}: retake ({}): {} (luma {:.0}, sharpness {:.0}; --no-gates classifies it anyway)",
            f.display(),
            issue.as_str(),
            issue.advice(),
            q.luma,
            q.sharpness
        );
    }
}

fn print_prediction(
    f: &Path,
    p: &Prediction,
    t: &Timings,
    model: &Model,
    top_k: usize,
    json: bool,
) {
    if json {
        let v = serde_json::json!({
            "path": f, "outcome": p.outcome(), "uncertain": p.uncertain,
            "headline": p.headline(&model.manifest),
            "refer": p.refer, "malignant_probability": p.malignant_probability,
            "ood_score": p.ood_score,
            "top": p.top_k(top_k, &model.manifest), "model": model.manifest.name, "timings": t,
        });
        println!("{v}");
    } else {
        print_table(f, p, model, top_k);
    }
}
