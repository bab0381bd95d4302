"""What a detector network costs, counted from its ONNX graph (no timing).

Parameters, multiply-adds and activation traffic per frame of the shipped model and of
the random-weight reference CNN (``bench_detector``'s latency yardstick), at the frame
sizes the benchmarks use. These are properties of the graphs, the same on every
machine, so the model card and docs/scale-out.md quote them from here instead of from
memory; ``scale_out_model`` uses :func:`graph_cost` for its GPU arithmetic.

    python -m benchmarks.model_cost [--sizes 512 1024 2048]
        [--out benchmarks/results/model_cost.json]

Needs the ``onnx`` package (the ``test`` extra).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from benchmarks._common import write_json

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (512, 1024, 2048)


def graph_cost(model_path: Path, size: int) -> dict[str, float]:
    """Multiply-adds (GMAC), activation traffic (MB: every tensor a node writes is
    float32, written once and read once) and kernel count of one ``size`` x ``size``
    frame through the model."""
    import onnx
    from onnx import shape_inference

    m = onnx.load(str(model_path))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value, dims[2].dim_value, dims[3].dim_value = 1, size, size
    m = shape_inference.infer_shapes(m)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*m.graph.value_info, *m.graph.output, *m.graph.input]}
    weights = {t.name: list(t.dims) for t in m.graph.initializer}
    macs = act = 0.0
    kernels = 0
    for n in m.graph.node:
        if n.op_type == "Constant":
            continue
        kernels += 1
        out = shapes.get(n.output[0])
        if out and all(d > 0 for d in out):
            act += 2 * 4 * math.prod(out)  # written once, read once, float32
        if n.op_type == "Conv":
            # per output element: (input channels / groups) x kernel height x width
            macs += math.prod(shapes[n.output[0]]) * math.prod(weights[n.input[1]][1:])
    return {"gmac": macs / 1e9, "activation_mb": act / 1e6, "kernels": kernels}


def parameter_count(model_path: Path) -> int:
    """Number of weights stored in the graph (its float initializers)."""
    import onnx

    m = onnx.load(str(model_path))
    return int(sum(math.prod(t.dims) for t in m.graph.initializer
                   if t.data_type == onnx.TensorProto.FLOAT))


def model_cost(model_path: Path, sizes: tuple[int, ...] = SIZES) -> dict:
    """``parameters`` and, per size, ``gmac`` / ``activation_mb`` / ``kernels``."""
    per = {}
    for s in sizes:
        c = graph_cost(model_path, s)
        per[str(s)] = {"gmac": round(c["gmac"], 4),
                       "activation_mb": round(c["activation_mb"], 1),
                       "kernels": int(c["kernels"])}
    return {"parameters": parameter_count(model_path), "per_size": per}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--out", type=Path, default=RESULTS / "model_cost.json")
    a = ap.parse_args(argv)

    from benchmarks.bench_detector import build_reference_cnn
    from inscope.detector.onnx_detector import DEFAULT_MODEL

    sizes = tuple(a.sizes)
    with tempfile.TemporaryDirectory() as tmp:
        models = {DEFAULT_MODEL.stem: model_cost(DEFAULT_MODEL, sizes),
                  "reference-cnn": model_cost(build_reference_cnn(Path(tmp)), sizes)}
    out = {"what": "counted from the ONNX graphs (not timed): parameters; per frame size, "
                   "multiply-adds of the convolutions and float32 activation traffic",
           "models": {DEFAULT_MODEL.stem: "detector/models/" + DEFAULT_MODEL.name,
                      "reference-cnn": "benchmarks/bench_detector.py build_reference_cnn "
                                       "(random weights, latency yardstick)"},
           "cost": models}
    write_json(a.out, out, indent=1)
    print(f"{'model':18s} {'parameters':>10s} " + " ".join(f"{'GMAC ' + str(s):>10s}"
                                                           for s in sizes))
    for name, c in models.items():
        print(f"{name:18s} {c['parameters']:10,d} "
              + " ".join(f"{c['per_size'][str(s)]['gmac']:10.3f}" for s in sizes))
    print(f"wrote {a.out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
