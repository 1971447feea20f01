//! The view model: what a result looks like to every surface (screen, web page, API, fleet,
//! log), worked out once here. The screen renderer only draws it.

use crate::model::classifier::{NOT_LESION_HEADLINE, Outcome};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum SourceStatus {
    Starting,
    Live,
    /// The camera is gone; the supervisor is reopening it.
    Disconnected(String),
    /// The source ended (slideshow without loop).
    Ended,
}

/// The status word the API and the fleet report (`live`, `disconnected: <why>`, ...).
impl std::fmt::Display for SourceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceStatus::Starting => f.write_str("starting"),
            SourceStatus::Live => f.write_str("live"),
            SourceStatus::Disconnected(why) => write!(f, "disconnected: {why}"),
            SourceStatus::Ended => f.write_str("ended"),
        }
    }
}

/// Everything the screen shows apart from the frame itself.
#[derive(Debug, Clone, Serialize)]
pub struct DisplayState {
    pub model_name: String,
    /// The sha256 of the model that made `top` (fleet results and captures name it).
    #[serde(skip)]
    pub model_sha256: String,
    /// Top classes (display name, calibrated probability), most likely first.
    pub top: Vec<(String, f32)>,
    pub uncertain: bool,
    /// The refer decision for the shown prediction (malignant classes likely): a banner.
    pub refer: bool,
    /// Calibrated probability of the refer (malignant) classes, shown in the banner.
    pub malignant_probability: f32,
    /// Why the current frame was not classified (too dark, too bright, blurred), if it was not.
    pub quality: Option<crate::pipeline::quality::QualityIssue>,
    /// The shown result does not look like a skin lesion: no class, no referral.
    pub not_lesion: bool,
    pub source: SourceStatus,
    /// Point-and-classify: the result is frozen on screen.
    pub frozen: bool,
    pub fps: f32,
    pub inference_ms: f32,
}

impl DisplayState {
    /// Show a prediction: its top 3 classes and whether it is uncertain.
    pub fn show(
        &mut self,
        p: &crate::model::classifier::Prediction,
        m: &crate::model::manifest::Manifest,
    ) {
        self.top = p
            .top_k(3, m)
            .into_iter()
            .map(|s| (s.name, s.probability))
            .collect();
        self.uncertain = p.uncertain;
        self.not_lesion = p.not_lesion;
        self.refer = p.refer;
        self.malignant_probability = p.malignant_probability;
    }

    /// The quality gate held this frame back: the previous frame's classes and referral are not
    /// this frame's, so no surface may keep showing them beside "retake".
    pub fn retake(&mut self, issue: crate::pipeline::quality::QualityIssue) {
        self.quality = Some(issue);
        self.top.clear();
        self.uncertain = false;
        self.not_lesion = false;
        self.refer = false;
        self.malignant_probability = 0.0;
    }

    /// The current result in one word (None before any result).
    pub fn outcome(&self) -> Option<Outcome> {
        if self.quality.is_some() {
            return Some(Outcome::Retake);
        }
        self.top.first()?;
        Some(if self.not_lesion {
            Outcome::NotLesion
        } else if self.uncertain {
            Outcome::Uncertain
        } else {
            Outcome::Class
        })
    }

    /// The result as a headline: the top class, "Uncertain", "Not a skin lesion" or the
    /// retake advice (None before any result). The screen and the fleet's result messages both
    /// say it this way.
    pub fn result_headline(&self) -> Option<String> {
        Some(match self.outcome()? {
            Outcome::Retake => self.quality.map(|q| q.advice())?.to_string(),
            Outcome::NotLesion => NOT_LESION_HEADLINE.into(),
            Outcome::Uncertain => "Uncertain".into(),
            Outcome::Class => self.top.first()?.0.clone(),
        })
    }

    /// The refer banner is shown only over a current classification of a lesion.
    pub fn shows_refer(&self) -> bool {
        self.refer
            && matches!(self.outcome(), Some(Outcome::Class | Outcome::Uncertain))
            && !matches!(self.source, SourceStatus::Disconnected(_))
    }
}
