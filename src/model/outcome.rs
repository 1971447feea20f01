//! The outcome word of a result and what the screen and pages say for "not a lesion".

use serde::Serialize;

/// The one word every surface (CLI, API, captures, fleet, log, screen, page) gives a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A class is shown.
    Class,
    /// No class is confident enough.
    Uncertain,
    /// Image quality (too dark / too bright / blurred): take the picture again.
    Retake,
    /// The image does not look like a skin-lesion photo.
    NotLesion,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Class => "class",
            Outcome::Uncertain => "uncertain",
            Outcome::Retake => "retake",
            Outcome::NotLesion => "not_lesion",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the screen and pages say for a result that is not a lesion.
pub const NOT_LESION_HEADLINE: &str = "Not a skin lesion";
pub const NOT_LESION_ADVICE: &str = "Point the camera at the lesion";
