//! `dermcam eval`: run a bundle over a labelled dataset and write report.json, report.md and
//! confusion_matrix.png.

use crate::model::Model;
use crate::model::preprocess::{DEFAULT_MAX_PIXELS, load_image};
use crate::offline::dataset::Sample;
use crate::offline::metrics::{Summary, summarize};
use crate::pipeline::quality::{self, QualityIssue};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

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
    #[error("{0}: cannot draw the figure")]
    Plot(String, #[source] crate::offline::plots::PlotError),
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

/// How many images of the set each gate of the device would hold back (the classifier is scored
/// on all of them all the same).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GateFigures {
    pub images: usize,
    pub too_dark: usize,
    pub too_bright: usize,
    pub blurred: usize,
    /// Passed the quality gate but scored as not a skin lesion.
    pub not_lesion: usize,
    /// Share of the images held back by either gate.
    pub held_back: f64,
    /// Share turned away as not a lesion, per source.
    pub not_lesion_per_source: BTreeMap<String, f64>,
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
    pub gates: GateFigures,
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
    let mut gates = GateFigures::default();
    let mut turned_away: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let gate = crate::config::PipelineConfig::default();
    for s in samples {
        let result = load_image(&s.path, DEFAULT_MAX_PIXELS)
            .map_err(|e| e.to_string())
            .and_then(|img| {
                let q = quality::check(&quality::measure(&img), &gate);
                Ok((model.classify(&img, false).map_err(|e| e.to_string())?, q))
            });
        match result {
            Ok(((p, _), q)) => {
                gates.images += 1;
                match q {
                    Some(QualityIssue::TooDark) => gates.too_dark += 1,
                    Some(QualityIssue::TooBright) => gates.too_bright += 1,
                    Some(QualityIssue::Blurred) => gates.blurred += 1,
                    None if p.not_lesion => gates.not_lesion += 1,
                    None => {}
                }
                let e = turned_away.entry(s.source.clone()).or_default();
                e.0 += 1;
                e.1 += (q.is_none() && p.not_lesion) as usize;
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
    gates.held_back = (gates.too_dark + gates.too_bright + gates.blurred + gates.not_lesion) as f64
        / gates.images.max(1) as f64;
    gates.not_lesion_per_source = turned_away
        .into_iter()
        .map(|(k, (n, away))| (k, away as f64 / n.max(1) as f64))
        .collect();
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
        gates,
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
