"""Independent numpy references for every MIL op the anectx exporters emit.

Each case is one op (or the short chain the exporters emit, e.g. shape ->
concat -> slice_by_index) on seeded random inputs, with the output numpy
computes from the op's definition in coremltools 9.0
(coremltools/converters/mil/mil/ops/defs/iOS15/*.py, the docstrings: formula,
defaults, parameter meaning). Nothing here is derived from anectx's executor.

Inputs and constants are fp32 (or int32), so the comparison isolates the op's
semantics from fp16 rounding. The one exception is `epsilon` of layer_norm
and l2_norm: the anectx builder stores it as an fp16 const (as the exported
graphs do), so the reference uses the fp16-rounded value.

usage: op_reference.py OUT.json
"""

import json
import math
import sys

import numpy as np

rng = np.random.default_rng(25)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def t(a):
    a = np.asarray(a)
    dtype = {"f": "fp32", "i": "int32", "b": "bool", "u": "int32"}[a.dtype.kind]
    if dtype == "fp32":
        data = [float(v) for v in a.astype(np.float32).ravel()]
    else:
        data = [int(v) for v in a.ravel()]
    return {"dtype": dtype, "shape": list(a.shape), "data": data}


CASES = []


def case(name, op, inputs, outputs, consts=None, attrs=None):
    CASES.append(
        {
            "name": name,
            "op": op,
            "inputs": {k: t(v) for k, v in inputs.items()},
            "consts": {k: t(v) for k, v in (consts or {}).items()},
            "attrs": attrs or {},
            "outputs": [t(o) for o in outputs],
        }
    )


def fp16(v):
    return float(np.float32(np.float16(v)))


# --- elementwise binary (numpy broadcasting, per the elementwise_binary docs)
x = f32(1, 6, 1, 7)
m = f32(1, 1, 1, 7)
case("add_broadcast", "add", {"x": x, "y": m}, [x + m])
case("sub_broadcast", "sub", {"x": x, "y": m}, [x - m])
case("mul_broadcast", "mul", {"x": x, "y": m}, [x * m])
case("maximum_broadcast", "maximum", {"x": x, "y": m}, [np.maximum(x, m)])
den = (rng.uniform(0.5, 2.0, (1, 6, 1, 1)) * rng.choice([-1, 1], (1, 6, 1, 1))).astype(np.float32)
num = f32(1, 6, 1, 7)
case("real_div_broadcast", "real_div", {"x": num, "y": den}, [num / den])
# the exporters' mask arithmetic: (mask - 1) * -1e4 with scalar consts
mask = (rng.uniform(size=(1, 1, 1, 9)) < 0.6).astype(np.float32)
case(
    "sub_scalar_const",
    "sub",
    {"x": mask},
    [mask - 1.0],
    consts={"y": np.array(1.0, np.float32)},
)
case(
    "mul_scalar_const",
    "mul",
    {"x": mask - 1.0},
    [(mask - 1.0) * -1e4],
    consts={"y": np.array(-1e4, np.float32)},
)
ids = rng.integers(0, 5, size=(1, 11)).astype(np.int32)
case(
    "not_equal_int",
    "not_equal",
    {"x": ids},
    [(ids != 0)],
    consts={"y": np.array(0, np.int32)},
)

# --- elementwise unary and activations
u = f32(2, 3, 1, 5, scale=2.0)
u.ravel()[:3] = 0.0  # sign(0) = 0
case("abs", "abs", {"x": u}, [np.abs(u)])
case("sign", "sign", {"x": u}, [np.sign(u)])
case("tanh", "tanh", {"x": u}, [np.tanh(u)])
case("sigmoid", "sigmoid", {"x": u}, [1.0 / (1.0 + np.exp(-u))])
erf = np.vectorize(math.erf)
g = f32(1, 8, 1, 6, scale=2.0)
case("gelu_exact", "gelu", {"x": g}, [0.5 * g * (1.0 + erf(g / math.sqrt(2.0)))], attrs={"mode": "EXACT"})
case(
    "gelu_tanh",
    "gelu",
    {"x": g},
    [0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g**3)))],
    attrs={"mode": "TANH_APPROXIMATION"},
)
case(
    "gelu_sigmoid",
    "gelu",
    {"x": g},
    [g / (1.0 + np.exp(-1.702 * g))],
    attrs={"mode": "SIGMOID_APPROXIMATION"},
)


def softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


s = f32(1, 1, 6, 6, scale=3.0)
case("softmax_last", "softmax", {"x": s}, [softmax(s, -1)], attrs={"axis": -1})
s2 = f32(1, 5, 1, 4, scale=3.0)
case("softmax_axis1", "softmax", {"x": s2}, [softmax(s2, 1)], attrs={"axis": 1})

