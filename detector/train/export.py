"""Export a trained :class:`~inscope.detector.train.model.TinyCenterNet` to ONNX + model card.

The exported graph has dynamic N, H, W axes (opset 17), outputs already decoded to the
card contract (sigmoid heatmap, size in input pixels, offset in [0, 1)), and is checked
against torch with ONNX Runtime before the card (with the file's sha256) is written.

Fine-tuning needs the torch weights again: :func:`model_from_onnx` rebuilds the torch
model from the ONNX initializers (BatchNorm is folded into the convolutions by the
exporter, so weights are loaded into an equivalent BN-free copy), so no ``.pt`` has to be
shipped next to the model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inscope.detector.card import ModelCard, sha256_file
from inscope.detector.preprocess import DEFAULT_NORMALISATION
from inscope.detector.train.model import BLUR_KERNEL, OFFSET_RANGE, Blur, TinyCenterNet

OPSET = 17
#: no practical cap: a 2048 x 2048 frame of confluent 8 px nuclei holds ~30,000 at most;
#: decoding cost grows with the peaks found, not with this number
MAX_DETECTIONS = 100_000
#: centre vote and duplicate suppression of inscope models (see decode._centre_vote and
#: decode.suppress_overlaps): a 5 x 5 window with soft agreement (sigma 0.75 cell) and
#: NMS at IoU 0.5, chosen for the anti-aliased network on simulated frames (AP on seed
#: 950000, the calibration frames; jitter on seed 970000) as the steadiest centres (box
#: jitter) at unchanged AP50 (benchmarks/decode_variants.py)
DEFAULT_VOTE = {"centre_vote": 2, "vote_sigma": 0.75, "merge_iou": 0.5}
#: a box is kept only when most of its pixels are above the frame's background (0 noise
#: sigma: its median above the background's mean; inscope.detector.signal): an empty
#: field's noise and debris gave ~26 boxes per frame, now ~8, at no cost in recall on any
#: simulated field, dim ones included; stricter values cost dim nuclei
#: (benchmarks/sparse_fields.py)
MIN_SIGNAL_SIGMA = 0.0
#: frames whose nuclei measure under this many times the smallest trained size are
#: enlarged up to it (inscope.detector.scale): the shipped network's simulated AP50 falls
#: from 0.96 at 15 px to 0.90 at 11 and 0.71 at 8 px, and rises again in the enlarged
#: frame (benchmarks/small_nuclei.py)
ENLARGE_BELOW = 2.0


def default_card(name: str = "inscope-nuclei", object_size_px=(7.0, 72.0),
                 score_threshold: float = 0.3) -> ModelCard:
    return ModelCard(
        name=name, format="inscope-centernet", classes=["nucleus"],
        input={"name": "image", "channels": 1, "size": None, "multiple": 32,
               "layout": "NCHW"},
        normalisation={k: DEFAULT_NORMALISATION[k] for k in
                       ("method", "low", "high", "subsample", "clip", "hot_pixel_sigma")},
        scale={"object_size_px": [float(object_size_px[0]), float(object_size_px[1])],
               "enlarge_below_px": ENLARGE_BELOW * float(object_size_px[0])},
        decoding={"stride": 4, "heatmap": "heatmap", "size": "size", "offset": "offset",
                  "score_threshold": float(score_threshold), "peak_kernel": 3,
                  "max_detections": MAX_DETECTIONS, "offset_range": list(OFFSET_RANGE),
                  **DEFAULT_VOTE, "min_signal_sigma": MIN_SIGNAL_SIGMA},
    )


def export_onnx(model: TinyCenterNet, path: str | Path, card: ModelCard | None = None,
                check_hw: tuple[int, int] = (256, 352), merged_heads: bool = True
                ) -> ModelCard:
    """Write *path* (.onnx) and its card (.json); return the card.

    The ONNX outputs are compared with torch on a random (1, 1, *check_hw*) input (a
    non-square size also checks the dynamic axes); a mismatch raises ``RuntimeError``.
    *merged_heads* False writes the three heads as three convolutions, as exports did
    before :func:`merge_heads` (same outputs, slower).
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"Output must be an .onnx path; got {path}. Use e.g. "
                         "--out runs/my-model.onnx.")
    path.parent.mkdir(parents=True, exist_ok=True)
    m = fold_blurs(copy.deepcopy(model).eval())
    if merged_heads:
        merge_heads(m)
    m.export_mode = True
    x = torch.zeros(1, 1, 256, 256)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), input_names=["image"],
                          output_names=["heatmap", "size", "offset"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"},
                                        "heatmap": {0: "n", 2: "h4", 3: "w4"},
                                        "size": {0: "n", 2: "h4", 3: "w4"},
                                        "offset": {0: "n", 2: "h4", 3: "w4"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    verify_onnx(m, path, check_hw)
    card = card or default_card()
    card.sha256 = sha256_file(path)
    card.save(path.with_suffix(".json"))
    return card


def _blurred_convs(model: torch.nn.Module) -> list[tuple[str, str]]:
    """(blur name, name of the convolution right after it), in forward order.

    Modules are registered in the order the forward pass calls them (Blur, then the
    strided convolution it feeds), so the next Conv2d after a Blur is its partner."""
    pairs, pending = [], None
    for name, mod in model.named_modules():
        if isinstance(mod, Blur):
            pending = name
        elif isinstance(mod, torch.nn.Conv2d) and pending is not None:
            pairs.append((pending, name))
            pending = None
    return pairs


def _set_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def fold_blurs(model: TinyCenterNet) -> TinyCenterNet:
    """Merge every :class:`~inscope.detector.train.model.Blur` into the 3 x 3 convolution
    after it: one 5 x 5 convolution, padding 2, same stride and groups (in place).

    Exact, not an approximation: Blur pads by 2 and the convolution after it has no
    padding, so the pair computes the composite kernel on the same zero-padded input.
    One convolution instead of two passes, the blur's over the larger input: what
    keeps the anti-aliased network about as fast as the plain one.
    """
    for blur_name, conv_name in _blurred_convs(model):
        conv = model.get_submodule(conv_name)
        assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3)
        w = conv.weight.detach()  # (out, in/groups, 3, 3), in/groups == 1 here
        k = BLUR_KERNEL.to(w.dtype)[None, None]
        w5 = torch.nn.functional.conv_transpose2d(w.reshape(-1, 1, 3, 3), k)
        sy, sx = conv.stride
        folded = torch.nn.Conv2d(conv.in_channels, conv.out_channels, 5, (sy, sx), 2,
                                 groups=conv.groups, bias=conv.bias is not None)
        with torch.no_grad():
            folded.weight.copy_(w5.reshape(w.shape[0], w.shape[1], 5, 5))
            if conv.bias is not None:
                assert folded.bias is not None
                folded.bias.copy_(conv.bias)
        _set_module(model, conv_name, folded)
        _set_module(model, blur_name, torch.nn.Identity())
    return model


def merge_heads(model: TinyCenterNet) -> TinyCenterNet:
    """Give *model* one 1 x 1 convolution computing all three heads (heatmap, size,
    offset: 1 + 2 + 2 channels), split after it (in place; exact).

    Why: ONNX Runtime's CPU kernels compute convolutions in blocks of 8 or 16 output
    channels (NCHWc), so three heads of 1, 2 and 2 channels cost three blocks each
    padded to 16 and three conversions back to plain layout; merged they cost one of
    each. It saved 9 % of the network's time at 512 x 512 on 2 cores (the shipped
    model's card, *Speed*). The heads' own layers stay (training and
    :func:`model_from_onnx` use them); the merged copy is what the forward pass uses.
    """
    parts = [model.hm, model.size, model.offset]
    heads = torch.nn.Conv2d(parts[0].in_channels, sum(c.out_channels for c in parts), 1)
    with torch.no_grad():
        heads.weight.copy_(torch.cat([c.weight for c in parts]))
        assert heads.bias is not None
        heads.bias.copy_(torch.cat([c.bias for c in parts if c.bias is not None]))
    model.heads = heads
    return model


def _unfold_blur(w5: np.ndarray) -> np.ndarray:
    """The 3 x 3 kernels whose convolution with the blur gives *w5* (..., 5, 5): least
    squares on the 25 x 9 linear map (exact for a folded export)."""
    b = BLUR_KERNEL.numpy().astype(np.float64)
    a = np.zeros((25, 9))
    for m in range(9):
        placed = np.zeros((5, 5))
        placed[m // 3:m // 3 + 3, m % 3:m % 3 + 3] = b
        a[:, m] = placed.ravel()
    flat = w5.reshape(-1, 25).T.astype(np.float64)
    w3 = np.linalg.lstsq(a, flat, rcond=None)[0].T
    return w3.reshape(*w5.shape[:-2], 3, 3).astype(np.float32)


def _output_difference(got: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> float:
    """Largest difference of (heatmap, size, offset) from *ref*: absolute for heatmap
    and offset, relative for size (in pixels, up to ~100)."""
    return max(float(np.max(np.abs(a - b) / (1.0 + np.abs(b) * (k == 1))))
               for k, (a, b) in enumerate(zip(got, ref, strict=True)))


def verify_onnx(model: TinyCenterNet, path: str | Path, hw: tuple[int, int] = (256, 352),
                atol: float = 1e-3) -> float:
    """Max abs difference ONNX Runtime vs torch on a random input; raise if > *atol*."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.random((1, 1, *hw), dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"image": x})
    m = copy.deepcopy(model).eval()
    m.export_mode = True
    with torch.no_grad():
        ref = [t.numpy() for t in m(torch.from_numpy(x))]
    for name, a, b in zip(("heatmap", "size", "offset"), outs, ref, strict=True):
        if a.shape != b.shape:
            raise RuntimeError(f"ONNX output {name} has shape {a.shape}, torch {b.shape}.")
    diff = _output_difference(outs, ref)
    if diff > atol:
        raise RuntimeError(f"ONNX export differs from torch by {diff:.2e} (> {atol}).")
    return diff


def model_from_onnx(path: str | Path) -> TinyCenterNet:
    """Rebuild a trainable :class:`TinyCenterNet` from an exported .onnx file.

    The exporter folds each BatchNorm into its convolution; the rebuilt model loads those
    folded weights into the convolutions (plus a bias) and sets each BatchNorm to the
    identity (mean 0, var 1, weight 1, bias 0), so its outputs equal the ONNX file's. It
    then fine-tunes like a fresh model (BN statistics adapt to the new data).
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    # the exporter writes equal tensors once (e.g. the zero biases of an untrained
    # model) and passes the copies through Identity nodes
    alias = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Identity"}

    def tensor(name: str) -> np.ndarray:
        while name not in inits and name in alias:
            name = alias[name]
        return np.asarray(inits[name])

    # the anti-aliased variant's blurs are folded into 5 x 5 strided convolutions: a
    # 5 x 5 first convolution tells the variant
    first = next((n for n in proto.graph.node if n.op_type == "Conv"), None)
    first_w = tensor(first.input[1]) if first is not None else None
    antialias = first_w is not None and first_w.shape[-2:] == (5, 5)
    # the widths at 1/2 and 1/4 resolution: the first convolution's outputs, and the
    # inputs of the last (the heads)
    last = next((n for n in reversed(proto.graph.node) if n.op_type == "Conv"), None)
    widths = ((int(first_w.shape[0]), int(tensor(last.input[1]).shape[1]))
              if first_w is not None and last is not None else (12, 24))
    model = TinyCenterNet(antialias=antialias, widths=widths)
    unfold = {model.get_submodule(c) for _, c in _blurred_convs(model)}
    # models exported before the 3 x 3 neighbourhood regression end the offset branch in
    # a bare Sigmoid (offset in [0, 1)); newer ones scale it to OFFSET_RANGE after it
    makers = {o: n.op_type for n in proto.graph.node for o in n.output}
    if makers.get("offset") == "Sigmoid":
        model.offset_range = (0.0, 1.0)
    # Conv weights / biases in graph order
    convs = []
    for n in proto.graph.node:
        if n.op_type == "Conv":
            w = tensor(n.input[1])
            b = tensor(n.input[2]) if len(n.input) > 2 else np.zeros(w.shape[0], np.float32)
            convs.append((w, b))
    torch_convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    nc = model.hm.out_channels
    if len(convs) == len(torch_convs) - 2 and convs and len(convs[-1][0]) == nc + 4:
        # merged heads (merge_heads): split the last convolution back into three
        w, b = convs.pop()
        convs += [(w[a:z], b[a:z]) for a, z in ((0, nc), (nc, nc + 2), (nc + 2, nc + 4))]
    if len(convs) != len(torch_convs):
        raise ValueError(f"{path} is not an inscope TinyCenterNet export ({len(convs)} "
                         f"convolutions, expected {len(torch_convs)}); fine-tune from a "
                         "model trained by 'inscope train'.")
    # graph order follows forward order; map torch convs in forward order too
    order = _forward_conv_order(model)
    bn_after = _bn_after_conv(model)
    with torch.no_grad():
        for (w, b), conv in zip(convs, order, strict=True):
            if conv in unfold and w.shape[-2:] == (5, 5):
                w = _unfold_blur(w)
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{path}: weight shape {w.shape} does not match "
                                 f"{tuple(conv.weight.shape)}; not a compatible model.")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bn = bn_after.get(conv)
            if bn is not None:
                # our BatchNorm layers track running statistics: the buffers exist
                assert bn.running_mean is not None and bn.running_var is not None
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(b)))
            elif conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(np.array(b)))
    return model.eval()


