//! Classification metrics (same definitions as `models/dermtrain/metrics.py`).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    pub auc_ovr: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n: usize,
    pub accuracy: f64,
    /// Mean recall over classes that have support.
    pub balanced_accuracy: f64,
    pub macro_f1: f64,
    pub macro_auc_ovr: f64,
    pub ece_15: f64,
    pub abstain_rate: f64,
    pub per_class: Vec<ClassMetrics>,
    pub confusion_matrix: Vec<Vec<usize>>,
    pub confusion_matrix_normalized: Vec<Vec<f64>>,
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

/// ROC AUC via the rank statistic (ties count half).
pub fn auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let npos = positive.iter().filter(|&&p| p).count();
    let nneg = positive.len() - npos;
    if npos == 0 || nneg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        for k in i..=j {
            ranks[idx[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    let rpos: f64 = (0..scores.len())
        .filter(|&k| positive[k])
        .map(|k| ranks[k])
        .sum();
    Some((rpos - npos as f64 * (npos as f64 + 1.0) / 2.0) / (npos as f64 * nneg as f64))
}

/// Expected calibration error over `bins` equal-width confidence bins.
pub fn ece(probs: &[Vec<f32>], labels: &[usize], bins: usize) -> f64 {
    let n = probs.len() as f64;
    let mut total = 0.0;
    for b in 0..bins {
        let (lo, hi) = (b as f64 / bins as f64, (b + 1) as f64 / bins as f64);
        let mut count = 0.0;
        let mut conf = 0.0;
        let mut correct = 0.0;
        for (p, &y) in probs.iter().zip(labels) {
            let c = p[argmax(p)] as f64;
            if c > lo && c <= hi {
                count += 1.0;
                conf += c;
                correct += (argmax(p) == y) as u8 as f64;
            }
        }
        if count > 0.0 {
            total += count / n * (conf / count - correct / count).abs();
        }
    }
    total
}

pub fn summarize(
    probs: &[Vec<f32>],
    labels: &[usize],
    class_names: &[String],
    abstain: f32,
) -> Summary {
    let k = class_names.len();
    let n = labels.len();
    let mut cm = vec![vec![0usize; k]; k];
    for (p, &y) in probs.iter().zip(labels) {
        cm[y][argmax(p)] += 1;
    }
    let mut per_class = Vec::with_capacity(k);
    for c in 0..k {
        let tp = cm[c][c] as f64;
        let support: usize = cm[c].iter().sum();
        let predicted: usize = (0..k).map(|r| cm[r][c]).sum();
        let precision = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let scores: Vec<f32> = probs.iter().map(|p| p[c]).collect();
        let pos: Vec<bool> = labels.iter().map(|&y| y == c).collect();
        per_class.push(ClassMetrics {
            class: class_names[c].clone(),
            precision,
            recall,
            f1,
            support,
            auc_ovr: auc(&scores, &pos),
        });
    }
    let present: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.support > 0).collect();
    let mean = |f: &dyn Fn(&ClassMetrics) -> f64| {
        present.iter().map(|m| f(m)).sum::<f64>() / present.len().max(1) as f64
    };
    let aucs: Vec<f64> = per_class.iter().filter_map(|m| m.auc_ovr).collect();
    let correct: usize = (0..k).map(|c| cm[c][c]).sum();
    let confusion_matrix_normalized = cm
        .iter()
        .map(|row| {
            let s: usize = row.iter().sum();
            row.iter()
                .map(|&v| if s > 0 { v as f64 / s as f64 } else { 0.0 })
                .collect()
        })
        .collect();
    Summary {
        n,
        accuracy: correct as f64 / n.max(1) as f64,
        balanced_accuracy: mean(&|m| m.recall),
        macro_f1: mean(&|m| m.f1),
        macro_auc_ovr: if aucs.is_empty() {
            f64::NAN
        } else {
            aucs.iter().sum::<f64>() / aucs.len() as f64
        },
        ece_15: ece(probs, labels, 15),
        abstain_rate: probs.iter().filter(|p| p[argmax(p)] < abstain).count() as f64
            / n.max(1) as f64,
        per_class,
        confusion_matrix: cm,
        confusion_matrix_normalized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_known_values() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auc(&[0.5], &[true]), None);
    }

    #[test]
    fn summary_of_a_small_case() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let probs = vec![
            vec![0.9, 0.05, 0.05],
            vec![0.2, 0.7, 0.1],
            vec![0.6, 0.3, 0.1],
            vec![0.1, 0.1, 0.8],
        ];
        let labels = vec![0, 1, 1, 2];
        let s = summarize(&probs, &labels, &names, 0.65);
        assert_eq!(s.accuracy, 0.75);
        assert!((s.balanced_accuracy - (1.0 + 0.5 + 1.0) / 3.0).abs() < 1e-12);
        assert_eq!(
            s.confusion_matrix,
            vec![vec![1, 0, 0], vec![1, 1, 0], vec![0, 0, 1]]
        );
        assert_eq!(s.per_class[0].precision, 0.5);
        assert_eq!(s.abstain_rate, 0.25);
        // bins: 0.9 right, 0.7 right, 0.6 wrong, 0.8 right
        let e = (0.1 + 0.3 + 0.6 + 0.2) / 4.0;
        assert!((s.ece_15 - e).abs() < 1e-6, "{}", s.ece_15);
    }
}