# --- layer_norm: gamma * (x - E[x]) / sqrt(Var[x] + eps) + beta over `axes`,
# gamma/beta of shape x.shape[axes]
for name, shape, axes in [
    ("layer_norm_channels", (1, 12, 1, 5), [1]),
    ("layer_norm_last", (2, 3, 7), [-1]),
    ("layer_norm_two_axes", (1, 4, 3, 5), [1, 3]),
]:
    a = f32(*shape, scale=3.0) + 1.5
    pos = [ax % len(shape) for ax in axes]
    nshape = [shape[i] for i in pos]
    gamma = f32(*nshape) + 1.0
    beta = f32(*nshape)
    eps = 1e-5
    mu = a.mean(axis=tuple(pos), keepdims=True)
    var = ((a - mu) ** 2).mean(axis=tuple(pos), keepdims=True)
    bshape = [shape[i] if i in pos else 1 for i in range(len(shape))]
    y = gamma.reshape(bshape) * (a - mu) / np.sqrt(var + fp16(eps)) + beta.reshape(bshape)
    case(name, "layer_norm", {"x": a}, [y], consts={"gamma": gamma, "beta": beta}, attrs={"axes": axes, "epsilon": eps})

# --- reductions
r = f32(1, 5, 1, 8)
case("reduce_mean_keep", "reduce_mean", {"x": r}, [r.mean(axis=3, keepdims=True)], attrs={"axes": [3], "keep_dims": True})
case("reduce_mean_drop", "reduce_mean", {"x": r}, [r.mean(axis=(1, 3))], attrs={"axes": [1, 3], "keep_dims": False})
case("reduce_max_keep", "reduce_max", {"x": r}, [r.max(axis=1, keepdims=True)], attrs={"axes": [1], "keep_dims": True})
case("reduce_max_neg_axis", "reduce_max", {"x": r}, [r.max(axis=-1)], attrs={"axes": [-1], "keep_dims": False})

# --- conv (NCHW, weight (C_out, C_in/groups, kH, kW), pad [top, bottom, left, right])
for name, cin, cout, k in [("conv_1x3", 6, 5, 3), ("conv_1x1", 7, 4, 1), ("conv_1x5", 3, 4, 5)]:
    S = 9
    xc = f32(1, cin, 1, S)
    w = f32(cout, cin, 1, k, scale=0.4)
    b = f32(cout, scale=0.3)
    p = k // 2
    xp = np.pad(xc, ((0, 0), (0, 0), (0, 0), (p, p)))
    y = np.zeros((1, cout, 1, S), np.float64)
    for o in range(cout):
        for pos in range(S):
            y[0, o, 0, pos] = b[o] + sum(
                float(w[o, c, 0, j]) * float(xp[0, c, 0, pos + j]) for c in range(cin) for j in range(k)
            )
    case(name, "conv", {"x": xc}, [y], consts={"weight": w, "bias": b}, attrs={"pad": [0, 0, p, p]})

# --- l2_norm: x / sqrt(sum(x^2) + eps) over the last three axes, per batch
for name, shape in [("l2_norm_rank4", (1, 10, 1, 1)), ("l2_norm_batch", (3, 2, 2, 4)), ("l2_norm_rank3", (2, 3, 4))]:
    a = f32(*shape)
    lead = int(np.prod(shape[:-3])) if len(shape) > 3 else 1
    flat = a.reshape(lead, -1)
    y = (flat / np.sqrt((flat * flat).sum(axis=1, keepdims=True) + fp16(1e-6))).reshape(shape)
    case(name, "l2_norm", {"x": a}, [y], attrs={"epsilon": 1e-6})

# --- matmul: transpose_x / transpose_y swap the last two axes first;
# batch axes broadcast (numpy matmul)
for tx in (False, True):
    for ty in (False, True):
        M, K, N = 3, 4, 5
        xa = f32(*((2, 1, K, M) if tx else (2, 1, M, K)))
        ya = f32(*((3, N, K) if ty else (3, K, N)))
        xx = np.swapaxes(xa, -1, -2) if tx else xa
        yy = np.swapaxes(ya, -1, -2) if ty else ya
        case(f"matmul_tx{int(tx)}_ty{int(ty)}", "matmul", {"x": xa, "y": ya}, [np.matmul(xx, yy)], attrs={"transpose_x": tx, "transpose_y": ty})
# the attention shapes the BERT exporter emits: q^T k, then v probs^T
d, S = 8, 6
q = f32(1, 1, d, S)
kk = f32(1, 1, d, S)
case("matmul_attention_scores", "matmul", {"x": q, "y": kk}, [np.matmul(np.swapaxes(q, -1, -2), kk)], attrs={"transpose_x": True, "transpose_y": False})
pr = softmax(f32(1, 1, S, S), -1).astype(np.float32)
v = f32(1, 1, d, S)
case("matmul_attention_out", "matmul", {"x": v, "y": pr}, [np.matmul(v, np.swapaxes(pr, -1, -2))], attrs={"transpose_x": False, "transpose_y": True})

