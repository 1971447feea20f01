//! Int8 (QDQ) graph rewriting before tract sees a model (see the backend's module doc): each
//! int8 weight's `DequantizeLinear` folded into an f32 constant, each activation
//! `QuantizeLinear` -> `DequantizeLinear` pair turned into a `Clip` to its quantised range.

use std::collections::{HashMap, HashSet};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// How an int8 QDQ graph was simplified for tract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QdqReport {
    /// Weight / bias `DequantizeLinear` nodes folded into f32 constants.
    pub weights_folded: usize,
    /// Activation `QuantizeLinear` → `DequantizeLinear` pairs replaced by a `Clip`.
    pub activation_pairs_removed: usize,
}

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const INT32: i32 = 6;

/// A decoded constant: dims and values.
type Const = (Vec<usize>, Vec<f64>);

/// Decode a constant tensor of the types QDQ graphs use into f64 values (+ dims).
fn decode(t: &pb::TensorProto) -> Option<Const> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = dims.iter().product();
    let raw = &t.raw_data;
    let v: Vec<f64> = match t.data_type {
        FLOAT if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        FLOAT => t.float_data.iter().map(|&x| x as f64).collect(),
        INT8 if !raw.is_empty() => raw.iter().map(|&b| b as i8 as f64).collect(),
        UINT8 if !raw.is_empty() => raw.iter().map(|&b| b as f64).collect(),
        INT32 if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        INT8 | UINT8 | INT32 => t.int32_data.iter().map(|&x| x as f64).collect(),
        _ => return None,
    };
    (v.len() == n).then_some((dims, v))
}

fn f32_tensor(name: &str, dims: &[usize], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        raw_data: {
            let mut raw = Vec::with_capacity(v.len() * 4);
            for x in v {
                raw.extend_from_slice(&x.to_le_bytes());
            }
            raw
        },
        ..Default::default()
    }
}

fn int_attr(n: &pb::NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// `(x - zero_point) * scale`, per tensor or per channel along `axis`.
fn dequantize(x: &Const, scale: &Const, zp: Option<&Const>, axis: i64) -> Option<Vec<f32>> {
    let (dims, xv) = x;
    let per_channel = scale.1.len() > 1;
    let (stride, channels) = if per_channel {
        let rank = dims.len() as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank || dims[a as usize] != scale.1.len() {
            return None;
        }
        (
            dims[a as usize + 1..].iter().product::<usize>(),
            dims[a as usize],
        )
    } else {
        (1, 1)
    };
    if let Some(z) = zp
        && z.1.len() != scale.1.len()
    {
        return None;
    }
    Some(
        xv.iter()
            .enumerate()
            .map(|(i, &q)| {
                let c = if per_channel {
                    (i / stride) % channels
                } else {
                    0
                };
                let z = zp.map_or(0.0, |z| z.1[c]);
                ((q - z) * scale.1[c]) as f32
            })
            .collect(),
    )
}

/// The graph's constants, indexed by output name.
struct Consts {
    /// Small constants (scales, zero points), decoded.
    small: HashMap<String, Const>,
    /// Large initializers (weights), by index into `g.initializer`: decoded one at a time.
    large: HashMap<String, usize>,
}

/// Small constants decoded up front; large ones (weights) only indexed, so load-time memory
/// stays near the model's own size.
fn collect_consts(g: &pb::GraphProto) -> Consts {
    const SMALL: usize = 1 << 16;
    let volume = |t: &pb::TensorProto| t.dims.iter().map(|&d| d.max(0) as usize).product::<usize>();
    let mut small: HashMap<String, Const> = HashMap::new();
    let mut large: HashMap<String, usize> = HashMap::new();
    for (i, t) in g.initializer.iter().enumerate() {
        if volume(t) > SMALL {
            large.insert(t.name.clone(), i);
        } else if let Some(d) = decode(t) {
            small.insert(t.name.clone(), d);
        }
    }
    for n in &g.node {
        if n.op_type == "Constant"
            && let Some(t) = n
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())
            && let Some(d) = decode(t)
        {
            small.insert(n.output[0].clone(), d);
        }
    }
    Consts { small, large }
}

/// The f32 constant a `DequantizeLinear` of constants evaluates to, or `None` when `n` is
/// not one (or its inputs are not all known).
fn fold_dequantize(
    g: &pb::GraphProto,
    consts: &Consts,
    n: &pb::NodeProto,
) -> Option<pb::TensorProto> {
    if n.op_type != "DequantizeLinear" || !n.domain.is_empty() {
        return None;
    }
    let big = n
        .input
        .first()
        .and_then(|i| consts.large.get(i))
        .and_then(|&ix| decode(&g.initializer[ix]));
    let x = big
        .as_ref()
        .or_else(|| n.input.first().and_then(|i| consts.small.get(i)))?;
    let s = n.input.get(1).and_then(|i| consts.small.get(i))?;
    let z = match n.input.get(2).filter(|i| !i.is_empty()) {
        None => None,
        Some(name) => Some(consts.small.get(name)?),
    };
    let v = dequantize(x, s, z, int_attr(n, "axis").unwrap_or(1))?;
    Some(f32_tensor(&n.output[0], &x.0, &v))
}

