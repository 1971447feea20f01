//! `dermcam eval`: run a bundle over a labelled dataset and write report.json, report.md and
//! confusion_matrix.png.

use crate::model::Model;
use crate::model::classifier::Prediction;
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
    /// The same threshold on the images whose lesion is not in train: the set it was chosen on
    /// (none when every image is lesion-clean; the pooled figures are then the same).
    pub lesion_clean: Option<ReferGroup>,
    /// ROC curve points (false-positive rate, true-positive rate), thresholds descending.
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
pub struct ReferGroup {
    pub n: usize,
    pub sensitivity: Option<f64>,
    pub specificity: Option<f64>,
    /// ROC AUC of the malignant probability within the group (none without both kinds).
    pub auc: Option<f64>,
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

/// Every image's figures, in sample order; images that could not be read only in `failed`.
#[derive(Default)]
struct Scored {
    probs: Vec<Vec<f32>>,
    labels: Vec<usize>,
    malignant: Vec<f32>,
    sources: Vec<String>,
    archives: Vec<String>,
    /// False where the image's lesion also appears in train.
    clean: Vec<bool>,
    failed: Vec<(String, String)>,
    gates: GateFigures,
    /// Per source: images, and those turned away as not a lesion.
    turned_away: BTreeMap<String, (usize, usize)>,
}

impl Scored {
    fn push(
        &mut self,
        model: &Model,
        s: &Sample,
        leaky: &HashSet<PathBuf>,
        p: Prediction,
        q: Option<QualityIssue>,
    ) {
        self.gates.count(q, p.not_lesion);
        let e = self.turned_away.entry(s.source.clone()).or_default();
        e.0 += 1;
        e.1 += (q.is_none() && p.not_lesion) as usize;
        self.probs.push(p.probabilities);
        self.malignant.push(p.malignant_probability);
        self.archives.push(s.archive.clone());
        self.clean.push(!leaky.contains(&s.path));
        self.labels.push(
            model
                .manifest
                .class_by_folder(&s.class)
                .expect("checked by select"),
        );
        self.sources.push(s.source.clone());
    }

    /// Figures over the images `keep` selects (by index).
    fn group(&self, names: &[String], abstain: f32, keep: &dyn Fn(usize) -> bool) -> SourceFigures {
        let idx: Vec<usize> = (0..self.labels.len()).filter(|&i| keep(i)).collect();
        let p: Vec<Vec<f32>> = idx.iter().map(|&i| self.probs[i].clone()).collect();
        let l: Vec<usize> = idx.iter().map(|&i| self.labels[i]).collect();
        let s = summarize(&p, &l, names, abstain);
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
    }

    /// Figures per distinct value of `keys` (one per image).
    fn by(
        &self,
        keys: &[String],
        names: &[String],
        abstain: f32,
    ) -> BTreeMap<String, SourceFigures> {
        let uniq: std::collections::BTreeSet<&String> = keys.iter().collect();
        uniq.into_iter()
            .map(|k| (k.clone(), self.group(names, abstain, &|i| &keys[i] == k)))
            .collect()
    }
}

impl GateFigures {
    /// One image the device would have checked.
    fn count(&mut self, q: Option<QualityIssue>, not_lesion: bool) {
        self.images += 1;
        match q {
            Some(QualityIssue::TooDark) => self.too_dark += 1,
            Some(QualityIssue::TooBright) => self.too_bright += 1,
            Some(QualityIssue::Blurred) => self.blurred += 1,
            None if not_lesion => self.not_lesion += 1,
            None => {}
        }
    }

