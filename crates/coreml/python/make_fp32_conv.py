"""Writes a small conv model with coremltools' MIL Builder and converter in
fp32 (compute_precision=FLOAT32): a package Core ML runs on the CPU or GPU,
never on the Neural Engine, that breaks no single residency rule badly
enough to be an error. `anectx coreml check` must fail it on residency.

usage: make_fp32_conv.py OUT.mlpackage
"""

import sys

import numpy as np


def main(pkg):
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((64, 32, 1, 3)) * 0.2).astype(np.float32)
    b1 = np.zeros(64, dtype=np.float32)
    w2 = (rng.standard_normal((32, 64, 1, 1)) * 0.2).astype(np.float32)

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(1, 32, 1, 128))],
        opset_version=ct.target.iOS16,
    )
    def prog(x):
        h = mb.conv(x=x, weight=w1, bias=b1, pad_type="custom", pad=[0, 0, 1, 1])
        h = mb.relu(x=h)
        h = mb.conv(x=h, weight=w2)
        return mb.reduce_mean(x=h, axes=[3], keep_dims=True, name="pooled")

    model = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.macOS13,
        compute_precision=ct.precision.FLOAT32,
        skip_model_load=True,
    )
    model.save(pkg)


if __name__ == "__main__":
    main(sys.argv[1])
