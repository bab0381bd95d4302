"""The ONNX Runtime detector: inscope CenterNet-style models and Ultralytics YOLO exports.

One object owns one ONNX Runtime session. ``detect`` runs the whole per-frame path:
check input -> normalise (card) -> rescale to the model's object size -> pad or tile ->
``session.run`` -> decode (card) -> map boxes back to the frame's pixels -> clip.

Formats
-------
``inscope-centernet``
    Needs a model card (``<model>.json``, see :mod:`inscope.detector.card`). Input "image"
    (N, 1, H, W) float32, outputs "heatmap" (N, C, H/s, W/s) sigmoid-ed, "size"
    (N, 2, H/s, W/s) box w, h in input pixels, optional "offset" (N, 2, H/s, W/s); the
    names, stride and thresholds come from the card's ``decoding``.
``ultralytics``
    YOLOv8 / YOLO11 ``model.export(format="onnx")`` files, recognised from their
    signature (one input (1, 3, h, w), one output (1, 4 + nc, N)); no card needed.
    Frames are letterboxed (gray 114 padding) and replicated to 3 channels.

Large frames
------------
A fully convolutional model runs on the whole frame in one call when the (rescaled)
frame's longer side is at most ``scale.tile_above`` (default 2560 px: a 2048x2048 frame
runs whole, which on CPU is faster than tiling because no overlap is computed twice).
Bigger frames, models with a fixed input size, or ``tile=...`` use overlapping tiles
merged by the keep-by-centre rule (:mod:`inscope.detector.tiling`).
"""

from __future__ import annotations

import ast
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inscope.acquisition.frame import Frame
from inscope.detector import preprocess as pp
from inscope.detector.base import STAMP_DETECT_END, Detections, begin_detect, object_size_px
from inscope.detector.card import ModelCard, sha256_file
from inscope.detector.decode import CENTERNET_DEFAULTS, decode_centernet, decode_ultralytics
from inscope.detector.mirror import average_views, check_views, mirrored_batch
from inscope.detector.providers import LAST_CHOICE, create_session
from inscope.detector.scale import auto_scale_factor, measure_objects
from inscope.detector.tiling import keep_owned, tile_grid

log = logging.getLogger(__name__)


MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "inscope-nuclei.onnx"
FORMATS = ("inscope-centernet", "ultralytics")
LETTERBOX_GRAY = 114


def default_model_path() -> Path:
    """Path of the shipped default model (it may not exist in a source checkout)."""
    return DEFAULT_MODEL


#: a stream of Frames re-measures its object size (auto scale) every this many frames
AUTO_SCALE_EVERY = 50


def _say_scale(det: Any, est: Any, f: float) -> None:
    """Log a measured rescale when it changes (by more than 5 %): an enlarged frame costs
    the factor's square in time, and the user should know why and how to fix it."""
    last = getattr(det, "_said_scale", 1.0)
    if abs(f - last) <= 0.05 * last:
        return
    det._said_scale = f
    if f == 1.0:
        log.info("auto scale: frames back at their own scale")
        return
    size = f"{est.size_px:.1f} px" if est is not None else "?"
    given = getattr(det, "enlarge_below_px", None)
    why = (f"under the enlargement size given ({given:g} px)" if given is not None and f > 1
           else f"outside what {getattr(det, 'name', 'the model')} does well at")
    log.info("auto scale: objects measure %s, %s: frames are %s %.2fx for the detector "
             "(%.1fx the time). Set object_size_px= (or object_size_um=) to fix the "
             "scale, or auto_scale=False.", size, why, "enlarged" if f > 1 else "shrunk",
             f, f * f)