    /// The shares, once every image is counted.
    fn finish(&mut self, turned_away: BTreeMap<String, (usize, usize)>) {
        self.held_back = (self.too_dark + self.too_bright + self.blurred + self.not_lesion) as f64
            / self.images.max(1) as f64;
        self.not_lesion_per_source = turned_away
            .into_iter()
            .map(|(k, (n, away))| (k, away as f64 / n.max(1) as f64))
            .collect();
    }
}

fn progress_bar(len: usize, visible: bool) -> indicatif::ProgressBar {
    let bar = if visible {
        indicatif::ProgressBar::new(len as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images  {per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Classify every sample and run the device's quality gate on it (default thresholds).
fn score_samples(
    model: &Model,
    samples: &[&Sample],
    leaky: &HashSet<PathBuf>,
    bar: &indicatif::ProgressBar,
) -> Scored {
    let mut scored = Scored::default();
    let gate = crate::config::PipelineConfig::default();
    for s in samples {
        let result = load_image(&s.path, DEFAULT_MAX_PIXELS)
            .map_err(|e| e.to_string())
            .and_then(|img| {
                let q = quality::check(&quality::measure(&img), &gate);
                Ok((model.classify(&img, false).map_err(|e| e.to_string())?, q))
            });
        match result {
            Ok(((p, _), q)) => scored.push(model, s, leaky, p, q),
            Err(e) => scored.failed.push((s.path.display().to_string(), e)),
        }
        bar.inc(1);
    }
    scored
}

pub fn evaluate(
    model: &Model,
    samples: &[&Sample],
    leaky: &HashSet<PathBuf>,
    dataset: &str,
    split: &str,
    progress: bool,
) -> EvalReport {
    let bar = progress_bar(samples.len(), progress);
    let scored = score_samples(model, samples, leaky, &bar);
    bar.finish_and_clear();
    let names: Vec<String> = model
        .manifest
        .classes
        .iter()
        .map(|c| c.folder.clone())
        .collect();
    let abstain = model.manifest.abstain_threshold;
    let summary = summarize(&scored.probs, &scored.labels, &names, abstain);
    let melanoma_recall = summary
        .per_class
        .iter()
        .find(|c| c.class == "melanoma")
        .map(|c| c.recall);
    let per_source = scored.by(&scored.sources, &names, abstain);
    let per_archive = scored.by(&scored.archives, &names, abstain);
    let lesion_leaky_images = scored.clean.iter().filter(|c| !**c).count();
    let lesion_clean =
        (lesion_leaky_images > 0).then(|| scored.group(&names, abstain, &|i| scored.clean[i]));
    let refer = refer_figures(model, &scored);
    let Scored {
        mut gates,
        turned_away,
        failed,
        ..
    } = scored;
    gates.finish(turned_away);
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

/// ROC curve points (false-positive rate, true-positive rate): every distinct score swept,
/// highest first.
fn roc_curve(pos: &[bool], scores: &[f32]) -> Vec<(f64, f64)> {
    let (np, nn) = (
        pos.iter().filter(|p| **p).count(),
        pos.iter().filter(|p| !**p).count(),
    );
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut roc = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0usize, 0usize);
    for (k, &i) in order.iter().enumerate() {
        if pos[i] {
            tp += 1
        } else {
            fp += 1
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| scores[j] != scores[i]);
        if last_of_tie && np > 0 && nn > 0 {
            roc.push((fp as f64 / nn as f64, tp as f64 / np as f64));
        }
    }
    roc
}

fn refer_figures(model: &Model, scored: &Scored) -> ReferFigures {
    let (labels, malignant) = (&scored.labels, &scored.malignant);
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
    let group = |keep: &dyn Fn(usize) -> bool| {
        let kept: Vec<usize> = (0..pos.len()).filter(|&i| keep(i)).collect();
        let auc = crate::offline::metrics::auc(
            &kept.iter().map(|&i| malignant[i]).collect::<Vec<_>>(),
            &kept.iter().map(|&i| pos[i]).collect::<Vec<_>>(),
        );
        ReferGroup {
            n: kept.len(),
            sensitivity: sens(keep),
            specificity: spec(keep),
            auc,
        }
    };
    let groups = |keys: &[String]| -> BTreeMap<String, ReferGroup> {
        let uniq: std::collections::BTreeSet<&String> = keys.iter().collect();
        uniq.into_iter()
            .map(|k| (k.clone(), group(&|i: usize| &keys[i] == k)))
            .collect()
    };
    let benign = |l: usize| m.classes[l].risk == crate::model::manifest::Risk::Benign;
    ReferFigures {
        threshold,
        classes: ids.iter().map(|&i| m.classes[i].folder.clone()).collect(),
        malignant_images: pos.iter().filter(|p| **p).count(),
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
        per_source: groups(&scored.sources),
        per_archive: groups(&scored.archives),
        lesion_clean: scored
            .clean
            .contains(&false)
            .then(|| group(&|i: usize| scored.clean[i])),
        roc: roc_curve(&pos, malignant),
    }
}

/// A figure that may be undefined (no images of that kind): 4 decimals or "n/a".
pub fn opt4(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |x| format!("{x:.4}"))
}
