"""The tiny real ONNX models of tests/_support/onnx_models.py run in ONNX Runtime.

The CenterNet stand-in turns the image into a heatmap by 4x4 average pooling (stride 4)
and a 3x3 smoothing pool, so its peaks sit on bright blobs, exactly like a trained
model's; its size head emits a fixed box size. The Ultralytics stand-in emits a fixed
(1, 4 + nc, N) tensor (plus 0 x the input so the graph really depends on it).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from _support.onnx_models import BOX, build_centernet, build_ultralytics


def test_centernet_standin_runs_in_ort(tmp_path):
    p = build_centernet(tmp_path / "m.onnx", offset=True)
    s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    x = np.zeros((1, 1, 64, 96), np.float32)
    x[0, 0, 32:36, 52:56] = 1.0
    hm, size, off = s.run(None, {"image": x})
    assert hm.shape == (1, 1, 16, 24) and size.shape == (1, 2, 16, 24)
    assert off.shape == (1, 2, 16, 24)
    assert np.unravel_index(hm[0, 0].argmax(), hm[0, 0].shape) == (8, 13)
    assert np.allclose(size, BOX)


def test_ultralytics_standin_emits_its_tensor(tmp_path):
    pred = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)
    p = build_ultralytics(tmp_path / "y.onnx", pred, {0: "a", 1: "b"}, size=64)
    s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    (out,) = s.run(None, {"images": np.random.default_rng(0).random((1, 3, 64, 64), np.float32)})
    assert np.allclose(out[0], pred)
    assert s.get_modelmeta().custom_metadata_map["names"] == "{0: 'a', 1: 'b'}"
