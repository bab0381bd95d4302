"""Tiny ONNX stand-ins for the detector tests: a CenterNet-shaped graph and an
Ultralytics-shaped one with known outputs, and scenes of blobs at known centres.

Built in memory with onnx.helper so the tests run real ONNX Runtime sessions on real
models without shipping files. Import as ``from _support.onnx_models import ...``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inscope.detector.card import ModelCard, sha256_file

BOX = 16.0  # box side the CenterNet stand-in reports (input pixels)
OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, meta: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_centernet(path: Path, *, offset: bool = False, box: float = BOX,
                    heatmap_name: str = "heatmap", card: bool = True,
                    card_overrides: dict | None = None,
                    input_hw: tuple[int, int] | None = None, stride: int = 4) -> Path:
    """A fully convolutional 'CenterNet' whose heatmap is the image pooled over *stride*
    x *stride* pixels (default 4).

    *input_hw* fixes the graph's input to (1, 1, H, W), as some exports do: ONNX Runtime
    then refuses any other shape, so the detector must tile and pad to exactly that.
    """
    dims = ["N", 1, "H", "W"] if input_hw is None else [1, 1, *input_hw]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)
    outs = [helper.make_tensor_value_info(heatmap_name, TensorProto.FLOAT, ["N", 1, "h", "w"]),
            helper.make_tensor_value_info("size", TensorProto.FLOAT, ["N", 2, "h", "w"])]
    inits = [numpy_helper.from_array(np.zeros((1, 2, 1, 1), np.float32), "zero2"),
             numpy_helper.from_array(np.array([box, box], np.float32).reshape(1, 2, 1, 1),
                                     "boxwh"),
             # offset of the middle of a cell's pixels sk..sk+s-1 (sk + (s-1)/2), in cells
             numpy_helper.from_array(np.full((1, 2, 1, 1), (stride - 1) / 2 / stride,
                                             np.float32), "mid2"),
             numpy_helper.from_array(
                 (np.outer([1, 2, 1], [1, 2, 1]) / 16).astype(np.float32).reshape(1, 1, 3, 3),
                 "smooth"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    nodes = [
        helper.make_node("AveragePool", ["image"], ["p"], kernel_shape=[stride, stride],
                         strides=[stride, stride]),
        helper.make_node("Conv", ["p", "smooth"], ["p2"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["p2", "lo", "hi"], [heatmap_name]),
        helper.make_node("Mul", ["p2", "zero2"], ["z2"]),
        helper.make_node("Add", ["z2", "boxwh"], ["size"]),
    ]
    if offset:
        outs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT,
                                                    ["N", 2, "h", "w"]))
        nodes.append(helper.make_node("Add", ["z2", "mid2"], ["offset"]))
    graph = helper.make_graph(nodes, "centernet_standin", [x], outs, inits)
    _save(graph, path)
    if card:
        c = ModelCard(
            name="standin", format="inscope-centernet", classes=["cell"],
            input={"name": "image", "channels": 1, "size": None, "multiple": 32,
                   "layout": "NCHW"},
            normalisation={"method": "percentile", "low": 1.0, "high": 99.8,
                           "subsample": 4},
            scale={"object_size_px": [12, 20], "tile": 512, "overlap": 48},
            decoding={"stride": stride, "heatmap": heatmap_name, "size": "size",
                      "offset": "offset" if offset else None, "score_threshold": 0.15,
                      "peak_kernel": 3, "max_detections": 500},
            sha256=sha256_file(path))
        for k, v in (card_overrides or {}).items():
            getattr(c, k).update(v) if isinstance(v, dict) else setattr(c, k, v)
        c.save(ModelCard.path_for(path))
    return path


def build_ultralytics(path: Path, pred: np.ndarray, names: dict[int, str] | None = None,
                      size: int = 640) -> Path:
    """An 'Ultralytics export': input images (1, 3, size, size) -> output0 = *pred*."""
    pred = np.asarray(pred, np.float32)[None]  # (1, 4 + nc, N)
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(pred.shape))
    inits = [numpy_helper.from_array(pred, "pred"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["m0"]),
             helper.make_node("Add", ["pred", "m0"], ["output0"])]
    graph = helper.make_graph(nodes, "yolo_standin", [x], [y], inits)
    meta = {"names": repr(names)} if names else {}
    return _save(graph, path, meta)


def blob_scene(shape: tuple[int, int], centres: np.ndarray, *, sigma: float = 3.0,
               amplitude: float = 2000.0, background: float = 200.0, noise: float = 10.0,
               seed: int = 0, dtype=np.uint16) -> np.ndarray:
    """Gaussian 'nuclei' at *centres* (x, y) on a noisy background (pixel centres at
    integer coordinates, the frame's convention)."""
    h, w = shape
    rng = np.random.default_rng(seed)
    img = np.full(shape, background, np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    for cx, cy in centres:
        r = int(4 * sigma) + 1
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
        img[y0:y1, x0:x1] += amplitude * np.exp(
            -((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2)
            / (2 * sigma ** 2))
    img += rng.normal(0, noise, shape)
    if np.dtype(dtype).kind == "u":
        img = np.clip(img, 0, np.iinfo(dtype).max)
    return img.astype(dtype)


def grid_centres(shape: tuple[int, int], spacing: int = 40, margin: int = 24,
                 jitter: int = 0, seed: int = 0) -> np.ndarray:
    """Blob centres on a grid, on 4-px cell centres (4k + 1.5: the middle of pixels
    4k..4k+3) so decoding is exact."""
    rng = np.random.default_rng(seed)
    h, w = shape
    ys, xs = np.mgrid[margin:h - margin:spacing, margin:w - margin:spacing]
    c = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    if jitter:
        c += rng.integers(-jitter, jitter + 1, c.shape)
    return (c // 4) * 4 + 1.5


# -- tests of the stand-ins themselves (so a broken builder fails loudly here) ---------
