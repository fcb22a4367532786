"""Validates .mlpackage directories with coremltools (Linux works: no prediction).

For each path argument (validate a COPY: coremltools rewrites Manifest.json):
  1. ct.utils.load_spec: the protobuf parses; spec version and model type;
  2. ct.models.MLModel(path, skip_model_load=True): the package structure;
  3. milproto load: the program parses back into PyMIL with every op's type
     inference run and every weight blob read by the C++ blob reader.
Prints one JSON object per package on stdout; exits non-zero on the first failure.
"""

import collections
import json
import sys


def main(paths):
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    for path in paths:
        spec = ct.utils.load_spec(path)
        kind = spec.WhichOneof("Type")
        if kind != "mlProgram":
            raise SystemExit(f"{path}: model type is {kind}, expected mlProgram")
        model = ct.models.MLModel(path, skip_model_load=True)
        spec2 = model.get_spec()
        prog = load(
            model_spec=spec2,
            specification_version=spec2.specificationVersion,
            file_weights_dir=model.weights_dir,
        )
        main_fn = prog.functions["main"]
        counts = collections.Counter(op.op_type for op in main_fn.operations)
        print(
            json.dumps(
                {
                    "path": path,
                    "specificationVersion": spec.specificationVersion,
                    "opset": str(main_fn.opset_version),
                    "inputs": sorted(i.name for i in spec.description.input),
                    "outputs": sorted(o.name for o in spec.description.output),
                    "ops": len(main_fn.operations),
                    "op_types": dict(sorted(counts.items())),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
