//! Shared printers for command output (tables, bars).

use dermcam::model::Model;
use dermcam::model::classifier::Prediction;
use std::path::Path;

pub(super) fn bar(p: f32, width: usize) -> String {
    let n = (p * width as f32).round() as usize;
    format!(
        "{}{}",
        "#".repeat(n.min(width)),
        ".".repeat(width - n.min(width))
    )
}

pub(super) fn print_table(path: &Path, p: &Prediction, model: &Model, top_k: usize) {
    let m = &model.manifest;
    let (top, prob) = p.top1();
    if p.not_lesion {
        println!(
            "{}: not_lesion: {} (score {:.0} > {:.0}; best guess {} {:.1}%, not shown on the device)",
            path.display(),
            dermcam::model::classifier::NOT_LESION_HEADLINE,
            p.ood_score.unwrap_or(f32::NAN),
            m.ood.as_ref().map_or(f32::NAN, |o| o.threshold),
            m.classes[top].name,
            prob * 100.0
        );
        return;
    } else if p.uncertain {
        println!(
            "{}: uncertain (best guess {} {:.1}% < {:.0}% threshold)",
            path.display(),
            m.classes[top].name,
            prob * 100.0,
            m.abstain_threshold * 100.0
        );
    } else {
        println!(
            "{}: {} {:.1}%",
            path.display(),
            m.classes[top].name,
            prob * 100.0
        );
    }
    for s in p.top_k(top_k, m) {
        println!(
            "  {:<32} {:>6.1}%  {}",
            s.name,
            s.probability * 100.0,
            bar(s.probability, 20)
        );
    }
    println!(
        "  {:<32} {:>6.1}%  {}",
        "refer (malignant probability)",
        p.malignant_probability * 100.0,
        if p.refer {
            format!(
                "REFER: see a clinician (>= {:.1}%)",
                m.refer_threshold() * 100.0
            )
        } else {
            format!("no referral flag (< {:.1}%)", m.refer_threshold() * 100.0)
        }
    );
}