/// Step 1: each `DequantizeLinear` of a constant becomes an f32 initializer. Returns how many.
fn fold_weights_into_constants(g: &mut pb::GraphProto, consts: &Consts) -> usize {
    let mut folded = Vec::new();
    let mut keep = Vec::with_capacity(g.node.len());
    for n in std::mem::take(&mut g.node) {
        match fold_dequantize(g, consts, &n) {
            Some(t) => folded.push(t),
            None => keep.push(n),
        }
    }
    let count = folded.len();
    g.node = keep;
    g.initializer.extend(folded);
    count
}

/// What replaces one activation `QuantizeLinear` and its `DequantizeLinear` consumers.
struct ClipRewrite {
    clip: pb::NodeProto,
    /// The Clip's min and max constants.
    bounds: [pb::TensorProto; 2],
}

/// The Clip for the `QuantizeLinear` `q`, when every consumer of its output is a matching
/// `DequantizeLinear` (none a graph output) and its scale / zero point are per-tensor
/// constants.
fn activation_clip(
    g: &pb::GraphProto,
    consts: &Consts,
    graph_outputs: &HashSet<String>,
    q: &pb::NodeProto,
    users: &[usize],
) -> Option<ClipRewrite> {
    let y = &q.output[0];
    // Every consumer must be a DequantizeLinear with the same scale / zero point.
    if users.is_empty()
        || !users.iter().all(|&u| {
            let d = &g.node[u];
            d.op_type == "DequantizeLinear"
                && d.domain.is_empty()
                && d.input.first() == Some(y)
                && d.input.get(1) == q.input.get(1)
                && d.input.get(2) == q.input.get(2)
                && !graph_outputs.contains(&d.output[0])
        })
    {
        return None;
    }
    // Per-tensor scale and zero point, known at load.
    let scale = q.input.get(1).and_then(|n| consts.small.get(n))?;
    let zp_name = q.input.get(2).filter(|n| !n.is_empty());
    let zp = zp_name.and_then(|n| consts.small.get(n));
    if scale.1.len() != 1 || (zp_name.is_some() && zp.is_none_or(|z| z.1.len() != 1)) {
        return None;
    }
    let zp_type = zp_name
        .and_then(|n| g.initializer.iter().find(|t| &t.name == n))
        .map_or(UINT8, |t| t.data_type);
    let (qmin, qmax) = match zp_type {
        INT8 => (-128.0, 127.0),
        UINT8 => (0.0, 255.0),
        _ => return None,
    };
    let (s, z) = (scale.1[0], zp.map_or(0.0, |z| z.1[0]));
    let lo = format!("{y}.dermcam_clip_min");
    let hi = format!("{y}.dermcam_clip_max");
    let bounds = [
        f32_tensor(&lo, &[], &[((qmin - z) * s) as f32]),
        f32_tensor(&hi, &[], &[((qmax - z) * s) as f32]),
    ];
    let out = format!("{y}.dermcam_clip");
    let clip = pb::NodeProto {
        op_type: "Clip".into(),
        name: out.clone(),
        input: vec![q.input[0].clone(), lo, hi],
        output: vec![out],
        ..Default::default()
    };
    Some(ClipRewrite { clip, bounds })
}

/// Step 2: activation `QuantizeLinear` → `DequantizeLinear` pairs become a `Clip` to the
/// quantised range. Returns how many pairs went.
///
/// The clamp is kept: ONNX Runtime's quantiser removes a Relu / Relu6 before a
/// QuantizeLinear whose range already starts at 0 (or ends at 6), so the saturation of the
/// pair *is* the activation function. tract fuses the Clip into the preceding convolution.
fn strip_activation_pairs(g: &mut pb::GraphProto, consts: &Consts) -> usize {
    let graph_outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for inp in &n.input {
            consumers.entry(inp.clone()).or_default().push(i);
        }
    }
    let mut removed = 0;
    let mut rename: HashMap<String, String> = HashMap::new();
    let mut drop: HashSet<usize> = HashSet::new();
    let mut clips: HashMap<usize, pb::NodeProto> = HashMap::new();
    let mut bounds: Vec<pb::TensorProto> = Vec::new();
    for (qi, q) in g.node.iter().enumerate() {
        let quantize = q.op_type == "QuantizeLinear" && q.domain.is_empty() && q.output.len() == 1;
        if !quantize || graph_outputs.contains(&q.output[0]) {
            continue;
        }
        let Some(users) = consumers.get(&q.output[0]) else {
            continue;
        };
        let Some(rewrite) = activation_clip(g, consts, &graph_outputs, q, users) else {
            continue;
        };
        let out = &rewrite.clip.output[0];
        for &u in users {
            rename.insert(g.node[u].output[0].clone(), out.clone());
            drop.insert(u);
            removed += 1;
        }
        bounds.extend(rewrite.bounds);
        clips.insert(qi, rewrite.clip);
    }
    if !clips.is_empty() {
        let nodes = std::mem::take(&mut g.node);
        g.node = nodes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drop.contains(i))
            .map(|(i, n)| clips.remove(&i).unwrap_or(n))
            .map(|mut n| {
                for inp in n.input.iter_mut() {
                    if let Some(r) = rename.get(inp.as_str()) {
                        *inp = r.clone();
                    }
                }
                n
            })
            .collect();
        g.initializer.extend(bounds);
    }
    removed
}

