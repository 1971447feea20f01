//! `dermcam eval`: run a bundle over a labelled dataset and write report.json, report.md and
//! confusion_matrix.png.

use crate::model::Model;
use crate::model::preprocess::{DEFAULT_MAX_PIXELS, load_image};
use crate::offline::dataset::Sample;
use crate::offline::metrics::{Summary, summarize};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

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
    /// Recall of each class present in this group.
    pub recall: BTreeMap<String, f64>,
}

/// The refer decision measured against the labels: malignant = the manifest's refer classes.
#[derive(Debug, Serialize)]
pub struct ReferFigures {
    pub threshold: f32,
    pub classes: Vec<String>,
    pub malignant_images: usize,
    /// Share of malignant images flagged.
    pub sensitivity: Option<f64>,
    /// Share of all other images not flagged.
    pub specificity: Option<f64>,
    /// Share of benign lesions (risk "benign") not flagged.
    pub benign_not_flagged: Option<f64>,
    /// ROC AUC of the malignant probability (malignant vs the rest).
    pub auc: Option<f64>,
    /// Share of each class's images flagged.
    pub flagged_per_class: BTreeMap<String, f64>,
    pub per_source: BTreeMap<String, ReferGroup>,
    pub per_archive: BTreeMap<String, ReferGroup>,
    /// ROC curve points (false-positive rate, true-positive rate), thresholds descending.
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
pub struct ReferGroup {
    pub n: usize,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
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
    /// Per image collection (`archive` column).
    pub per_archive: BTreeMap<String, SourceFigures>,
    /// Figures without the images whose lesion also appears in train (when there are any).
    pub lesion_clean: Option<SourceFigures>,
    /// Images left out of `lesion_clean`.
    pub lesion_leaky_images: usize,
    pub refer: ReferFigures,
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
    leaky: &HashSet<PathBuf>,
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
    let mut archives = Vec::new();
    let mut clean = Vec::new();
    let mut malignant = Vec::new();
    let mut failed = Vec::new();
    for s in samples {
        let result = load_image(&s.path, DEFAULT_MAX_PIXELS)
            .map_err(|e| e.to_string())
            .and_then(|img| model.classify(&img, false).map_err(|e| e.to_string()));
        match result {
            Ok((p, _)) => {
                probs.push(p.probabilities);
                malignant.push(p.malignant_probability);
                archives.push(s.archive.clone());
                clean.push(!leaky.contains(&s.path));
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
    let group = |keep: &dyn Fn(usize) -> bool| -> SourceFigures {
        let idx: Vec<usize> = (0..labels.len()).filter(|&i| keep(i)).collect();
        let p: Vec<Vec<f32>> = idx.iter().map(|&i| probs[i].clone()).collect();
        let l: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
        let s = summarize(&p, &l, &names, abstain);
        SourceFigures {
            n: s.n,
            accuracy: s.accuracy,
            balanced_accuracy: s.balanced_accuracy,
            recall: s
                .per_class
                .iter()
                .filter(|c| c.support > 0)
                .map(|c| (c.class.clone(), c.recall))
                .collect(),
        }
    };
    let by = |keys: &[String]| -> BTreeMap<String, SourceFigures> {
        let uniq: std::collections::BTreeSet<&String> = keys.iter().collect();
        uniq.into_iter()
            .map(|k| (k.clone(), group(&|i| &keys[i] == k)))
            .collect()
    };
    let per_source = by(&sources);
    let per_archive = by(&archives);
    let lesion_leaky_images = clean.iter().filter(|c| !**c).count();
    let lesion_clean = (lesion_leaky_images > 0).then(|| group(&|i| clean[i]));
    let refer = refer_figures(model, &labels, &malignant, &sources, &archives);
    EvalReport {
        model: model.manifest.name.clone(),
        model_sha256: model.manifest.sha256.clone(),
        dataset: dataset.into(),
        split: split.into(),
        summary,
        melanoma_recall,
        per_source,
        per_archive,
        lesion_clean,
        lesion_leaky_images,
        refer,
        failed,
    }
}

fn share(flags: impl Iterator<Item = bool>) -> Option<f64> {
    let (mut n, mut k) = (0usize, 0usize);
    for f in flags {
        n += 1;
        k += f as usize;
    }
    (n > 0).then(|| k as f64 / n as f64)
}

fn refer_figures(
    model: &Model,
    labels: &[usize],
    malignant: &[f32],
    sources: &[String],
    archives: &[String],
) -> ReferFigures {
    let m = &model.manifest;
    let ids = m.refer_class_ids();
    let threshold = m.refer_threshold();
    let pos: Vec<bool> = labels.iter().map(|l| ids.contains(l)).collect();
    let flagged: Vec<bool> = malignant.iter().map(|&p| p >= threshold).collect();
    let sens = |keep: &dyn Fn(usize) -> bool| {
        share(
            (0..pos.len())
                .filter(|&i| keep(i) && pos[i])
                .map(|i| flagged[i]),
        )
    };
    let spec = |keep: &dyn Fn(usize) -> bool| {
        share(
            (0..pos.len())
                .filter(|&i| keep(i) && !pos[i])
                .map(|i| !flagged[i]),
        )
    };
    let groups = |keys: &[String]| -> BTreeMap<String, ReferGroup> {
        let uniq: std::collections::BTreeSet<&String> = keys.iter().collect();
        uniq.into_iter()
            .map(|k| {
                let keep = |i: usize| &keys[i] == k;
                (
                    k.clone(),
                    ReferGroup {
                        n: keys.iter().filter(|x| *x == k).count(),
                        sensitivity: sens(&keep),
                        specificity: spec(&keep),
                    },
                )
            })
            .collect()
    };
    let benign = |l: usize| m.classes[l].risk == crate::model::manifest::Risk::Benign;
    // ROC: sweep every distinct score, highest first.
    let (np, nn) = (
        pos.iter().filter(|p| **p).count(),
        pos.iter().filter(|p| !**p).count(),
    );
    let mut order: Vec<usize> = (0..malignant.len()).collect();
    order.sort_by(|&a, &b| malignant[b].total_cmp(&malignant[a]));
    let mut roc = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if pos[i] {
            tp += 1
        } else {
            fp += 1
        }
        let last_of_tie = order
            .get(k + 1)
            .is_none_or(|&j| malignant[j] != malignant[i]);
        if last_of_tie && np > 0 && nn > 0 {
            roc.push((fp as f64 / nn as f64, tp as f64 / np as f64));
        }
    }
    ReferFigures {
        threshold,
        classes: ids.iter().map(|&i| m.classes[i].folder.clone()).collect(),
        malignant_images: np,
        sensitivity: sens(&|_| true),
        specificity: spec(&|_| true),
        benign_not_flagged: share(
            (0..labels.len())
                .filter(|&i| benign(labels[i]))
                .map(|i| !flagged[i]),
        ),
        auc: crate::offline::metrics::auc(malignant, &pos),
        flagged_per_class: (0..m.classes.len())
            .filter_map(|c| {
                share(
                    (0..labels.len())
                        .filter(|&i| labels[i] == c)
                        .map(|i| flagged[i]),
                )
                .map(|r| (m.classes[c].folder.clone(), r))
            })
            .collect(),
        per_source: groups(sources),
        per_archive: groups(archives),
        roc,
    }
}

/// A figure that may be undefined (no images of that kind): 4 decimals or "n/a".
pub fn opt4(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.4}"))
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
        md += "\n## Per archive (image collection)\n\n| archive | n | accuracy | balanced accuracy |\n|---|---|---|---|\n";
        for (k, v) in &self.per_archive {
            md += &format!(
                "| {k} | {} | {:.4} | {:.4} |\n",
                v.n, v.accuracy, v.balanced_accuracy
            );
        }
        if let Some(c) = &self.lesion_clean {
            md += &format!(
                "\n## Lesion-clean\n\nWithout the {} images whose lesion also appears in `train`: n={}, accuracy {:.4}, balanced accuracy {:.4}.\n",
                self.lesion_leaky_images, c.n, c.accuracy, c.balanced_accuracy
            );
        }
        let r = &self.refer;
        let f = opt4;
        md += &format!(
            "\n## Refer (a clinician should see it: {} probability >= {:.4})\n\n\
             | metric | value |\n|---|---|\n| malignant images | {} |\n| sensitivity (malignant flagged) | {} |\n\
             | specificity (others not flagged) | {} |\n| benign lesions not flagged | {} |\n| malignant-score ROC AUC | {} |\n\n\
             | class | flagged |\n|---|---|\n",
            r.classes.join(" + "),
            r.threshold,
            r.malignant_images,
            f(r.sensitivity),
            f(r.specificity),
            f(r.benign_not_flagged),
            f(r.auc)
        );
        for (k, v) in &r.flagged_per_class {
            md += &format!("| {k} | {v:.4} |\n");
        }
        md += "\n| source / archive | n | sensitivity | specificity |\n|---|---|---|---|\n";
        for (k, v) in r.per_source.iter().chain(r.per_archive.iter()) {
            md += &format!(
                "| {k} | {} | {} | {} |\n",
                v.n,
                f(v.sensitivity),
                f(v.specificity)
            );
        }
        md += "\nROC curve of the malignant probability with the operating point: refer_roc.png.\n";
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
        let roc = dir.join("refer_roc.png");
        draw_roc(&self.refer, &format!("{} - refer", self.model), &roc)
            .map_err(|e| EvalError::Plot(roc.display().to_string(), e))?;
        Ok(())
    }
}

/// ROC curve of the malignant probability, with the manifest's operating point marked.
fn draw_roc(r: &ReferFigures, title: &str, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    use plotters::style::{FontStyle, register_font};
    let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let root = BitMapBackend::new(path, (640, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("false-positive rate (1 - specificity)")
        .y_desc("sensitivity")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            RGBColor(180, 180, 180),
        )))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            r.roc.clone(),
            BLUE.stroke_width(2),
        )))
        .map_err(|x| e(&x))?
        .label(format!(
            "malignant probability (AUC {})",
            r.auc.map_or("n/a".into(), |a| format!("{a:.3}"))
        ))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if let (Some(se), Some(sp)) = (r.sensitivity, r.specificity) {
        chart
            .draw_series(std::iter::once(Circle::new(
                (1.0 - sp, se),
                7,
                RED.filled(),
            )))
            .map_err(|x| e(&x))?
            .label(format!(
                "refer threshold {:.3}: sensitivity {se:.2}, specificity {sp:.2}",
                r.threshold
            ))
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSansMono.ttf");

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
