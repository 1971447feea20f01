//! `dermcam eval`: run a bundle over a labelled dataset and write report.json, report.md and
//! confusion_matrix.png.

use crate::dataset::Sample;
use crate::metrics::{Summary, summarize};
use crate::model::Model;
use crate::preprocess::{DEFAULT_MAX_PIXELS, load_image};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("the dataset has classes the model does not know: {0:?}")]
    UnknownClasses(Vec<String>),
    #[error("no samples in split {0:?}")]
    EmptySplit(String),
    #[error("{path}: cannot write report")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: cannot draw the confusion matrix: {1}")]
    Plot(String, String),
}

#[derive(Debug, Serialize)]
pub struct SourceFigures {
    pub n: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
}

#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub model_sha256: String,
    pub dataset: String,
    pub split: String,
    pub summary: Summary,
    pub melanoma_recall: Option<f64>,
    pub per_source: BTreeMap<String, SourceFigures>,
    /// Images that could not be read (path, error); they are not counted.
    pub failed: Vec<(String, String)>,
}

/// Samples of `split` ("all" keeps every sample), checking every class is known to the model.
pub fn select<'a>(
    samples: &'a [Sample],
    split: &str,
    model: &Model,
) -> Result<Vec<&'a Sample>, EvalError> {
    let chosen: Vec<&Sample> = samples
        .iter()
        .filter(|s| split == "all" || s.split == split)
        .collect();
    if chosen.is_empty() {
        return Err(EvalError::EmptySplit(split.into()));
    }
    let mut unknown: Vec<String> = chosen
        .iter()
        .filter(|s| model.manifest.class_by_folder(&s.class).is_none())
        .map(|s| s.class.clone())
        .collect();
    unknown.sort();
    unknown.dedup();
    if !unknown.is_empty() {
        return Err(EvalError::UnknownClasses(unknown));
    }
    Ok(chosen)
}

