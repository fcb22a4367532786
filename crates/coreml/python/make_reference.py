"""Writes a reference ML Program with coremltools' own MIL Builder and converter
(spec 7 / CoreML6, fp16), and the outputs numpy computes for it, so the Rust
reader and executor can be checked against a package coremltools wrote.

usage: make_reference.py OUT.mlpackage OUT.json
"""

import json
import sys

import numpy as np


def main(pkg, expected_path):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    rng = np.random.default_rng(0)
    table = rng.standard_normal((64, 16)).astype(np.float32)
    w1 = (rng.standard_normal((32, 16, 1, 3)) * 0.3).astype(np.float32)
    b1 = (rng.standard_normal(32) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((4, 32, 1, 1)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(4) * 0.1).astype(np.float32)

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(1, 8), dtype=types.int32)],
        opset_version=ct.target.iOS16,
    )
    def prog(ids):
        x = mb.gather(x=table, indices=ids, axis=0)
        x = mb.transpose(x=x, perm=[0, 2, 1])
        x = mb.expand_dims(x=x, axes=[2])
        x = mb.conv(x=x, weight=w1, bias=b1, pad_type="custom", pad=[0, 0, 1, 1])
        x = mb.relu(x=x)
        x = mb.reduce_mean(x=x, axes=[3], keep_dims=True)
        x = mb.conv(x=x, weight=w2, bias=b2)
        e = mb.l2_norm(x=x)
        e = mb.squeeze(x=e, axes=[2, 3], name="embedding")
        p = mb.squeeze(x=x, axes=[2, 3])
        p = mb.softmax(x=p, axis=-1, name="probs")
        return e, p

    model = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.macOS13,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )
    model.save(pkg)

    # numpy reference with the fp16-rounded weights the package stores, fp32 compute.
    r = lambda a: a.astype(np.float16).astype(np.float32)
    table, w1, b1, w2, b2 = map(r, (table, w1, b1, w2, b2))
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]], dtype=np.int32)
    x = table[ids[0]].T  # (16, 8)
    xp = np.pad(x, ((0, 0), (1, 1)))
    h = np.stack([sum(w1[:, :, 0, j] @ xp[:, t + j] for j in range(3)) for t in range(8)], axis=1)
    h = np.maximum(h + b1[:, None], 0)
    pooled = h.mean(axis=1)
    z = w2[:, :, 0, 0] @ pooled + b2
    emb = z / np.sqrt((z * z).sum() + 1e-6)
    ex = np.exp(z - z.max())
    probs = ex / ex.sum()
    with open(expected_path, "w") as f:
        json.dump(
            {
                "ids": ids.tolist(),
                "embedding": emb.tolist(),
                "probs": probs.tolist(),
            },
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