# --- split / concat / reshape / transpose / expand_dims
sp = f32(1, 12, 1, 4)
case("split_channels", "split", {"x": sp}, list(np.split(sp, 3, axis=1)), attrs={"num_splits": 3, "axis": 1})
sp2 = f32(2, 3, 8)
case("split_last", "split", {"x": sp2}, list(np.split(sp2, 4, axis=-1)), attrs={"num_splits": 4, "axis": -1})
c1, c2, c3 = f32(1, 2, 1, 5), f32(1, 3, 1, 5), f32(1, 1, 1, 5)
case("concat_channels", "concat", {"a": c1, "b": c2, "c": c3}, [np.concatenate([c1, c2, c3], axis=1)], attrs={"axis": 1})
rs = f32(1, 8, 1, 6)
case("reshape_heads", "reshape", {"x": rs}, [rs.reshape(1, 1, 8, 6)], attrs={"shape": [1, 1, 8, -1]})
rs2 = f32(1, 1, 8, 6)
case("reshape_back", "reshape", {"x": rs2}, [rs2.reshape(1, 8, 1, 6)], attrs={"shape": [1, 8, 1, -1]})
rs3 = f32(2, 3, 4)
case("reshape_flat", "reshape", {"x": rs3}, [rs3.reshape(4, 6)], attrs={"shape": [4, 6]})
tr = f32(1, 5, 7)
case("transpose_3d", "transpose", {"x": tr}, [np.transpose(tr, (0, 2, 1))], attrs={"perm": [0, 2, 1]})
tr4 = f32(2, 3, 4, 5)
case("transpose_4d", "transpose", {"x": tr4}, [np.transpose(tr4, (3, 1, 0, 2))], attrs={"perm": [3, 1, 0, 2]})
ed = f32(1, 5, 7)
case("expand_dims_2", "expand_dims", {"x": ed}, [np.expand_dims(ed, 2)], attrs={"axes": [2]})
ed2 = f32(1, 7)
case("expand_dims_1_2", "expand_dims", {"x": ed2}, [ed2.reshape(1, 1, 1, 7)], attrs={"axes": [1, 2]})
case("expand_dims_neg", "expand_dims", {"x": ed}, [np.expand_dims(ed, -1)], attrs={"axes": [-1]})

# --- gather (indices into axis; output shape x.shape[:axis] + indices.shape + x.shape[axis+1:])
table = f32(20, 6)
gi = rng.integers(0, 20, size=(1, 9)).astype(np.int32)
case("gather_rows", "gather", {"indices": gi}, [table[gi]], consts={"x": table}, attrs={"axis": 0})
t3 = f32(2, 7, 3)
gi2 = rng.integers(0, 7, size=(4,)).astype(np.int32)
case("gather_axis1", "gather", {"indices": gi2}, [np.take(t3, gi2, axis=1)], consts={"x": t3}, attrs={"axis": 1})

# --- slice_by_index: x[begin:end] per axis (stride 1, no masks)
sl = f32(1, 6, 1, 5)
case("slice_first_position", "slice_by_index", {"x": sl}, [sl[0:1, 0:6, 0:1, 0:1]], attrs={"begin": [0, 0, 0, 0], "end": [1, 6, 1, 1]})
case("slice_interior", "slice_by_index", {"x": sl}, [sl[0:1, 2:5, 0:1, 1:4]], attrs={"begin": [0, 2, 0, 1], "end": [1, 5, 1, 4]})
# the exporters' position slice: end = concat(shape(ids), [E]) from the ids' runtime shape
pos_table = f32(1, 16, 4)
pids = rng.integers(0, 30, size=(1, 7)).astype(np.int32)
case("slice_to_shape_of_ids", "slice_to", {"ids": pids}, [pos_table[:, :7, :]], consts={"x": pos_table})

# --- shape and cast
case("shape", "shape", {"x": f32(1, 3, 1, 5)}, [np.array([1, 3, 1, 5], np.int32)])
cb = rng.integers(0, 3, size=(1, 8)).astype(np.int32)
case("cast_bool_to_fp16", "cast_bool", {"x": cb}, [(cb != 0).astype(np.float32)], consts={"y": np.array(0, np.int32)}, attrs={"dtype": "fp16"})
cf = f32(2, 5, scale=3.0)
# cast to fp16 and back to fp32: the fp32 output is not rounded on the way
# out, so the fp16 rounding seen must be the cast's own
case(
    "cast_fp32_fp16_fp32",
    "cast_roundtrip",
    {"x": cf},
    [cf.astype(np.float16).astype(np.float32)],
)


def main(out):
    with open(out, "w") as f:
        json.dump({"cases": CASES}, f)


if __name__ == "__main__":
    main(sys.argv[1])