/// Drops initializers no node or graph output reads (the int8 originals of folded weights),
/// so they are freed before tract parses.
fn drop_unused_initializers(g: &mut pb::GraphProto) {
    let used: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(|s| s.as_str()))
        .chain(g.output.iter().map(|o| o.name.as_str()))
        .collect();
    let used: HashSet<String> = used.into_iter().map(String::from).collect();
    g.initializer.retain(|t| used.contains(&t.name));
}

/// Rewrites a QDQ graph for tract (see the module docs). Returns what it changed; a graph
/// without `DequantizeLinear` nodes is left as it is.
pub fn simplify_qdq(
    g: &mut pb::GraphProto,
    fold_weights: bool,
    strip_activations: bool,
) -> TractResult<QdqReport> {
    let mut report = QdqReport::default();
    if !g.node.iter().any(|n| n.op_type == "DequantizeLinear") {
        return Ok(report);
    }
    let consts = collect_consts(g);
    if fold_weights {
        report.weights_folded = fold_weights_into_constants(g, &consts);
    }
    if strip_activations {
        report.activation_pairs_removed = strip_activation_pairs(g, &consts);
    }
    if report.weights_folded > 0 {
        drop_unused_initializers(g);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            ..Default::default()
        }
    }

    fn init(name: &str, dt: i32, dims: &[i64], raw: Vec<u8>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            data_type: dt,
            dims: dims.to_vec(),
            raw_data: raw,
            ..Default::default()
        }
    }

    #[test]
    fn qdq_weights_fold_per_channel_and_activation_pairs_go() {
        let f = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut g = pb::GraphProto {
            node: vec![
                node("DequantizeLinear", &["w", "ws", "wz"], "wf"),
                node("QuantizeLinear", &["x", "s", "z"], "xq"),
                node("DequantizeLinear", &["xq", "s", "z"], "xd"),
                node("Conv", &["xd", "wf"], "y"),
            ],
            initializer: vec![
                // Two output channels, per-channel scales (axis 0).
                init("w", INT8, &[2, 1, 1, 2], vec![1, 0xff, 4, 2]),
                init("ws", FLOAT, &[2], f(&[0.5, 0.25])),
                init("wz", INT8, &[2], vec![0, 2]),
                init("s", FLOAT, &[], f(&[0.1])),
                init("z", UINT8, &[], vec![128]),
            ],
            output: vec![pb::ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        g.node[0].attribute.push(pb::AttributeProto {
            name: "axis".into(),
            i: 0,
            ..Default::default()
        });
        let r = simplify_qdq(&mut g, true, true).unwrap();
        assert_eq!(
            r,
            QdqReport {
                weights_folded: 1,
                activation_pairs_removed: 1
            }
        );
        // Q→DQ became a Clip to the u8 range: (0-128)*0.1 .. (255-128)*0.1.
        assert_eq!(g.node.len(), 2);
        assert_eq!(g.node[0].op_type, "Clip");
        assert_eq!(g.node[0].input[0], "x");
        let bound = |name: &str| {
            decode(g.initializer.iter().find(|t| t.name == name).unwrap())
                .unwrap()
                .1[0]
        };
        assert!((bound(&g.node[0].input[1]) + 12.8).abs() < 1e-5);
        assert!((bound(&g.node[0].input[2]) - 12.7).abs() < 1e-5);
        assert_eq!(
            g.node[1].input,
            vec![g.node[0].output[0].clone(), "wf".to_string()]
        );
        let wf = g.initializer.iter().find(|t| t.name == "wf").unwrap();
        let (dims, v) = decode(wf).unwrap();
        assert_eq!(dims, vec![2, 1, 1, 2]);
        // (1-0)*0.5, (-1-0)*0.5, (4-2)*0.25, (2-2)*0.25
        assert_eq!(v, vec![0.5, -0.5, 0.5, 0.0]);
    }

    #[test]
    fn graphs_without_qdq_are_untouched() {
        let mut g = pb::GraphProto {
            node: vec![node("Relu", &["x"], "y")],
            ..Default::default()
        };
        let before = g.clone();
        assert_eq!(
            simplify_qdq(&mut g, true, true).unwrap(),
            QdqReport::default()
        );
        assert_eq!(g, before);
    }
}