class OnnxDetector:
    """Detector backed by one ONNX Runtime session.

    Parameters
    ----------
    model_path
        .onnx file; None loads the shipped ``detector/models/inscope-nuclei.onnx``.
    provider
        ``"auto"`` (TensorRT, CUDA, then CPU: whichever really runs), ``"tensorrt"``,
        ``"cuda"`` or ``"cpu"``. The one in use is :attr:`provider`.
    threads
        ONNX Runtime intra-op threads (None: one per core).
    spinning
        What idle intra-op threads do: ``"off"`` sleep (kinder to the camera and control
        threads: lower p99 in the live loop, on 2 cores and on 16), ``"run"`` spin only
        while a frame runs, ``"on"`` spin between frames too (lowest median alone);
        ``True`` / ``False`` = ``"on"`` / ``"off"``. None:
        :func:`inscope.detector.providers.default_spinning`.
    score_threshold
        Overrides the card's ``decoding.score_threshold``.
    object_size_px
        Typical object diameter in this frame's pixels; frames are rescaled so it matches
        the card's ``scale.object_size_px``. Default: measured (:mod:`inscope.detector.scale`),
        and the frame shrunk only when the objects are clearly above the trained range,
        enlarged only when they measure under the card's ``scale.enlarge_below_px`` (the
        shipped model: 14 px; ``last_scale`` says what was done).
    object_size_um
        Typical object diameter in µm; with a Frame's ``pixel_size_um`` it gives
        ``object_size_px`` per frame (ignored for bare arrays).
    auto_scale
        Measure the object size when none is given (see *object_size_px*); False keeps
        every frame at its own scale. Bare arrays are measured on every call; a stream of
        Frames (same shape and pixel size) every ``AUTO_SCALE_EVERY`` frames (~1 ms each
        at 512x512), since the magnification does not change between two frames.
    tile
        None: decide by frame size (see module doc); False: never tile; True: tile with
        the card's ``scale.tile``; an int: tile size in model pixels.
    overlap
        Tile overlap in model pixels (default: the card's ``scale.overlap``, else the
        largest trained object size plus two strides).
    warmup
        Run once on a dummy frame now, so the first real frame is not slow.
    mirror_views
        1 (default): the frame as it is. 2 or 4: the network's outputs averaged over the
        frame and its mirror images (left-right; also up-down and both), run as one
        batch (:mod:`inscope.detector.mirror`): steadier, tighter boxes for 2x / 4x the
        network's time. CenterNet-format models only.
    enlarge_below_px
        Enlarge frames whose objects measure under this many pixels up to it (with
        *auto_scale*). Default: the card's ``scale.enlarge_below_px``, where the network
        starts losing objects (14 px for the shipped model): only what it needs, since
        an enlargement by f costs f² in time. A larger value trades time for accuracy -
        the shipped network's boxes are best on nuclei of ~30-40 px (model card,
        *Accuracy for time*) - up to the largest trained size.
    """

    def __init__(self, model_path: str | Path | None = None, *, provider: str = "auto",
                 threads: int | None = None, score_threshold: float | None = None,
                 object_size_px: float | None = None, object_size_um: float | None = None,
                 tile: bool | int | None = None, overlap: int | None = None,
                 auto_scale: bool = True, spinning: bool | str | None = None,
                 warmup: bool = True, mirror_views: int = 1,
                 enlarge_below_px: float | None = None) -> None:
        mirror_views = check_views(mirror_views)
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL
        if not path.exists():
            raise FileNotFoundError(
                f"ONNX model {path} not found. Pass the path of an .onnx file, train one "
                "with 'inscope train', or use the no-learning baseline (model='classical')."
            )
        self.model_path = path
        self.session, self.provider = create_session(path, provider, threads, spinning)
        #: one line: the provider in use and why each faster one was not
        self.provider_note: str = LAST_CHOICE.get("note", "")
        self.threads = threads
        self.card = self._read_card(path)
        self.format = self.card.format
        if mirror_views != 1 and self.format != "inscope-centernet":
            raise ValueError(
                f"mirror_views={mirror_views} needs a CenterNet-format model (heatmap, "
                f"size and offset maps to mirror back); {path.name} is {self.format!r}. "
                "Use mirror_views=1 with it.")
        self.mirror_views = mirror_views
        self.enlarge_below_px = _check_enlarge(enlarge_below_px, self.card.scale, path.name)
        self.class_names: tuple[str, ...] = tuple(self.card.classes) or ("object",)
        self.name = self.card.name or path.stem
        self.score_threshold = score_threshold
        self.object_size_px = object_size_px
        self.object_size_um = object_size_um
        self.auto_scale = auto_scale
        self.last_scale: float = 1.0
        self._scale_cache: tuple[tuple, int, float] | None = None  # key, age, factor
        self.tile = tile
        self.overlap = overlap
        self.last_timing: dict[str, float] = {}
        self._buffers = threading.local()  # see _input_buffer
        ins = self.session.get_inputs()
        want = self.card.input.get("name")
        self._in = next((i for i in ins if i.name == want), ins[0])
        self._out_names = [o.name for o in self.session.get_outputs()]
        self._fixed_hw = self._input_hw()
        why = self.provider_note.partition(" (")[2].rstrip(")")
        log.info("detector %s (%s) runs on ONNX Runtime %s provider%s%s", self.name,
                 self.format, self.provider.upper(),
                 f", {threads} threads" if threads else "", f" ({why})" if why else "")
        if warmup:
            side = 64 * int(self.card.input.get("multiple", 32) or 32)
            h, w = self._fixed_hw or (min(side, 256), min(side, 256))
            self.detect(np.zeros((h, w), np.float32))

    # -- model format ------------------------------------------------------------------
    def _signature(self) -> str:
        ins = [f"{i.name}{list(i.shape)}" for i in self.session.get_inputs()]
        outs = [f"{o.name}{list(o.shape)}" for o in self.session.get_outputs()]
        return f"inputs {ins}, outputs {outs}"

    def _read_card(self, path: Path) -> ModelCard:
        card_path = ModelCard.path_for(path)
        if card_path.exists():
            card = ModelCard.load(card_path)
            if card.sha256 and card.sha256 != sha256_file(path):
                raise ValueError(
                    f"Model card {card_path} describes a different file (sha256 mismatch "
                    f"with {path.name}). Re-export the model with its card, or clear the "
                    "card's 'sha256' if you edited the model on purpose.")
            if card.format not in FORMATS:
                raise ValueError(f"Model card {card_path} has unknown format "
                                 f"{card.format!r}; known formats: {list(FORMATS)}.")
            self._check_signature(card, str(card_path))
            if card.format == "inscope-centernet" and not card.decoding:
                # (hand-written or trimmed cards: the offset range, centre vote and score
                # calibration a trained model needs live there; mAP50-95 fell 0.87 -> 0.68)
                log.warning("Model card %s has no 'decoding': the plain CenterNet decoding "
                            "is used (stride 4, no centre vote, uncalibrated scores); copy "
                            "the 'decoding' section that 'inscope train' wrote.", card_path)
            return card
        sig_card = self._card_from_signature(path)
        outs = {o.name for o in self.session.get_outputs()}
        if sig_card is None and {"heatmap", "size"} <= outs:
            # an inscope model copied without its card: its decoding and scale live
            # there, so say which file to bring rather than "not a known format"
            raise ValueError(
                f"{path.name} looks like an inscope CenterNet model (found "
                f"{self._signature()}) but its model card {card_path.name} is missing "
                f"from {card_path.parent}; copy the .json that 'inscope train' wrote beside "
                "it (it holds the decoding and scale settings).")
        if sig_card is None:
            raise ValueError(
                f"{path.name} has no model card ({card_path.name}) and its signature is not "
                f"a known format: found {self._signature()}. Expected either an inscope "
                "CenterNet model (input 'image' [N,1,H,W], outputs 'heatmap' [N,C,h,w] and "
                "'size' [N,2,h,w]) with its JSON card, or an Ultralytics YOLOv8/YOLO11 export "
                "(input [1,3,H,W], one output [1,4+nc,N]).")
        return sig_card

    def _check_signature(self, card: ModelCard, where: str) -> None:
        ins = {i.name: i.shape for i in self.session.get_inputs()}
        outs = {o.name: o.shape for o in self.session.get_outputs()}
        if card.format == "inscope-centernet":
            dec = {"heatmap": "heatmap", "size": "size", **card.decoding}
            want_in = card.input.get("name", "image")
            want_out = [dec["heatmap"], dec["size"]] + ([dec["offset"]]
                                                        if dec.get("offset") else [])
            bad = (want_in not in ins or any(n not in outs for n in want_out)
                   or len(ins[want_in]) != 4
                   or any(len(outs[n]) != 4 for n in want_out))
            if bad:
                raise ValueError(
                    f"Model does not match its card {where}: expected input {want_in!r} "
                    f"[N,1,H,W] and outputs {want_out} each [N,*,H/s,W/s]; found "
                    f"{self._signature()}. Fix the card's 'input.name'/'decoding' names or "
                    "re-export the model.")
        else:
            if len(ins) != 1 or len(outs) != 1 or len(next(iter(outs.values()))) != 3:
                raise ValueError(
                    f"Model does not match its card {where} (format 'ultralytics'): "
                    f"expected one input [1,3,H,W] and one output [1,4+nc,N]; found "
                    f"{self._signature()}.")

    def _card_from_signature(self, path: Path) -> ModelCard | None:
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            return None
        ishape, oshape = ins[0].shape, outs[0].shape
        if len(ishape) != 4 or ishape[1] != 3 or len(oshape) != 3:
            return None
        meta = self.session.get_modelmeta().custom_metadata_map
        names = _parse_names(meta.get("names"))
        rows = oshape[1] if isinstance(oshape[1], int) else None
        cols = oshape[2] if isinstance(oshape[2], int) else None
        nc = None
        for d in (rows, cols):
            if d is not None and 4 < d < 1000 and (not names or d == 4 + len(names)):
                nc = d - 4
                break
        if nc is None and names:
            nc = len(names)
        if nc is None:
            return None
        if not names:
            names = [f"class{i}" for i in range(nc)]
        h, w = ishape[2], ishape[3]
        size = [h, w] if isinstance(h, int) and isinstance(w, int) else [640, 640]
        return ModelCard(
            name=meta.get("description", path.stem).split(" ")[0] or path.stem,
            format="ultralytics", classes=names,
            input={"name": ins[0].name, "channels": 3, "size": size, "multiple": 32,
                   "layout": "NCHW"},
            normalisation={"method": "auto"}, decoding={})

    def _input_hw(self) -> tuple[int, int] | None:
        size = self.card.input.get("size")
        if size:
            return int(size[0]), int(size[1])
        shape = self._in.shape
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            return shape[2], shape[3]
        return None

    # -- per-frame path ----------------------------------------------------------------
    def _normalise(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        spec = dict(self.card.normalisation or {})
        if spec.get("method", "auto") == "auto":
            # Ultralytics nets were trained on 8-bit RGB / 255: keep that for uint8,
            # stretch anything deeper robustly.
            spec = ({"method": "scale", "divisor": 255.0} if img.dtype == np.uint8
                    else {"method": "percentile", "clip": True})
        return pp.normalise(img, spec, out)

    def _factor(self, frame: Frame | np.ndarray, img: np.ndarray) -> float:
        card_range = self.card.scale.get("object_size_px")
        size = object_size_px(frame, self.object_size_px, self.object_size_um)
        if size is not None:
            f = pp.scale_factor(size, card_range)
        elif self.auto_scale and card_range:
            key = ((img.shape, float(frame.pixel_size_um)) if isinstance(frame, Frame)
                   else None)
            c = self._scale_cache
            if key is not None and c is not None and c[0] == key and c[1] < AUTO_SCALE_EVERY:
                f = c[2]
                self._scale_cache = (key, c[1] + 1, f)
            else:
                est = measure_objects(img)
                # (the factor in use for this field of view, if any: see HYSTERESIS)
                prev = c[2] if key is not None and c is not None and c[0] == key else None
                below = (self.card.scale.get("enlarge_below_px")
                         if self.enlarge_below_px is None else self.enlarge_below_px)
                f = auto_scale_factor(est, card_range, below, img.shape, previous=prev)
                self._scale_cache = (key, 1, f) if key is not None else None
                _say_scale(self, est, f)
        else:
            f = 1.0
        self.last_scale = f
        return f

    def detect(self, frame: Frame | np.ndarray) -> Detections:
        """Find objects in *frame* (a :class:`Frame` or a 2-D array of any size/dtype).

        Boxes come back in the frame's own pixels, clipped to it. The frame's ``stamps``
        get ``detect_start`` / ``detect_end``; ``last_timing`` holds the pre-processing,
        ``session.run`` and decoding times in ms of this call.
        """
        call = begin_detect(frame)
        if self.format == "ultralytics":
            boxes, scores, cls, tm = self._detect_ultralytics(call.image)
        else:
            t_scale = time.monotonic_ns()
            factor = self._factor(frame, call.image)
            t_scale = time.monotonic_ns() - t_scale
            boxes, scores, cls, tm = self._detect_centernet(call.image, factor)
            tm["pre_ms"] += t_scale / 1e6  # the object-size estimate is pre-processing
        t_post = time.monotonic_ns()
        # (a box must hold an object: an empty field's noise and debris, stretched to a
        # cell's contrast, are not one; inscope.detector.signal)
        det = call.finish(boxes, scores, cls, self.class_names,
                          self.card.decoding.get("min_signal_sigma"))
        t1 = det.stamps[STAMP_DETECT_END]
        tm["post_ms"] += (t1 - t_post) / 1e6
        tm["total_ms"] = (t1 - call.t0_ns) / 1e6
        self.last_timing = tm
        return det

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.mirror_views != 1:
            return self._run_mirrored(x)
        outs = self.session.run(self._out_names, {self._in.name: x})
        return {n: o[0] for n, o in zip(self._out_names, outs, strict=True)}

    def _run_mirrored(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs averaged over :attr:`mirror_views` mirror images of *x*: one
        batch, or one run per view when the graph's batch size is fixed."""
        views = self.mirror_views
        dec = {**CENTERNET_DEFAULTS, **self.card.decoding}  # the stride decoding uses
        stride = int(dec["stride"])
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise ValueError(f"mirror views need an input whose sides are multiples of the "
                             f"stride {stride}; got {x.shape[-2:]} (a fixed-size graph "
                             "whose size is not: use mirror_views=1).")
        batch = mirrored_batch(x, views, out=self._mirror_buffer((views, *x.shape[1:])))
        if isinstance(self._in.shape[0], int):  # a graph fixed to one batch size
            runs = [self.session.run(self._out_names, {self._in.name: batch[k:k + 1]})
                    for k in range(views)]
            outs = [np.concatenate(parts) for parts in zip(*runs, strict=True)]
        else:
            outs = self.session.run(self._out_names, {self._in.name: batch})
        return average_views(dict(zip(self._out_names, outs, strict=True)), views, stride,
                             dec.get("offset"))

    def _detect_centernet(self, img: np.ndarray, factor: float):
        t0 = time.perf_counter_ns()
        if abs(factor - 1.0) < 1e-3:
            factor, x = 1.0, None  # normalised later, straight into the network input
            h, w = img.shape
        else:
            x = pp.resize(self._normalise(img), factor)
            h, w = x.shape
        mult = int(self.card.input.get("multiple", 32) or 32)
        dec = self.card.decoding
        thr = self.score_threshold
        tiles = self._tiles(h, w)
        run_ns = post_ns = 0
        if tiles is None:
            # zero-padded input (bottom/right, so coordinates need no shift); the frame is
            # normalised directly into its top-left corner: no extra full-frame copy
            hp, wp = -(-h // mult) * mult, -(-w // mult) * mult
            if self._fixed_hw is not None:  # a frame of exactly the graph's fixed size:
                hp, wp = self._fixed_hw     # that size, whatever multiple it is of
            buf = self._input_buffer(h, w, hp, wp)
            if x is None:
                self._normalise(img, out=buf[0, 0, :h, :w])
            else:
                buf[0, 0, :h, :w] = x
            t1 = time.perf_counter_ns()
            pre_ns = t1 - t0
            out = self._run(buf)
            t2 = time.perf_counter_ns()
            boxes, scores, cls = decode_centernet(out, dec, thr)
            run_ns, post_ns = t2 - t1, time.perf_counter_ns() - t2
        else:
            if x is None:
                x = self._normalise(img)
            pre_ns = time.perf_counter_ns() - t0
            bs, ss, cs = [], [], []
            fixed = self._fixed_hw
            for t in tiles:
                a = time.perf_counter_ns()
                crop = x[t.y0:t.y1, t.x0:t.x1]
                if fixed:
                    crop = cv2.copyMakeBorder(crop, 0, fixed[0] - crop.shape[0], 0,
                                              fixed[1] - crop.shape[1],
                                              cv2.BORDER_CONSTANT, value=0.0)
                else:
                    crop = pp.pad_to_multiple(crop, mult)
                b = time.perf_counter_ns()
                out = self._run(np.ascontiguousarray(crop)[None, None])
                c = time.perf_counter_ns()
                bx, sc, cl = decode_centernet(out, dec, thr)
                bx[:, 0::2] += t.x0
                bx[:, 1::2] += t.y0
                keep = keep_owned(t, bx)
                bs.append(bx[keep])
                ss.append(sc[keep])
                cs.append(cl[keep])
                d = time.perf_counter_ns()
                pre_ns += b - a
                run_ns += c - b
                post_ns += d - c
            boxes, scores, cls = np.concatenate(bs), np.concatenate(ss), np.concatenate(cs)
            # the card's max_detections holds for the frame, not for each tile
            order = np.argsort(-scores, kind="stable")[: int(dec.get("max_detections", 500))]
            boxes, scores, cls = boxes[order], scores[order], cls[order]
        pp.unscale_boxes(boxes, factor, img.shape)
        return boxes, scores, cls, {"pre_ms": pre_ns / 1e6, "run_ms": run_ns / 1e6,
                                    "post_ms": post_ns / 1e6}

    def _input_buffer(self, h: int, w: int, hp: int, wp: int) -> np.ndarray:
        """The zero-padded network input, kept between frames of one size (per thread).

        Allocating it per frame cost ~1.3 ms at 2048 x 2048 (fresh pages); only the
        frame's (h, w) corner is rewritten, so the key holds (h, w): the padding must
        stay zero.
        """
        kept = getattr(self._buffers, "input", None)
        if kept is None or kept[0] != (h, w, hp, wp):
            kept = self._buffers.input = ((h, w, hp, wp),
                                          np.zeros((1, 1, hp, wp), np.float32))
        return kept[1]

    def _mirror_buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """The mirror views' batch, kept between frames of one shape (per thread) like
        :meth:`_input_buffer`: at 2048 x 2048, four views are 64 MB of fresh pages per
        frame otherwise. Every row is rewritten for each frame, so nothing stale stays."""
        kept = getattr(self._buffers, "mirrored", None)
        if kept is None or kept.shape != shape:
            kept = self._buffers.mirrored = np.empty(shape, np.float32)
        return kept

    def _tiles(self, h: int, w: int):
        fixed = self._fixed_hw
        scale = self.card.scale or {}
        if fixed is not None:
            if h <= fixed[0] and w <= fixed[1]:
                return tile_grid(h, w, max(h, w), 0) if (h, w) != fixed else None
            size = min(fixed)  # tiles are padded up to the fixed input below
        elif self.tile is False:
            return None
        elif isinstance(self.tile, int) and not isinstance(self.tile, bool):
            size = int(self.tile)
        elif self.tile is True or max(h, w) > int(scale.get("tile_above", 2560)):
            size = int(scale.get("tile", 512))
        else:
            return None
        overlap = self.overlap
        if overlap is None:
            overlap = scale.get("overlap")
        if overlap is None:
            rng = scale.get("object_size_px") or [64]
            stride = int(self.card.decoding.get("stride", 4))
            overlap = int(math.ceil(float(np.max(rng)))) + 2 * stride
        mult = int(self.card.input.get("multiple", 32) or 32)
        if fixed is None:
            size = max(mult, size // mult * mult)  # whole tiles need no padding
        return tile_grid(h, w, size, min(int(overlap), size - 1), align=mult)

    def _detect_ultralytics(self, img: np.ndarray):
        t0 = time.perf_counter_ns()
        ih, iw = self._fixed_hw or (640, 640)
        H, W = img.shape
        r = min(ih / H, iw / W)
        nh, nw = min(ih, round(H * r)), min(iw, round(W * r))
        top, left = (ih - nh) // 2, (iw - nw) // 2
        x = self._normalise(img)
        small = cv2.resize(x, (nw, nh), interpolation=cv2.INTER_AREA if r < 1
                           else cv2.INTER_LINEAR)
        inp = np.full((1, 3, ih, iw), LETTERBOX_GRAY / 255.0, np.float32)
        inp[0, :, top:top + nh, left:left + nw] = small
        t1 = time.perf_counter_ns()
        out = self._run(inp)
        t2 = time.perf_counter_ns()
        boxes, scores, cls = decode_ultralytics(next(iter(out.values())), self.card.decoding,
                                                self.score_threshold)
        if len(boxes):
            # YOLO boxes are continuous coordinates of the letterboxed input (its pixel k
            # spans [k, k + 1)); the frame's pixel centres are at integers, hence the
            # half pixel. OpenCV's resize scales such coordinates by nw / W, nh / H.
            boxes[:, 0::2] = (boxes[:, 0::2] - left) * np.float32(W / nw) - 0.5
            boxes[:, 1::2] = (boxes[:, 1::2] - top) * np.float32(H / nh) - 0.5
        t3 = time.perf_counter_ns()
        return boxes, scores, cls, {"pre_ms": (t1 - t0) / 1e6, "run_ms": (t2 - t1) / 1e6,
                                    "post_ms": (t3 - t2) / 1e6}

    def close(self) -> None:
        """Release the session (the detector cannot be used afterwards)."""
        self.session = None

    def __repr__(self) -> str:
        return (f"OnnxDetector({self.model_path.name!r}, format={self.format!r}, "
                f"provider={self.provider!r})")


def _parse_names(raw: str | None) -> list[str]:
    """Ultralytics stores class names as a Python dict literal: "{0: 'cell', ...}"."""
    if not raw:
        return []
    try:
        val = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return []
    if isinstance(val, dict):
        return [str(val[k]) for k in sorted(val)]
    if isinstance(val, list | tuple):
        return [str(v) for v in val]
    return []


def _check_enlarge(px: object, scale: dict[str, Any], model: str) -> float | None:
    """*px* (``enlarge_below_px``) as a float, None kept; a size that is not a number
    above 1 px, or beyond the largest object size the card says the model was trained
    on (an enlargement there makes it worse, not better), is a ValueError naming the
    model's range."""
    if px is None:
        return None
    r = scale.get("object_size_px")
    hi = float(np.max(r)) if r not in (None, [], ()) else math.inf
    try:
        v = float(px)  # type: ignore[arg-type]
        ok = not isinstance(px, bool) and 1.0 < v <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        most = "" if math.isinf(hi) else f" and at most {hi:g} px, the largest size " \
            f"{model} was trained on"
        raise ValueError(f"enlarge_below_px={px!r} is not a size the frames can be "
                         f"enlarged to: give a number of pixels above 1{most}, or leave "
                         "it unset for the model card's own.")
    return v


def load_detector(model: str | Path | None = None, provider: str = "auto",
                  threads: int | None = None, **kw: Any):
    """Build a detector: an .onnx path, None (the shipped model), ``"classical"``, or a
    shared inference server's ``"triton://HOST:PORT/NAME[?timeout=S&fallback=local]"``.

    Keyword arguments go to :class:`OnnxDetector`,
    :class:`inscope.detector.classical.ClassicalDetector` (options the classical baseline does
    not use, such as ``tile``, are ignored there) or
    :class:`inscope.detector.triton_detector.TritonDetector` (*provider* and *threads* then
    serve its local fallback).
    """
    # (1 is no request: the detectors below that cannot average views drop it)
    views = kw.get("mirror_views", 1)
    elsewhere = isinstance(model, str) and (model.lower().startswith("triton://")
                                            or model.lower() == "classical")
    if views != 1 and elsewhere:
        raise ValueError(f"mirror_views={views} is for the ONNX models run here; "
                         f"{model!r} cannot use it. Leave mirror_views at 1 with it.")
    if kw.get("enlarge_below_px") is not None and elsewhere:
        raise ValueError(f"enlarge_below_px={kw['enlarge_below_px']!r} is for the ONNX "
                         f"models run here; {model!r} cannot use it. Leave it unset "
                         "with it.")
    if isinstance(model, str) and model.lower().startswith("triton://"):
        from inscope.detector.triton_detector import TritonDetector

        allowed = {"score_threshold", "object_size_px", "object_size_um", "auto_scale",
                   "fallback", "spinning"}
        return TritonDetector(model, provider=provider, threads=threads,
                              **{k: v for k, v in kw.items() if k in allowed})
    if isinstance(model, str) and model.lower() == "classical":
        from inscope.detector.classical import ClassicalDetector

        allowed = {"score_threshold", "object_size_px", "object_size_um"}
        return ClassicalDetector(**{k: v for k, v in kw.items() if k in allowed})
    return OnnxDetector(model, provider=provider, threads=threads, **kw)


def load_detector_or_classical(model: str | Path | None = None, *,
                               say: Callable[[str], object] = print, fallback: bool = True,
                               **kw: Any):
    """:func:`load_detector`; but with no model named (the shipped default) and a build
    that ships none, the classical detector, with one line through *say* saying so
    (when *fallback*; else the FileNotFoundError). A model the user named that is
    missing is always an error, never replaced: a run on another detector than the one
    asked for would look like that one's results."""
    try:
        return load_detector(model, **kw)
    except FileNotFoundError as e:
        if model is not None or not fallback:
            raise
        say(f"note: the shipped detector model is missing ({e}); using the classical "
            "OpenCV detector instead (--model PATH for another model; --model classical "
            "for this one without this note).")
        return load_detector("classical", **kw)
