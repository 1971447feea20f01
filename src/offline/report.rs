//! `dermcam eval`'s outputs: report.md, report.json and the figures (drawn by `plots`).

use crate::offline::eval::{EvalError, EvalReport, opt4};
use crate::offline::plots::{draw_confusion, draw_roc};
use std::path::Path;

impl EvalReport {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        self.md_overview(&mut md);
        self.md_groups(&mut md);
        self.md_gates(&mut md);
        self.md_refer(&mut md);
        self.md_confusion(&mut md);
        md
    }

    /// The headline metrics and the per-class table.
    fn md_overview(&self, md: &mut String) {
        let s = &self.summary;
        *md += &format!(
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
            opt4(self.melanoma_recall),
            s.abstain_rate,
            self.failed.len()
        );
        for c in &s.per_class {
            *md += &format!(
                "| {} | {:.3} | {:.3} | {:.3} | {} | {} |\n",
                c.class,
                c.precision,
                c.recall,
                c.f1,
                c.support,
                c.auc_ovr.map_or("n/a".into(), |a| format!("{a:.3}"))
            );
        }
    }

    /// Per source, per archive and lesion-clean figures.
    fn md_groups(&self, md: &mut String) {
        *md +=
            "\n## Per source\n\n| source | n | accuracy | balanced accuracy |\n|---|---|---|---|\n";
        for (k, v) in &self.per_source {
            *md += &format!(
                "| {k} | {} | {:.4} | {:.4} |\n",
                v.n, v.accuracy, v.balanced_accuracy
            );
        }
        *md += "\n## Per archive (image collection)\n\n| archive | n | accuracy | balanced accuracy |\n|---|---|---|---|\n";
        for (k, v) in &self.per_archive {
            *md += &format!(
                "| {k} | {} | {:.4} | {:.4} |\n",
                v.n, v.accuracy, v.balanced_accuracy
            );
        }
        if let Some(c) = &self.lesion_clean {
            *md += &format!(
                "\n## Lesion-clean\n\nWithout the {} images whose lesion also appears in `train`: n={}, accuracy {:.4}, balanced accuracy {:.4}.\n",
                self.lesion_leaky_images, c.n, c.accuracy, c.balanced_accuracy
            );
        }
    }

    fn md_gates(&self, md: &mut String) {
        let g = &self.gates;
        *md += &format!(
            "\n## Gates (held back on the device; the figures above score every image)\n\n\
             | gate | images |\n|---|---|\n| too dark | {} |\n| too bright | {} |\n| blurred | {} |\n\
             | not a lesion | {} |\n| held back in all | {} of {} ({:.1}%) |\n",
            g.too_dark,
            g.too_bright,
            g.blurred,
            g.not_lesion,
            g.too_dark + g.too_bright + g.blurred + g.not_lesion,
            g.images,
            g.held_back * 100.0
        );
        for (k, v) in &g.not_lesion_per_source {
            *md += &format!("| not a lesion, source {k} | {:.1}% |\n", v * 100.0);
        }
    }

    fn md_refer(&self, md: &mut String) {
        let r = &self.refer;
        let f = opt4;
        *md += &format!(
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
            *md += &format!("| {k} | {v:.4} |\n");
        }
        *md += "\n| group | n | sensitivity | specificity | AUC |\n|---|---|---|---|---|\n";
        let clean = r.lesion_clean.iter().map(|g| ("lesion-clean", g));
        let keyed = r.per_source.iter().chain(r.per_archive.iter());
        for (k, v) in clean.chain(keyed.map(|(k, v)| (k.as_str(), v))) {
            *md += &format!(
                "| {k} | {} | {} | {} | {} |\n",
                v.n,
                f(v.sensitivity),
                f(v.specificity),
                f(v.auc)
            );
        }
        *md +=
            "\nROC curve of the malignant probability with the operating point: refer_roc.png.\n";
    }

    fn md_confusion(&self, md: &mut String) {
        let s = &self.summary;
        *md += "\n## Confusion matrix (rows = true, columns = predicted)\n\n| |";
        for c in &s.per_class {
            *md += &format!(" {} |", &c.class[..c.class.len().min(6)]);
        }
        *md += "\n|---|";
        *md += &"---|".repeat(s.per_class.len());
        *md += "\n";
        for (c, row) in s.per_class.iter().zip(&s.confusion_matrix) {
            *md += &format!("| {} |", c.class);
            for v in row {
                *md += &format!(" {v} |");
            }
            *md += "\n";
        }
        *md += "\nRow-normalised matrix: report.json `summary.confusion_matrix_normalized`; picture: confusion_matrix.png.\n";
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
