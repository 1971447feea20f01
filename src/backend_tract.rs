//! tract backend (the only file that imports tract): the ONNX model is loaded, its input fact
//! pinned to 1x3xHxW f32, optimised once, then run many times (concurrently: each run gets its
//! own state over the shared plan).

use crate::classifier::{Classifier, InferenceError};
use crate::manifest::{BundleError, Manifest};
use crate::preprocess::InputTensor;
use std::path::Path;
use std::sync::Arc;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

pub struct TractClassifier {
    plan: Arc<TypedRunnableModel>,
    outputs: usize,
}

impl TractClassifier {
    /// `threads`: 0 = all cores; 1 = tract's single-threaded executor.
    pub fn load(onnx: &Path, manifest: &Manifest, threads: usize) -> Result<Self, BundleError> {
        let err = |e: anyhow::Error| BundleError::Model {
            path: onnx.into(),
            message: format!("{e:#}"),
        };
        let (w, h) = (manifest.input.width, manifest.input.height);
        let mut model = tract_onnx::onnx().model_for_path(onnx).map_err(err)?;
        // Compare the file's declared input shape with the manifest before pinning it.
        let declared = model.input_fact(0).map_err(err)?.clone();
        if !declared.shape.is_open() {
            let dims: Vec<String> = declared
                .shape
                .dims()
                .map(|d| d.concretize().map_or("?".into(), |t| t.to_string()))
                .collect();
            let expect = ["1".to_string(), "3".into(), h.to_string(), w.to_string()];
            let matches = dims.len() == 4
                && dims
                    .iter()
                    .zip(&expect)
                    .all(|(d, e)| d == e || d.parse::<i64>().is_err());
            if !matches {
                return Err(BundleError::InputShape {
                    path: onnx.into(),
                    model: dims,
                    width: w,
                    height: h,
                });
            }
        }
        model = model
            .with_input_fact(0, f32::fact([1, 3, h as usize, w as usize]).into())
            .map_err(err)?;
        let typed = model.into_optimized().map_err(err)?;
        let out_fact = typed.output_fact(0).map_err(err)?;
        let outputs = out_fact
            .shape
            .as_concrete()
            .map(|s| s.iter().product::<usize>())
            .ok_or_else(|| BundleError::Model {
                path: onnx.into(),
                message: format!("output shape {:?} is not fixed", out_fact.shape),
            })?;
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let executor = if threads > 1 {
            Executor::multithread(threads)
        } else {
            Executor::SingleThread
        };
        let options = RunOptions {
            executor: Some(executor),
            ..Default::default()
        };
        let plan = typed.into_runnable_with_options(&options).map_err(err)?;
        Ok(TractClassifier { plan, outputs })
    }

    pub fn output_width(&self) -> usize {
        self.outputs
    }
}

impl Classifier for TractClassifier {
    fn logits(&self, input: &InputTensor) -> Result<Vec<f32>, InferenceError> {
        let e = |e: anyhow::Error| InferenceError(format!("{e:#}"));
        let tensor = Tensor::from_shape(&input.shape(), &input.data).map_err(e)?;
        let out = self.plan.run(tvec!(tensor.into())).map_err(e)?;
        let view = out[0].to_plain_array_view::<f32>().map_err(e)?;
        Ok(view.iter().cloned().collect())
    }
}