pub fn evaluate(
    model: &Model,
    samples: &[&Sample],
    dataset: &str,
    split: &str,
    progress: bool,
) -> EvalReport {
    let bar = if progress {
        indicatif::ProgressBar::new(samples.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut probs = Vec::new();
    let mut labels = Vec::new();
    let mut sources = Vec::new();
    let mut failed = Vec::new();
    for s in samples {
        let result = load_image(&s.path, DEFAULT_MAX_PIXELS)
            .map_err(|e| e.to_string())
            .and_then(|img| model.classify(&img, false).map_err(|e| e.to_string()));
        match result {
            Ok((p, _)) => {
                probs.push(p.probabilities);
                labels.push(
                    model
                        .manifest
                        .class_by_folder(&s.class)
                        .expect("checked by select"),
                );
                sources.push(s.source.clone());
            }
            Err(e) => failed.push((s.path.display().to_string(), e)),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let names: Vec<String> = model
        .manifest
        .classes
        .iter()
        .map(|c| c.folder.clone())
        .collect();
    let abstain = model.manifest.abstain_threshold;
    let summary = summarize(&probs, &labels, &names, abstain);
    let melanoma_recall = summary
        .per_class
        .iter()
        .find(|c| c.class == "melanoma")
        .map(|c| c.recall);
    let mut per_source = BTreeMap::new();
    let mut uniq: Vec<&String> = sources.iter().collect();
    uniq.sort();
    uniq.dedup();
    for src in uniq {
        let idx: Vec<usize> = (0..sources.len()).filter(|&i| &sources[i] == src).collect();
        let p: Vec<Vec<f32>> = idx.iter().map(|&i| probs[i].clone()).collect();
        let l: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
        let s = summarize(&p, &l, &names, abstain);
        per_source.insert(
            src.clone(),
            SourceFigures {
                n: s.n,
                accuracy: s.accuracy,
                balanced_accuracy: s.balanced_accuracy,
            },
        );
    }
    EvalReport {
        model: model.manifest.name.clone(),
        model_sha256: model.manifest.sha256.clone(),
        dataset: dataset.into(),
        split: split.into(),
        summary,
        melanoma_recall,
        per_source,
        failed,
    }
}

impl EvalReport {
    pub fn markdown(&self) -> String {
        let s = &self.summary;
        let mut md = format!(
            "# dermcam eval: {} on {} ({})\n\nResearch/education software, not a medical device.\n\n\
             | metric | value |\n|---|---|\n| images | {} |\n| accuracy | {:.4} |\n| balanced accuracy | {:.4} |\n\
             | macro F1 | {:.4} |\n| macro one-vs-rest AUC | {:.4} |\n| ECE (15 bins) | {:.4} |\n| melanoma recall | {} |\n\
             | abstain rate | {:.4} |\n| unreadable images | {} |\n\n## Per class\n\n| class | precision | recall | F1 | support | AUC |\n|---|---|---|---|---|---|\n",
            self.model,
            self.dataset,
            self.split,
            s.n,
            s.accuracy,
            s.balanced_accuracy,
            s.macro_f1,
            s.macro_auc_ovr,
            s.ece_15,
            self.melanoma_recall
                .map_or("n/a".into(), |r| format!("{r:.4}")),
            s.abstain_rate,
            self.failed.len()
        );
        for c in &s.per_class {
            md += &format!(
                "| {} | {:.3} | {:.3} | {:.3} | {} | {} |\n",
                c.class,
                c.precision,
                c.recall,
                c.f1,
                c.support,
                c.auc_ovr.map_or("n/a".into(), |a| format!("{a:.3}"))
            );
        }
        md +=
            "\n## Per source\n\n| source | n | accuracy | balanced accuracy |\n|---|---|---|---|\n";
        for (k, v) in &self.per_source {
            md += &format!(
                "| {k} | {} | {:.4} | {:.4} |\n",
                v.n, v.accuracy, v.balanced_accuracy
            );
        }
        md += "\n## Confusion matrix (rows = true, columns = predicted)\n\n| |";
        for c in &s.per_class {
            md += &format!(" {} |", &c.class[..c.class.len().min(6)]);
        }
        md += "\n|---|";
        md += &"---|".repeat(s.per_class.len());
        md += "\n";
        for (c, row) in s.per_class.iter().zip(&s.confusion_matrix) {
            md += &format!("| {} |", c.class);
            for v in row {
                md += &format!(" {v} |");
            }
            md += "\n";
        }
        md += "\nRow-normalised matrix: report.json `summary.confusion_matrix_normalized`; picture: confusion_matrix.png.\n";
        md
    }

    pub fn write(&self, dir: &Path) -> Result<(), EvalError> {
        let w = |p: &Path, e| EvalError::Write {
            path: p.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| w(dir, e))?;
        let json = dir.join("report.json");
        std::fs::write(
            &json,
            serde_json::to_string_pretty(self).expect("report serialises") + "\n",
        )
        .map_err(|e| w(&json, e))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown()).map_err(|e| w(&md, e))?;
        let png = dir.join("confusion_matrix.png");
        draw_confusion(
            &self.summary,
            &format!("{} - {} {}", self.model, self.dataset, self.split),
            &png,
        )
        .map_err(|e| EvalError::Plot(png.display().to_string(), e))?;
        Ok(())
    }
}

static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");

fn draw_confusion(s: &Summary, title: &str, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    use plotters::style::{FontStyle, register_font};
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let k = s.per_class.len();
    let kf = k as f64;
    let root = BitMapBackend::new(path, (900, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}  (rows: true, columns: predicted)"),
            ("sans-serif", 16),
        )
        .margin_top(10)
        .margin_right(20)
        .margin_left(240)
        .margin_bottom(200)
        .build_cartesian_2d(0f64..kf, 0f64..kf)
        .map_err(|x| e(&x))?;
    let centre = Pos::new(HPos::Center, VPos::Center);
    for r in 0..k {
        for c in 0..k {
            let v = s.confusion_matrix_normalized[r][c];
            let shade = (255.0 * (1.0 - 0.85 * v)) as u8;
            let y = kf - 1.0 - r as f64;
            let x = c as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(|x| e(&x))?;
            let color = if v > 0.5 { WHITE } else { BLACK };
            let label = format!("{}", s.confusion_matrix[r][c]);
            chart
                .draw_series(std::iter::once(Text::new(
                    label,
                    (x + 0.5, y + 0.5),
                    ("sans-serif", 15).into_font().color(&color).pos(centre),
                )))
                .map_err(|x| e(&x))?;
        }
    }
    // Class names outside the plotting area, centred on their row / column.
    for (i, m) in s.per_class.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, kf - i as f64 - 0.5));
        let style = ("sans-serif", 13)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(m.class.clone(), (px - 8, py), style))
            .map_err(|x| e(&x))?;
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
        let style = ("sans-serif", 13)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(m.class.clone(), (px, py + 8), style))
            .map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