def _forward_conv_order(model: TinyCenterNet) -> list[torch.nn.Conv2d]:
    seen: list[torch.nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    return seen


def _bn_after_conv(model: torch.nn.Module) -> dict[torch.nn.Conv2d, torch.nn.BatchNorm2d]:
    out = {}
    for seq in model.modules():
        if isinstance(seq, torch.nn.Sequential):
            mods = list(seq)
            for a, b in zip(mods, mods[1:], strict=False):
                if isinstance(a, torch.nn.Conv2d) and isinstance(b, torch.nn.BatchNorm2d):
                    out[a] = b
    return out


def measure_latency(path: str | Path, hw: tuple[int, int] = (512, 512), runs: int = 200,
                    threads: int = 2) -> dict[str, Any]:
    """ONNX Runtime CPU latency (ms) of one batch-1 forward pass: p50/p90/p99/max."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 1, *hw), dtype=np.float32)
    for _ in range(20):
        sess.run(None, {"image": x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        ts.append((time.perf_counter() - t) * 1e3)
    p = np.percentile(ts, [50, 90, 99])
    return {"provider": "cpu", "threads": threads, "input": list(hw), "runs": runs,
            "p50_ms": round(float(p[0]), 3), "p90_ms": round(float(p[1]), 3),
            "p99_ms": round(float(p[2]), 3), "max_ms": round(float(np.max(ts)), 3)}


def reexport(src: str | Path, dst: str | Path, atol: float = 1e-4) -> float:
    """Write *src* (an exported model) again in the current export form, keeping its
    card (decoding, calibration, threshold; a new ``sha256``); return the largest
    output difference between the two files (heatmap and offset absolute, size
    relative), and raise ``RuntimeError`` above *atol*.

    For models exported before an export-only change such as :func:`merge_heads`: the
    network computes the same outputs, only faster, so the card's accuracy figures
    stay valid (the rebuild goes through :func:`model_from_onnx`, which unfolds the
    blurs by least squares: float32 rounding, ~1e-6)."""
    import onnxruntime as ort

    src, dst = Path(src), Path(dst)
    card_path = ModelCard.path_for(src)
    card = ModelCard.load(card_path) if card_path.exists() else None
    tmp = dst.with_name(dst.stem + ".reexport.onnx")
    try:
        export_onnx(model_from_onnx(src), tmp, card)
        x = np.random.default_rng(1).random((1, 1, 224, 320), dtype=np.float32)
        old, new = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                    .run(["heatmap", "size", "offset"], {"image": x}) for p in (src, tmp)]
        diff = _output_difference(new, old)
        if diff > atol:
            raise RuntimeError(f"re-exported {src.name} differs from it by {diff:.2e} "
                               f"(> {atol}); kept {src}.")
        tmp.replace(dst)
        tmp.with_suffix(".json").replace(dst.with_suffix(".json"))
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".json").unlink(missing_ok=True)
    return diff


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m inscope.detector.train.export",
        description="Write an exported model again in the current export form (same "
                    "outputs, same card; e.g. its heads merged into one convolution).")
    ap.add_argument("src", help="an .onnx exported by inscope (its .json card beside it)")
    ap.add_argument("dst", nargs="?", help="output .onnx (default: replace SRC)")
    a = ap.parse_args(argv)
    diff = reexport(a.src, a.dst or a.src)
    print(f"wrote {a.dst or a.src} (largest output difference {diff:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
