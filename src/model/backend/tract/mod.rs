//! tract backend (this folder is the only place that imports tract): the ONNX model is
//! loaded, its input fact pinned to 1x3xHxW f32, optimised once, then run many times. Run
//! states are kept and reused across inferences (one per concurrent caller), and every model
//! in the process shares one thread pool per thread count.
//!
//! Int8 (QDQ) bundles are rewritten before tract sees them (`simplify_qdq`): tract 0.23 runs QDQ
//! convolutions in float anyway, so the `DequantizeLinear` of each int8 weight is folded into an
//! f32 constant at load (tract's own constant folding skips results over 4 MiB, so the large
//! ResNet-18 kernels were re-dequantised and re-packed on every run), and each activation
//! `QuantizeLinear` → `DequantizeLinear` pair (a cast + rounding pass per activation, in float)
//! becomes a `Clip` to its quantised range. What runs is the fp32 graph with int8-rounded
//! weights: the speed of the fp32 parent.

use crate::model::classifier::{Classifier, InferenceError, OutputMap, Outputs};
use crate::model::manifest::{BundleError, Manifest};
use crate::model::preprocess::InputTensor;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

pub struct TractClassifier {
    plan: Arc<TypedRunnableModel>,
    /// Idle run states, reused across inferences (a fresh state per call re-allocates every
    /// intermediate buffer and op state).
    states: Mutex<Vec<TypedSimpleState>>,
    outputs: usize,
    extra: OutputMap,
    /// What the QDQ rewrite did (zeros for fp32 bundles).
    pub qdq: QdqReport,
}

/// Resolved thread count: 0 = all cores.
pub fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    }
}

/// One thread pool per thread count for the whole process: a second model (the web uploads'
/// instance, a reload, bench) never adds a second pool of the same size.
fn shared_executor(threads: usize) -> Executor {
    if threads <= 1 {
        return Executor::SingleThread;
    }
    static POOLS: OnceLock<Mutex<HashMap<usize, Executor>>> = OnceLock::new();
    let mut g = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    g.entry(threads)
        .or_insert_with(|| Executor::multithread_with_name(threads, "dermcam-infer"))
        .clone()
}

/// tract's gate below which a matrix product runs on one thread (in MMM panels; tract's default
/// is 64). `$DERMCAM_TRACT_PANEL_THRESHOLD` overrides it for experiments (`dermcam bench`).
fn apply_threading_threshold() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Some(v) = std::env::var("DERMCAM_TRACT_PANEL_THRESHOLD")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            tract_linalg::multithread::set_threading_panel_threshold(v);
        }
    });
}

/// Options for `TractClassifier::load_with`.
#[derive(Debug, Clone, Copy)]
pub struct TractOptions {
    pub threads: usize,
    /// Fold weight dequantisation into constants (int8 bundles).
    pub fold_weights: bool,
    /// Remove activation Q→DQ pairs (int8 bundles).
    pub strip_activation_qdq: bool,
}

impl TractOptions {
    pub fn new(threads: usize) -> Self {
        // `DERMCAM_TRACT_QDQ=keep` runs the int8 graph as exported (for comparisons).
        // (`fold` / `strip`: only one of the two rewrites.)
        let v = std::env::var("DERMCAM_TRACT_QDQ").unwrap_or_default();
        TractOptions {
            threads,
            fold_weights: v != "keep" && v != "strip",
            strip_activation_qdq: v != "keep" && v != "fold",
        }
    }
}

impl TractClassifier {
    /// `threads`: 0 = all cores; 1 = tract's single-threaded executor.
    pub fn load(onnx: &Path, manifest: &Manifest, threads: usize) -> Result<Self, BundleError> {
        Self::load_with(onnx, manifest, TractOptions::new(threads))
    }

    pub fn load_with(
        onnx: &Path,
        manifest: &Manifest,
        o: TractOptions,
    ) -> Result<Self, BundleError> {
        let err = model_error(onnx);
        apply_threading_threshold();
        let (w, h) = (manifest.input.width, manifest.input.height);
        let (mut model, qdq) = parse_rewritten(onnx, o)?;
        check_declared_input(onnx, &model, w, h)?;
        model = model
            .with_input_fact(0, f32::fact([1, 3, h as usize, w as usize]).into())
            .map_err(&err)?;
        let names = output_names(&model).map_err(&err)?;
        let extra = OutputMap::new(&names, manifest, onnx)?;
        let typed = model.into_optimized().map_err(&err)?;
        let outputs = output_width(onnx, &typed)?;
        let options = RunOptions {
            executor: Some(shared_executor(resolve_threads(o.threads))),
            ..Default::default()
        };
        let plan = typed.into_runnable_with_options(&options).map_err(&err)?;
        let first = plan.spawn().map_err(&err)?;
        Ok(TractClassifier {
            plan,
            states: Mutex::new(vec![first]),
            outputs,
            extra,
            qdq,
        })
    }

    pub fn output_width(&self) -> usize {
        self.outputs
    }

