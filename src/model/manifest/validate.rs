//! The checks a manifest must pass beyond its JSON shape. Each names the field it rejects;
//! they run in a fixed order, so a manifest with several faults always reports the same one.

use super::{BundleError, ColourConstancy, Manifest, ResizePolicy};
use std::path::Path;

/// A rejected field and why.
type FieldError = (&'static str, String);

fn fail(field: &'static str, message: impl Into<String>) -> Result<(), FieldError> {
    Err((field, message.into()))
}

impl Manifest {
    pub(super) fn validate(&self, path: &Path) -> Result<(), BundleError> {
        self.check_classes()
            .and_then(|()| self.check_input_format())
            .and_then(|()| self.check_extra_outputs())
            .and_then(|()| self.check_normalisation())
            .and_then(|()| self.check_output_and_calibration())
            .and_then(|()| self.check_refer())
            .and_then(|()| self.check_sha256())
            .map_err(|(field, message)| BundleError::Field {
                path: path.into(),
                field,
                message,
            })
    }

    /// At least two classes, with ids 0..n-1 in order.
    fn check_classes(&self) -> Result<(), FieldError> {
        if self.classes.len() < 2 {
            return fail(
                "classes",
                format!("needs at least 2 classes, has {}", self.classes.len()),
            );
        }
        for (i, c) in self.classes.iter().enumerate() {
            if c.id != i {
                return fail(
                    "classes",
                    format!(
                        "class #{i} ({}) has id {}; ids must be 0..n-1 in order",
                        c.folder, c.id
                    ),
                );
            }
        }
        Ok(())
    }

    /// Size, channel order, layout and resizing: what the device's preprocessing supports.
    fn check_input_format(&self) -> Result<(), FieldError> {
        let i = &self.input;
        if !(16..=4096).contains(&i.width) || !(16..=4096).contains(&i.height) {
            return fail(
                "input",
                format!("size {}x{} outside 16..4096", i.width, i.height),
            );
        }
        if i.channels != "RGB" {
            return fail(
                "input.channels",
                format!("{:?} unsupported (only \"RGB\")", i.channels),
            );
        }
        if i.layout != "NCHW" {
            return fail(
                "input.layout",
                format!("{:?} unsupported (only \"NCHW\")", i.layout),
            );
        }
        if i.interpolation != "bilinear" {
            return fail(
                "input.interpolation",
                format!("{:?} unsupported (only \"bilinear\")", i.interpolation),
            );
        }
        if let ResizePolicy::CenterCrop { crop_fraction } = i.resize {
            if !(crop_fraction > 0.0 && crop_fraction <= 1.0) {
                return fail(
                    "input.resize.crop_fraction",
                    format!("{crop_fraction} not in (0, 1]"),
                );
            }
        }
        if let Some(ColourConstancy::ShadesOfGray { p }) = i.colour_constancy {
            if !(1.0..=16.0).contains(&p) {
                return fail("input.colour_constancy.p", format!("{p} not in 1..16"));
            }
        }
        Ok(())
    }

    /// The optional "not a lesion" and class-activation outputs name a graph output other
    /// than the logits.
    fn check_extra_outputs(&self) -> Result<(), FieldError> {
        if let Some(o) = &self.ood {
            if !o.threshold.is_finite() || o.output.is_empty() || o.output == "logits" {
                return fail(
                    "ood",
                    "needs a graph output name (not \"logits\") and a finite threshold",
                );
            }
        }
        if self
            .cam
            .as_ref()
            .is_some_and(|c| c.output.is_empty() || c.output == "logits")
        {
            return fail("cam.output", "needs a graph output name");
        }
        Ok(())
    }

    fn check_normalisation(&self) -> Result<(), FieldError> {
        let i = &self.input;
        if i.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || i.mean.iter().any(|m| !m.is_finite())
        {
            return fail("input.std", "mean must be finite and std positive");
        }
        Ok(())
    }

    /// Logits out, a positive temperature and an abstain threshold that is a probability.
    fn check_output_and_calibration(&self) -> Result<(), FieldError> {
        if self.output.kind != "logits" {
            return fail(
                "output.kind",
                format!(
                    "{:?} unsupported (softmax is applied on the device, so the model must output \"logits\")",
                    self.output.kind
                ),
            );
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return fail(
                "temperature",
                format!("{} must be positive", self.temperature),
            );
        }
        if !(0.0..=1.0).contains(&self.abstain_threshold) {
            return fail(
                "abstain_threshold",
                format!("{} not in [0, 1]", self.abstain_threshold),
            );
        }
        Ok(())
    }

    /// A refer section has a probability threshold and names known classes.
    fn check_refer(&self) -> Result<(), FieldError> {
        let Some(r) = &self.refer else {
            return Ok(());
        };
        if !(0.0..=1.0).contains(&r.threshold) {
            return fail("refer.threshold", format!("{} not in [0, 1]", r.threshold));
        }
        if r.classes.is_empty() {
            return fail("refer.classes", "must name at least one class");
        }
        if let Some(bad) = r.classes.iter().find(|c| self.class_by_folder(c).is_none()) {
            return fail(
                "refer.classes",
                format!("{bad:?} is not one of the classes"),
            );
        }
        Ok(())
    }

    fn check_sha256(&self) -> Result<(), FieldError> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return fail("sha256", format!("{:?} is not 64 hex digits", self.sha256));
        }
        Ok(())
    }
}
