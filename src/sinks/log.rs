//! The log sink: one line per classified frame on stdout (`dermcam run --log`, `demo`).

use crate::pipeline::{Sink, Update};
use crate::screen::render::SourceStatus;

/// Prints one line per classified frame.
pub struct LogSink {
    pub manifest: crate::model::manifest::Manifest,
}

impl Sink for LogSink {
    fn publish(&mut self, u: &Update) {
        let label = u
            .frame
            .as_ref()
            .and_then(|f| f.label.clone())
            .unwrap_or_else(|| format!("frame {}", u.frame.as_ref().map_or(0, |f| f.seq)));
        match (&u.prediction, &u.state.quality) {
            (Some(p), _) => {
                let (id, prob) = p.top1();
                let what = if p.uncertain {
                    format!(
                        "uncertain (best guess {} {:.1}%)",
                        self.manifest.classes[id].name,
                        prob * 100.0
                    )
                } else {
                    format!("{} {:.1}%", self.manifest.classes[id].name, prob * 100.0)
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
            (None, Some(q)) => println!("{label}: not classified: {q}"),
            (None, None) => {
                if let SourceStatus::Disconnected(m) = &u.state.source {
                    println!("camera disconnected: {m}");
                }
            }
        }
    }
}
