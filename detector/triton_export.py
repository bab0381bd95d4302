"""Export a detector as a Triton Inference Server model repository (ONNX Runtime backend).

A facility with several microscopes and one GPU server deploys the shipped model (or any
inscope CenterNet model) there without writing code::

    inscope export-triton models/     # models/inscope-nuclei/{config.pbtxt,1/model.onnx}
    docker run --gpus all -p 8001:8001 -v $PWD/models:/models \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
    inscope run --model triton://gpu-server:8001/inscope-nuclei

The exported network takes the camera's own pixels (uint16 by default: half the bytes of
float32 on the wire) and does the detector's normalisation itself, so the server needs no
Python and every client sends raw frames. The prefix graph reproduces
:func:`inscope.detector.preprocess.normalise` operation for operation (same strided
subsample, same linear-interpolated percentiles in float64, same float32 subtract and
multiply) and the zero padding to the model's multiple that
:class:`inscope.detector.onnx_detector.OnnxDetector` applies after normalising, so the
outputs equal the local detector's (see the tests).

The model card travels inside ``config.pbtxt`` as the parameter ``inscope_card`` (JSON):
a remote client (:mod:`inscope.detector.triton_detector`) reads the class names,
thresholds and decoding from the server, so nothing has to be copied to the microscopes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inscope.detector.card import ModelCard, sha256_file
from inscope.detector.preprocess import DEFAULT_NORMALISATION

#: Triton data types of the input dtypes a camera delivers (``--dtype``).
TRITON_DTYPES = {"uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "float32": "TYPE_FP32"}
#: name of the exported network's input (raw pixels, before normalisation)
INPUT_NAME = "frame"
#: ``config.pbtxt`` parameter that carries the model card (JSON)
CARD_PARAMETER = "inscope_card"
#: largest subsample the percentile is taken on (:func:`preprocess.subsample`'s default)
MAX_SAMPLES = 65536
_PRE = "inscope_pre/"


@dataclass(frozen=True)
class TritonExport:
    """What :func:`export_triton` wrote.

    Attributes
    ----------
    model_dir
        ``DIR/NAME``: holds ``config.pbtxt`` and ``1/model.onnx``.
    name
        Triton model name (the ``NAME`` in ``triton://HOST:PORT/NAME``).
    input_dtype
        numpy dtype name of the input the server expects.
    outputs
        Output names, in order.
    """

    model_dir: Path
    name: str
    input_dtype: str
    outputs: tuple[str, ...]

    @property
    def config_path(self) -> Path:
        return self.model_dir / "config.pbtxt"

    @property
    def onnx_path(self) -> Path:
        return self.model_dir / "1" / "model.onnx"


def _const(name: str, value: Any, dtype: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=dtype), _PRE + name)


def normalisation_prefix(spec: dict[str, Any] | None, multiple: int, opset: int,
                         input_dtype: str = "uint16", output_name: str = "image"):
    """ONNX nodes and constants that turn raw pixels into the network's padded input.

    Parameters
    ----------
    spec
        The card's ``normalisation`` (see :func:`inscope.detector.preprocess.normalise`).
    multiple
        The card's ``input.multiple``: height and width are zero-padded at the bottom and
        right up to it after normalising, as the local detector does.
    opset
        The wrapped model's ONNX opset (>= 13 is needed here).
    input_dtype
        numpy dtype name of the raw input (:data:`TRITON_DTYPES`).
    output_name
        Name of the tensor the prefix produces (the wrapped model's input).

    Returns
    -------
    (nodes, initializers, input ValueInfo)
    """
    from onnx import TensorProto, helper

    if opset < 13:
        raise ValueError(f"The model's ONNX opset is {opset}; the Triton export needs 13 or "
                         "newer. Re-export the model with a newer opset.")
    spec = {**DEFAULT_NORMALISATION, **(spec or {})}
    method = spec.get("method", "percentile")
    elem = {"uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16,
            "float32": TensorProto.FLOAT}[input_dtype]
    P = _PRE
    nodes: list = []
    inits: list = []

    def node(op: str, ins: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, ins, [P + out], name=P + out, **attrs))
        return P + out

    def const(name: str, value: Any, dtype: Any) -> str:
        inits.append(_const(name, value, dtype))
        return P + name

    raw = INPUT_NAME
    x = node("Cast", [raw], "x", to=TensorProto.FLOAT)
    shape = node("Shape", [raw], "shape")
    i2, i3, i4 = const("i2", [2], np.int64), const("i3", [3], np.int64), const(
        "i4", [4], np.int64)
    h = node("Slice", [shape, i2, i3], "h")
    w = node("Slice", [shape, i3, i4], "w")
    if method == "percentile":
        # preprocess.subsample: the smallest stride >= spec["subsample"] that leaves at
        # most MAX_SAMPLES pixels; candidates in one Range, the first that fits by ArgMax
        step0 = max(1, int(spec["subsample"]))
        cand = const("cand", np.arange(step0, step0 + 512), np.int64)
        cnt = node("Mul", [node("Div", [h, cand], "h_s"), node("Div", [w, cand], "w_s")],
                   "count")
        fits = node("Cast", [node("LessOrEqual", [cnt, const("max_samples", [MAX_SAMPLES],
                                                                np.int64)], "fits_b")],
                    "fits", to=TensorProto.INT32)
        step = node("Add", [node("ArgMax", [fits], "first", axis=0, keepdims=1),
                            const("step0", [step0], np.int64)], "step")
        ones = const("ones2", [1, 1], np.int64)
        steps = node("Concat", [ones, step, step], "steps", axis=0)
        sub = node("Slice", [x, const("starts", [0, 0, 0, 0], np.int64),
                             const("ends", [np.iinfo(np.int64).max] * 4, np.int64),
                             const("axes", [0, 1, 2, 3], np.int64), steps], "sub")
        flat = node("Reshape", [sub, const("flat_shape", [0, -1], np.int64)], "flat")
        i1 = const("i1", [1], np.int64)
        n = node("Slice", [node("Shape", [flat], "flat_shape_v"), i1, i2], "n")
        nm1 = node("Sub", [node("Cast", [n], "n_d", to=TensorProto.DOUBLE),
                           const("one_d", [1.0], np.float64)], "nm1")

        def percentile(tag: str, q: float) -> str:
            # numpy's linear percentile: sorted[f] + (sorted[c] - sorted[f]) * (pos - f)
            pos = node("Mul", [const(f"q_{tag}", [q / 100.0], np.float64), nm1], f"pos_{tag}")
            fd = node("Floor", [pos], f"fd_{tag}")
            f = node("Cast", [fd], f"f_{tag}", to=TensorProto.INT64)
            c = node("Cast", [node("Ceil", [pos], f"cd_{tag}")], f"c_{tag}",
                     to=TensorProto.INT64)
            if tag == "lo":  # the c+1 smallest, ascending: sorted[i] = vals[i]
                k = node("Add", [c, i1], f"k_{tag}")
                vals = node("TopK", [flat, k], f"vals_{tag}", axis=-1, largest=0, sorted=1)
                nodes[-1].output.append(P + f"idx_{tag}")
                fi, ci = f, c
            else:  # the n-f largest, descending: sorted[i] = vals[n-1-i]
                k = node("Sub", [n, f], f"k_{tag}")
                vals = node("TopK", [flat, k], f"vals_{tag}", axis=-1, largest=1, sorted=1)
                nodes[-1].output.append(P + f"idx_{tag}")
                last = node("Sub", [n, i1], f"last_{tag}")
                fi = node("Sub", [last, f], f"fi_{tag}")
                ci = node("Sub", [last, c], f"ci_{tag}")
            vf = node("Cast", [node("Gather", [vals, fi], f"vf32_{tag}", axis=1)],
                      f"vf_{tag}", to=TensorProto.DOUBLE)
            vc = node("Cast", [node("Gather", [vals, ci], f"vc32_{tag}", axis=1)],
                      f"vc_{tag}", to=TensorProto.DOUBLE)
            frac = node("Sub", [pos, fd], f"frac_{tag}")
            return node("Add", [vf, node("Mul", [node("Sub", [vc, vf], f"dv_{tag}"), frac],
                                         f"step_{tag}")], f"v_{tag}")  # (N, 1) float64

        lo = percentile("lo", float(spec["low"]))
        hi = percentile("hi", float(spec["high"]))
        one = const("one", [1.0], np.float64)
        scale = node("Where", [node("Greater", [hi, lo], "spread"),
                               node("Div", [one, node("Sub", [hi, lo], "range")], "inv"),
                               one], "scale_d")
        shape4 = const("nchw1", [-1, 1, 1, 1], np.int64)
        lo32 = node("Reshape", [node("Cast", [lo], "lo32v", to=TensorProto.FLOAT), shape4],
                    "lo32")
        sc32 = node("Reshape", [node("Cast", [scale], "sc32v", to=TensorProto.FLOAT),
                                shape4], "sc32")
        y = node("Mul", [node("Sub", [x, lo32], "shifted"), sc32], "norm")
    elif method == "scale":
        div = float(spec.get("divisor", 255.0))
        y = node("Mul", [x, const("inv_div", np.float32(1.0 / div), np.float32)], "norm")
    elif method == "none":
        y = x
    else:
        raise ValueError(f"Unknown normalisation method {method!r} in the model card; use "
                         "'percentile', 'scale' or 'none'.")
    if spec.get("clip"):
        y = node("Clip", [y, const("zero_f", np.float32(0.0), np.float32),
                          const("one_f", np.float32(1.0), np.float32)], "clipped")
    # zero padding at the bottom/right up to the model's multiple, after normalising
    m = const("multiple", [max(1, int(multiple))], np.int64)
    ph = node("Mod", [node("Sub", [m, node("Mod", [h, m], "h_mod")], "h_rest"), m], "ph")
    pw = node("Mod", [node("Sub", [m, node("Mod", [w, m], "w_mod")], "w_rest"), m], "pw")
    pads = node("Concat", [const("pads_head", [0] * 6, np.int64), ph, pw], "pads", axis=0)
    nodes.append(helper.make_node("Pad", [y, pads, const("pad_value", np.float32(0.0),
                                                          np.float32)],
                                  [output_name], name=P + "pad", mode="constant"))
    vi = helper.make_tensor_value_info(raw, elem, ["n", 1, "h", "w"])
    return nodes, inits, vi


def wrap_model(model_path: str | Path, card: ModelCard, input_dtype: str = "uint16"):
    """The model at *model_path* with the normalisation prefix in front (an ONNX
    ModelProto whose input is :data:`INPUT_NAME`, raw pixels of *input_dtype*)."""
    import onnx

    model = onnx.load(str(model_path))
    in_name = card.input.get("name", "image")
    g = model.graph
    names = [i.name for i in g.input if i.name not in {t.name for t in g.initializer}]
    if in_name not in names:
        raise ValueError(f"{Path(model_path).name} has no input {in_name!r} (found {names}); "
                         "fix the card's 'input.name'.")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    nodes, inits, vi = normalisation_prefix(card.normalisation, int(
        card.input.get("multiple", 32) or 32), opset, input_dtype, in_name)
    keep_inputs = [i for i in g.input if i.name != in_name]
    del g.input[:]
    g.input.extend([vi, *keep_inputs])
    old_nodes = list(g.node)
    del g.node[:]
    g.node.extend([*nodes, *old_nodes])
    g.initializer.extend(inits)
    onnx.checker.check_model(model)
    return model


def _shape_dims(shape) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in shape.dim]


def config_pbtxt(name: str, input_dtype: str, outputs: list[tuple[str, int]],
                 card_json: str, max_batch_size: int = 8, max_queue_delay_us: int = 500,
                 instance_kind: str | None = None, instances: int = 1) -> str:
    """Text of a ``config.pbtxt`` for the ONNX Runtime backend with dynamic batching.

    Parameters
    ----------
    outputs
        (name, channels) of each output; spatial dims are variable (-1).
    max_queue_delay_us
        How long the dynamic batcher holds a lone request waiting for others to batch
        with: it adds up to this much latency when the server is idle. Under load batches
        form anyway from the requests queued while the model runs, so the default is
        short (0.5 ms); 0 gives the lowest latency with a few microscopes.
    instance_kind
        None: Triton decides (GPU when it has one); ``"KIND_GPU"`` or ``"KIND_CPU"``.
    """
    lines = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {int(max_batch_size)}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        f"    data_type: {TRITON_DTYPES[input_dtype]}",
        "    dims: [ 1, -1, -1 ]",
        "  }",
        "]",
        "output [",
    ]
    for i, (out, ch) in enumerate(outputs):
        lines += ["  {", f'    name: "{out}"', "    data_type: TYPE_FP32",
                  f"    dims: [ {int(ch)}, -1, -1 ]", "  }" + ("," if i < len(outputs) - 1
                                                              else "")]
    lines += ["]", "dynamic_batching {",
              f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}", "}"]
    if instance_kind:
        lines += ["instance_group [", "  {", f"    count: {int(instances)}",
                  f"    kind: {instance_kind}", "  }", "]"]
    lines += ["parameters {", f'  key: "{CARD_PARAMETER}"',
              f"  value {{ string_value: {json.dumps(card_json)} }}", "}"]
    return "\n".join(lines) + "\n"


def export_triton(out_dir: str | Path, model_path: str | Path | None = None, *,
                  name: str | None = None, input_dtype: str = "uint16",
                  max_batch_size: int = 8, max_queue_delay_us: int = 500,
                  instance_kind: str | None = None, instances: int = 1,
                  overwrite: bool = False) -> TritonExport:
    """Write ``out_dir/NAME/config.pbtxt`` and ``out_dir/NAME/1/model.onnx``.

    Parameters
    ----------
    out_dir
        The Triton model repository (created; other models in it are left alone).
    model_path
        An inscope CenterNet ``.onnx`` with its card; None: the shipped model.
    name
        Triton model name; default: the card's name.
    input_dtype
        ``uint16`` (default; 16-bit cameras, half the bytes of float32), ``uint8`` or
        ``float32``. A client sends frames of this dtype.
    overwrite
        Replace an existing ``out_dir/NAME``; otherwise refuse (nothing is touched).
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("export-triton needs the onnx package: pip install "
                          "'inscope[triton]'.") from None

    from inscope.detector.onnx_detector import DEFAULT_MODEL

    src = Path(model_path) if model_path is not None else DEFAULT_MODEL
    if not src.exists():
        raise FileNotFoundError(f"ONNX model {src} not found; pass --model PATH of an "
                                "inscope .onnx file with its .json card.")
    if input_dtype not in TRITON_DTYPES:
        raise ValueError(f"Input dtype {input_dtype!r} is not supported; use one of "
                         f"{sorted(TRITON_DTYPES)}.")
    card_path = ModelCard.path_for(src)
    if not card_path.exists():
        raise ValueError(f"{src.name} has no model card ({card_path.name}); the Triton export "
                         "needs one (it carries the normalisation and decoding).")
    card = ModelCard.load(card_path)
    if card.format != "inscope-centernet":
        raise ValueError(f"Only inscope CenterNet models can be exported for Triton; "
                         f"{src.name} is {card.format!r} (its letterbox and NMS run on the "
                         "client). Use an inscope model, or run it locally.")
    if card.sha256 and card.sha256 != sha256_file(src):
        raise ValueError(f"Model card {card_path} describes a different file (sha256 "
                         f"mismatch with {src.name}); re-export the model with its card.")
    name = name or card.name or src.stem
    model_dir = Path(out_dir) / name
    if model_dir.exists() and not overwrite:
        raise FileExistsError(f"{model_dir} already exists; pass --overwrite to replace it "
                              "or choose another --name.")
    model = wrap_model(src, card, input_dtype)
    dec = {"heatmap": "heatmap", "size": "size", **card.decoding}
    wanted = [dec["heatmap"], dec["size"]] + ([dec["offset"]] if dec.get("offset") else [])
    by_name = {o.name: o for o in model.graph.output}
    outputs = []
    for out in wanted:
        dims = _shape_dims(by_name[out].type.tensor_type.shape)
        ch = dims[1] if len(dims) == 4 and dims[1] > 0 else -1
        outputs.append((out, ch))
    # the card as the server will describe it: the wrapped file, its raw input
    served = asdict(card)
    served = {**served, "sha256": None,
              "input": {**card.input, "name": INPUT_NAME, "dtype": input_dtype,
                        "normalised_in_model": True},
              "triton": {"source_model": src.name, "source_sha256": sha256_file(src),
                         "outputs": wanted}}
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    text = config_pbtxt(name, input_dtype, outputs, json.dumps(served, sort_keys=True),
                        max_batch_size, max_queue_delay_us, instance_kind, instances)
    (model_dir / "config.pbtxt").write_text(text, encoding="utf-8")
    return TritonExport(model_dir, name, input_dtype, tuple(wanted))