    fn state(&self) -> Result<TypedSimpleState, anyhow::Error> {
        let idle = self.states.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(s) => Ok(s),
            None => self.plan.spawn(),
        }
    }

    fn give_back(&self, s: TypedSimpleState) {
        let mut g = self.states.lock().unwrap_or_else(|p| p.into_inner());
        // More idle states than concurrent callers ever need are dropped.
        if g.len() < 8 {
            g.push(s);
        }
    }

    /// Per-node timings: every node's share of `iterations` runs on `input`, summed by node
    /// (name, op, total ms over the runs), slowest first.
    pub fn profile(
        &self,
        input: &InputTensor,
        iterations: usize,
    ) -> Result<Vec<(String, String, f64)>, InferenceError> {
        let e = |e: anyhow::Error| InferenceError(format!("{e:#}"));
        let mut state = self.state().map_err(e)?;
        let mut acc: HashMap<usize, f64> = HashMap::new();
        for _ in 0..iterations.max(1) {
            let tensor = Tensor::from_shape(&input.shape(), &input.data).map_err(e)?;
            state
                .run_plan_with_eval(tvec!(tensor.into()), |ctx, st, node, inputs| {
                    let t = Instant::now();
                    let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                    *acc.entry(node.id).or_default() += t.elapsed().as_secs_f64() * 1e3;
                    r
                })
                .map_err(e)?;
        }
        self.give_back(state);
        let model = self.plan.model();
        let mut v: Vec<(String, String, f64)> = acc
            .into_iter()
            .map(|(id, ms)| {
                let n = model.node(id);
                (n.name.clone(), n.op().name().to_string(), ms)
            })
            .collect();
        v.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(v)
    }
}

/// A tract error as a model error for `onnx` (with its whole chain of causes).
fn model_error(onnx: &Path) -> impl Fn(anyhow::Error) -> BundleError + '_ {
    move |e| BundleError::Model {
        path: onnx.into(),
        message: format!("{e:#}"),
    }
}

/// The ONNX file parsed for tract, after the QDQ rewrite of its graph (the protobuf is dropped
/// before the model is optimised).
fn parse_rewritten(
    onnx: &Path,
    o: TractOptions,
) -> Result<(InferenceModel, QdqReport), BundleError> {
    let err = model_error(onnx);
    let onnx_fw = tract_onnx::onnx();
    let mut proto = onnx_fw.proto_model_for_path(onnx).map_err(&err)?;
    let qdq = match proto.graph.as_mut() {
        Some(g) => simplify_qdq(g, o.fold_weights, o.strip_activation_qdq).map_err(&err)?,
        None => QdqReport::default(),
    };
    let dir = onnx.parent().and_then(|d| d.to_str());
    let model = onnx_fw.parse(&proto, dir).map_err(&err)?.model;
    Ok((model, qdq))
}

/// The file's declared input shape against the manifest, before it is pinned (symbolic dims
/// match anything).
fn check_declared_input(
    onnx: &Path,
    model: &InferenceModel,
    w: u32,
    h: u32,
) -> Result<(), BundleError> {
    let declared = model.input_fact(0).map_err(model_error(onnx))?;
    if declared.shape.is_open() {
        return Ok(());
    }
    let dims: Vec<Option<i64>> = declared
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|t| t.to_string().parse().ok()))
        .collect();
    crate::model::backend::check_input_dims(onnx, &dims, w, h)
}

/// Output names in order: the outlet's label, else its node's name.
fn output_names(model: &InferenceModel) -> TractResult<Vec<String>> {
    Ok(model
        .output_outlets()?
        .iter()
        .map(|o| {
            model
                .outlet_label(*o)
                .map_or_else(|| model.node(o.node).name.clone(), str::to_string)
        })
        .collect())
}

/// Values in the first output of the optimised model, which must have a fixed shape.
fn output_width(onnx: &Path, typed: &TypedModel) -> Result<usize, BundleError> {
    let out_fact = typed.output_fact(0).map_err(model_error(onnx))?;
    out_fact
        .shape
        .as_concrete()
        .map(|s| s.iter().product::<usize>())
        .ok_or_else(|| BundleError::Model {
            path: onnx.into(),
            message: format!("output shape {:?} is not fixed", out_fact.shape),
        })
}

impl Classifier for TractClassifier {
    fn run(&self, input: &InputTensor) -> Result<Outputs, InferenceError> {
        let e = |e: anyhow::Error| InferenceError(format!("{e:#}"));
        let tensor = Tensor::from_shape(&input.shape(), &input.data).map_err(e)?;
        let mut state = self.state().map_err(e)?;
        let out = state.run(tvec!(tensor.into())).map_err(e)?;
        self.give_back(state);
        let values = |i: usize| -> Result<(Vec<usize>, Vec<f32>), InferenceError> {
            let t = out
                .get(i)
                .ok_or_else(|| InferenceError(format!("no output #{i}")))?;
            let view = t.to_plain_array_view::<f32>().map_err(e)?;
            Ok((view.shape().to_vec(), view.iter().cloned().collect()))
        };
        let logits = values(0)?.1;
        self.extra.build(logits, values)
    }
}

// ---- QDQ simplification on the ONNX graph -------------------------------------------------

mod qdq;
pub use qdq::{QdqReport, simplify_qdq};
