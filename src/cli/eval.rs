//! `dermcam eval`: evaluate a bundle on labelled datasets and write a report.

use super::args::ModelArgs;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub(super) struct Args {
    /// Dataset folders (one or more, e.g. skin9 and skin9-extra); reported together, with
    /// per-source, per-archive, lesion-clean and refer figures.
    #[arg(required = true)]
    dataset: Vec<PathBuf>,
    /// Split to evaluate ("all" = every row).
    #[arg(long, default_value = "val")]
    split: String,
    #[command(flatten)]
    model: ModelArgs,
    /// Folder for report.json, report.md and confusion_matrix.png.
    #[arg(long, default_value = "out/eval")]
    report: PathBuf,
}

pub(super) fn run(args: Args) -> Result<ExitCode> {
    let Args {
        dataset: datasets,
        split,
        model,
        report: report_dir,
    } = args;
    let split = split.as_str();
    let model = model.load()?;
    let samples = dermcam::offline::dataset::read_datasets(&datasets)?;
    let leaky = dermcam::offline::dataset::leaky(&samples);
    let chosen = dermcam::offline::eval::select(&samples, split, &model)?;
    let names = datasets
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    log::info!(
        "evaluating {} on {} images of {names} split {split}",
        model.manifest.name,
        chosen.len(),
    );
    let report = dermcam::offline::eval::evaluate(&model, &chosen, &leaky, &names, split, true);
    report.write(&report_dir)?;
    let s = &report.summary;
    println!(
        "{}: n={} accuracy {:.4}  balanced accuracy {:.4}  macro F1 {:.4}  macro AUC {:.4}  ECE {:.4}  melanoma recall {}  abstain {:.3}",
        report.model,
        s.n,
        s.accuracy,
        s.balanced_accuracy,
        s.macro_f1,
        s.macro_auc_ovr,
        s.ece_15,
        dermcam::offline::eval::opt4(report.melanoma_recall),
        s.abstain_rate
    );
    if let Some(c) = &report.lesion_clean {
        println!(
            "lesion-clean (without {} images whose lesion is in train): n={} balanced accuracy {:.4}",
            report.lesion_leaky_images, c.n, c.balanced_accuracy
        );
    }
    let r = &report.refer;
    let f = dermcam::offline::eval::opt4;
    println!(
        "refer (threshold {:.4}): sensitivity {}  specificity {}  benign not flagged {}  AUC {}",
        r.threshold,
        f(r.sensitivity),
        f(r.specificity),
        f(r.benign_not_flagged),
        f(r.auc)
    );
    if let Some(c) = &r.lesion_clean {
        println!(
            "refer, lesion-clean (n={}): sensitivity {}  specificity {}  AUC {}",
            c.n,
            f(c.sensitivity),
            f(c.specificity),
            f(c.auc)
        );
    }
    for (p, e) in &report.failed {
        log::error!("{p}: {e}");
    }
    println!(
        "wrote {}/report.json, report.md, confusion_matrix.png, refer_roc.png",
        report_dir.display()
    );
    Ok(if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}
