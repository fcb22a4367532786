"""A numpy forward pass of an exported ConvEmbedder package (ids input),
reading the weights through coremltools' own reader (milproto load + the
C++ blob reader), not through anectx.

The architecture is the ConvEmbedder's: token lookup; per block a 1 x k
convolution with zero "same" padding, layer norm over channels, exact GELU,
a residual when the width is unchanged, padding zeroed; masked mean over the
real tokens; a 1 x 1 projection; L2 normalisation. Computed in float64 with
the package's fp16 weights.

usage: shipped_forward.py PACKAGE IDS.json OUT.json
  IDS.json: {"ids": [[token ids of text 0], [text 1], ...]} (no padding)
  OUT.json: {"embedding": [[...], ...]}
"""

import json
import math
import sys

import numpy as np


def load_consts(path):
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(path, skip_model_load=True)
    spec = model.get_spec()
    prog = load(
        model_spec=spec,
        specification_version=spec.specificationVersion,
        file_weights_dir=model.weights_dir,
    )
    consts = {}
    eps = {}
    for op in prog.functions["main"].operations:
        if op.op_type == "const":
            consts[op.name] = np.asarray(op.val.val)
        if op.op_type == "layer_norm":
            eps[op.name] = float(op.epsilon.val)
    return consts, eps


def main(pkg, ids_path, out_path):
    c, eps = load_consts(pkg)
    erf = np.vectorize(math.erf)
    table = c["embeddings_weight"].astype(np.float64)  # (V, E)
    blocks = []
    i = 0
    while f"blocks_{i}_conv_weight" in c:
        blocks.append(
            (
                c[f"blocks_{i}_conv_weight"].astype(np.float64),  # (W, C, 1, k)
                c[f"blocks_{i}_conv_bias"].astype(np.float64),
                c[f"blocks_{i}_norm_weight"].astype(np.float64),
                c[f"blocks_{i}_norm_bias"].astype(np.float64),
                eps[f"block{i}_norm"],
            )
        )
        i += 1
    proj_w = c["proj_weight"].astype(np.float64)[:, :, 0, 0]
    proj_b = c["proj_bias"].astype(np.float64)
    with open(ids_path) as f:
        texts = json.load(f)["ids"]
    out = []
    for ids in texts:
        h = table[np.asarray(ids)].T  # (E, S): only real tokens, so no mask needed
        for w, b, g, beta, e in blocks:
            k = w.shape[3]
            p = k // 2
            hp = np.pad(h, ((0, 0), (p, p)))
            s = h.shape[1]
            y = np.stack([sum(w[:, :, 0, j] @ hp[:, t + j] for j in range(k)) for t in range(s)], axis=1)
            y = y + b[:, None]
            mu = y.mean(axis=0, keepdims=True)
            var = ((y - mu) ** 2).mean(axis=0, keepdims=True)
            y = g[:, None] * (y - mu) / np.sqrt(var + e) + beta[:, None]
            y = 0.5 * y * (1.0 + erf(y / math.sqrt(2.0)))
            if y.shape[0] == h.shape[0]:
                y = y + h
            h = y
        pooled = h.mean(axis=1)
        z = proj_w @ pooled + proj_b
        z = z / np.sqrt((z * z).sum() + 1e-6)
        out.append([float(v) for v in z])
    with open(out_path, "w") as f:
        json.dump({"embedding": out}, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
