//! The log sink: one line per classified frame on stdout (`dermcam run --log`, `demo`), starting
//! with the outcome word.

use crate::model::classifier::Outcome;
use crate::pipeline::view::SourceStatus;
use crate::pipeline::{Sink, Update};

/// Prints one line per classified frame. Class names come from the model that made each result.
pub struct LogSink;

impl Sink for LogSink {
    fn publish(&mut self, u: &Update) {
        let label = u
            .frame
            .as_ref()
            .and_then(|f| f.label.clone())
            .unwrap_or_else(|| format!("frame {}", u.frame.as_ref().map_or(0, |f| f.seq)));
        match (&u.prediction, &u.model, &u.state.quality) {
            (Some(p), Some(model), _) => {
                let classes = &model.manifest.classes;
                let (id, prob) = p.top1();
                let name = classes.get(id).map_or("?", |c| c.name.as_str());
                let what = match p.outcome() {
                    Outcome::NotLesion => format!(
                        "not_lesion (score {:.0}, best guess {name} {:.1}%)",
                        p.ood_score.unwrap_or(f32::NAN),
                        prob * 100.0
                    ),
                    Outcome::Uncertain => {
                        format!("uncertain (best guess {name} {:.1}%)", prob * 100.0)
                    }
                    _ => format!("class {name} {:.1}%", prob * 100.0),
                };
                let what = format!(
                    "{what}, {} (malignant {:.1}%)",
                    if p.refer { "REFER" } else { "no refer" },
                    p.malignant_probability * 100.0
                );
                let ms = u.timings.map_or(0.0, |t| t.inference_ms);
                println!(
                    "{label}: {what}{} [{ms:.0} ms]",
                    if u.state.frozen {
                        " (frozen, flip-averaged)"
                    } else {
                        ""
                    }
                );
            }
            (_, _, Some(q)) => println!("{label}: retake ({}): {}", q.as_str(), q.advice()),
            _ => {
                if let SourceStatus::Disconnected(m) = &u.state.source {
                    println!("camera disconnected: {m}");
                }
            }
        }
    }
}
