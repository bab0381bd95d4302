"""A detector that runs on a shared Triton Inference Server (KServe v2 over gRPC).

Several microscopes send their frames to one (GPU) server holding a model exported by
``inscope export-triton`` (:mod:`inscope.detector.triton_export`); each gets the same
:class:`~inscope.detector.base.Detections`, with the same ``detect_start`` /
``detect_end`` stamps, as from the local :class:`~inscope.detector.onnx_detector.OnnxDetector`.
Frames travel in the camera's dtype (uint16: 0.5 MiB for 512x512, half of float32); the
server normalises and pads inside the network, the client decodes the heatmap (a few
hundred µs) so thresholds stay per microscope.

Address: ``triton://HOST:PORT/NAME`` with optional query settings, e.g.
``triton://gpu-server:8001/inscope-nuclei?timeout=0.5&fallback=local``:

``timeout``
    Seconds one request may take (default 1.0); a slower answer counts as a failure.
``connect_timeout``
    Seconds to wait for the server at start (default 5).
``fallback``
    ``local`` (the shipped model on this machine), ``classical``, or an .onnx path: run
    that detector while the server cannot be reached, and go back to the server when it
    answers again. Without it, an unreachable server raises
    :class:`RemoteDetectorUnavailable` (one line that names the fix).
``retry``
    Seconds between reconnection attempts while the server is down (default 2). Between
    attempts frames fail at once (or go to the fallback): a dead server never costs a
    full timeout per frame.
``version``
    Model version (default: the server's latest).

``tritonclient`` is an optional extra (``pip install 'inscope[triton]'``), imported only
when a ``triton://`` model is used. No tritonclient or gRPC type appears in this API.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from inscope.acquisition.frame import Frame
from inscope.detector import preprocess as pp
from inscope.detector.base import STAMP_DETECT_END, Detections, begin_detect
from inscope.detector.card import ModelCard
from inscope.detector.decode import decode_centernet
from inscope.detector.onnx_detector import OnnxDetector

log = logging.getLogger(__name__)

SCHEME = "triton://"
#: numpy dtype <-> KServe v2 datatype of the input
_V2 = {"uint8": "UINT8", "uint16": "UINT16", "float32": "FP32"}


class RemoteDetectorUnavailable(ConnectionError):
    """The inference server cannot be reached (or did not answer in time).

    ``reason`` holds the short cause (e.g. gRPC's "failed to connect to all addresses").
    """

    reason: str = ""


@dataclass(frozen=True)
class TritonAddress:
    """A parsed ``triton://HOST:PORT/NAME?...`` address (see the module doc)."""

    host: str
    port: int
    model: str
    version: str = ""
    timeout_s: float = 1.0
    connect_timeout_s: float = 5.0
    retry_s: float = 2.0
    fallback: str | None = None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, address: str) -> TritonAddress:
        """Parse *address*, or raise one ``ValueError`` that shows the expected form."""
        form = ("expected triton://HOST:PORT/MODEL[?timeout=S&fallback=local], e.g. "
                "triton://gpu-server:8001/inscope-nuclei")
        parts = urlsplit(address)
        if parts.scheme != "triton":
            raise ValueError(f"Not a Triton address: {address!r}; {form}.")
        model = parts.path.strip("/")
        try:
            port = parts.port or 8001
        except ValueError:
            raise ValueError(f"Bad port in {address!r}; {form}.") from None
        if not parts.hostname or not model or "/" in model:
            raise ValueError(f"Bad Triton address {address!r}; {form}.")
        q = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        known = {"timeout", "connect_timeout", "retry", "fallback", "version"}
        unknown = sorted(set(q) - known)
        if unknown:
            raise ValueError(f"Unknown setting(s) {unknown} in {address!r}; known: "
                             f"{sorted(known)}.")
        try:
            kw: dict[str, Any] = {k2: float(q[k]) for k, k2 in
                                  (("timeout", "timeout_s"),
                                   ("connect_timeout", "connect_timeout_s"),
                                   ("retry", "retry_s")) if k in q}
        except ValueError:
            raise ValueError(f"timeout/connect_timeout/retry must be seconds in {address!r}."
                             ) from None
        if any(v <= 0 for v in kw.values()):
            raise ValueError(f"timeout/connect_timeout/retry must be positive in {address!r}.")
        return cls(parts.hostname, port, model, q.get("version", ""),
                   fallback=q.get("fallback") or None, **kw)


def _import_client():
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise ImportError(
            "A triton:// model needs the Triton client: pip install 'inscope[triton]' "
            "(tritonclient[grpc]).") from None
    return grpcclient, InferenceServerException


class TritonDetector:
    """Detector whose network runs on a Triton server (see the module doc).

    Parameters
    ----------
    address
        ``triton://HOST:PORT/NAME[?...]`` or a parsed :class:`TritonAddress`.
    score_threshold
        Overrides the card's ``decoding.score_threshold``.
    object_size_px, object_size_um, auto_scale
        As :class:`~inscope.detector.onnx_detector.OnnxDetector`: the frame is rescaled on
        the client (in its own dtype) before it is sent when its objects are outside the
        model's trained size range.
    fallback
        A detector to use while the server is unreachable (overrides the address's
        ``fallback``); None: the address's, or none.
    provider, threads, spinning
        For a fallback built from the address (``fallback=local`` or a path).

    Attributes
    ----------
    last_source
        ``"triton"`` or ``"fallback"``: who answered the last :meth:`detect`.
    last_timing
        ``pre_ms`` (scale, cast), ``run_ms`` (request round trip), ``post_ms`` (decode),
        ``total_ms``, like the local detector's.
    """

    def __init__(self, address: str | TritonAddress, *, score_threshold: float | None = None,
                 object_size_px: float | None = None, object_size_um: float | None = None,
                 auto_scale: bool = True, fallback: Any = None, provider: str = "auto",
                 threads: int | None = None, spinning: bool | str | None = None) -> None:
        self.address = (address if isinstance(address, TritonAddress)
                        else TritonAddress.parse(address))
        self._grpc, self._error_type = _import_client()
        self.score_threshold = score_threshold
        self.object_size_px = object_size_px
        self.object_size_um = object_size_um
        self.auto_scale = auto_scale
        self.enlarge_below_px: float | None = None  # the card's (OnnxDetector's option)
        self.last_scale = 1.0
        self.last_source = "triton"
        self.last_timing: dict[str, float] = {}
        self.failures = 0  # requests that failed (each one fell back or raised)
        self._scale_cache: tuple[tuple, int, float] | None = None
        self._client: Any | None = None  # tritonclient.grpc.InferenceServerClient
        self._next_retry = 0.0
        self._connected = False
        self.card: ModelCard | None = None
        self.fallback = fallback
        if fallback is None and self.address.fallback:
            self.fallback = _build_fallback(self.address.fallback, provider, threads,
                                            spinning, score_threshold, object_size_px,
                                            object_size_um)
        self.name = self.address.model
        self.provider = f"triton {self.address.url}"
        self.class_names: tuple[str, ...] = getattr(self.fallback, "class_names", ("object",))
        try:
            self._connect(self.address.connect_timeout_s)
        except RemoteDetectorUnavailable as e:
            if self.fallback is None:
                raise
            log.warning("Triton server %s is unreachable (%s); detecting locally with %s "
                        "until it answers", self.address.url, e.reason,
                        getattr(self.fallback, "name", self.fallback))

    # -- connection --------------------------------------------------------------------
    def _unreachable(self, why: str) -> RemoteDetectorUnavailable:
        a = self.address
        err = RemoteDetectorUnavailable(
            f"Triton server {a.url} (model {a.model!r}) is unreachable: {why}. Start the "
            "server (docs/scale-out.md), check the host and port, or add ?fallback=local "
            "to the model address to detect on this machine meanwhile.")
        err.reason = why
        return err

    def _connect(self, timeout_s: float) -> None:
        """Open a fresh channel, check the model is ready, read its card and signature."""
        grpc, err = self._grpc, self._error_type
        a = self.address
        self._close_client()
        self._next_retry = time.monotonic() + a.retry_s
        client = grpc.InferenceServerClient(a.url)
        try:
            ready = client.is_model_ready(a.model, a.version, client_timeout=timeout_s)
            if not ready:
                names = self._model_names(client, timeout_s)
                listed = ("it lists no ready model" if names == [] else
                          f"ready there: {names}" if names else "it did not list its models")
                raise RemoteDetectorUnavailable(
                    f"Triton server {a.url} answers but has no ready model {a.model!r} "
                    f"({listed}). Check the name in the address, or export the model into "
                    "the server's repository with 'inscope export-triton DIR'.")
            cfg = client.get_model_config(a.model, a.version, as_json=True,
                                          client_timeout=timeout_s)["config"]
        except err as e:
            client.close()
            raise self._unreachable(_short(e)) from None
        except RemoteDetectorUnavailable:
            client.close()
            raise
        self._read_config(cfg)
        self._client = client
        self._connected = True
        log.info("detector %s runs on Triton %s (input %s %s)", a.model, a.url,
                 self._in_name, self._in_dtype)

    @staticmethod
    def _model_names(client, timeout_s: float) -> list[str] | None:
        """Ready models on the server; None where it does not say (e.g. access rules)."""
        try:
            index = client.get_model_repository_index(as_json=True, client_timeout=timeout_s)
            return [m["name"] for m in index.get("models", []) if m.get("state") == "READY"]
        except Exception as e:  # noqa: BLE001 - only for the message; the caller raises
            log.debug("the server lists no model repository: %s", e)
            return None

    def _read_config(self, cfg: dict[str, Any]) -> None:
        params = cfg.get("parameters", {})
        raw = params.get("inscope_card", {}).get("string_value")
        if not raw:
            raise ValueError(
                f"Triton model {self.address.model!r} has no 'inscope_card' parameter in "
                "its config.pbtxt: it was not exported by inscope. Export it with "
                "'inscope export-triton DIR --model M'.")
        d = json.loads(raw)
        known = set(ModelCard.__dataclass_fields__)
        card = ModelCard(**{k: v for k, v in d.items() if k in known})
        if card.format != "inscope-centernet":
            raise ValueError(f"Triton model {self.address.model!r} has format "
                             f"{card.format!r}; only inscope CenterNet exports are served.")
        inputs = cfg.get("input", [])
        if len(inputs) != 1:
            raise ValueError(f"Triton model {self.address.model!r} must have one input; its "
                             f"config lists {[i.get('name') for i in inputs]}.")
        self._in_name = inputs[0]["name"]
        dtype = str(card.input.get("dtype", "uint16"))
        if dtype not in _V2:
            raise ValueError(f"Triton model {self.address.model!r} takes {dtype!r} input; "
                             f"supported: {sorted(_V2)}.")
        self._in_dtype = np.dtype(dtype)
        self._batched = int(cfg.get("max_batch_size", 0) or 0) > 0
        dec = {"heatmap": "heatmap", "size": "size", **card.decoding}
        self._out_names = [dec["heatmap"], dec["size"]] + (
            [dec["offset"]] if dec.get("offset") else [])
        self.card = card
        self.class_names = tuple(card.classes) or ("object",)
        self.name = card.name or self.address.model

    def _close_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception as e:  # noqa: BLE001 - closing a dead channel may fail
                log.debug("closing the Triton client failed: %s", e)
        self._client = None
        self._connected = False

    @property
    def connected(self) -> bool:
        """True while the server answers (False: frames go to the fallback or fail)."""
        return self._connected

    # -- per-frame path ----------------------------------------------------------------
    # the same scale rule as the local detector (card range, user size, auto scale every
    # AUTO_SCALE_EVERY frames of a stream): one definition, so both scale a frame alike
    def _factor(self, frame: Frame | np.ndarray, img: np.ndarray) -> float:
        """The rescale factor, as :class:`OnnxDetector` computes it (same attributes)."""
        # OnnxDetector._factor reads only attributes this class has too (card,
        # object_size_px/_um, auto_scale, enlarge_below_px, _scale_cache, last_scale); the
        # classes share no base, so mypy rejects the duck-typed self.
        return OnnxDetector._factor(self, frame, img)  # type: ignore[arg-type]

    def _as_input(self, img: np.ndarray) -> np.ndarray:
        want = self._in_dtype
        if img.dtype == want:
            return img
        if img.dtype.kind in "ui" and want.kind in "ui" and np.can_cast(img.dtype, want):
            return img.astype(want)  # e.g. an 8-bit camera on a uint16 model: lossless
        if want.kind == "f":
            return img.astype(want)
        raise ValueError(
            f"The Triton model {self.address.model!r} takes {want} frames; this frame is "
            f"{img.dtype}. Export a model for this camera with 'inscope export-triton DIR "
            f"--dtype {'float32' if img.dtype.kind == 'f' else img.dtype}'.")

    def _remote(self, img: np.ndarray) -> dict[str, np.ndarray]:
        grpc = self._grpc
        x = np.ascontiguousarray(img)[None, None] if self._batched else np.ascontiguousarray(
            img)[None]
        inp = grpc.InferInput(self._in_name, list(x.shape), _V2[str(x.dtype)])
        inp.set_data_from_numpy(x)
        client = self._client
        assert client is not None, "detect() connects before it calls _remote"
        res = client.infer(
            self.address.model, [inp], model_version=self.address.version,
            outputs=[grpc.InferRequestedOutput(n) for n in self._out_names],
            client_timeout=self.address.timeout_s)
        return {n: res.as_numpy(n)[0] if self._batched else res.as_numpy(n)
                for n in self._out_names}

    def detect(self, frame: Frame | np.ndarray) -> Detections:
        """Find objects in *frame* on the server (or the fallback while it is down).

        Raises
        ------
        RemoteDetectorUnavailable
            The server is down or too slow and there is no fallback. The next call tries
            again once ``retry`` seconds have passed since the last attempt.
        """
        if not self._connected and not self._try_reconnect():
            return self._fallback_or_raise(frame, self._unreachable(
                "not connected (retrying every "
                f"{self.address.retry_s:g} s)"))
        call = begin_detect(frame)
        t0 = time.perf_counter_ns()
        factor = self._factor(frame, call.image)
        img = call.image if factor == 1.0 else pp.resize(call.image, factor)
        # the server's graph normalises, but has no hot-pixel step: taken here, as the
        # ONNX detector's normalisation takes it
        assert self.card is not None
        img = pp.hot_pixel_step(img, self.card.normalisation)
        x = self._as_input(img)
        t1 = time.perf_counter_ns()
        try:
            outs = self._remote(x)
        except self._error_type as e:
            self.failures += 1
            if not _is_connection_error(e):
                raise RuntimeError(f"Triton model {self.address.model!r} refused the frame "
                                   f"({x.dtype} {x.shape}): {_short(e)}") from None
            self._close_client()  # a fresh channel next time: no stale gRPC back-off
            err = self._unreachable(_short(e))
            log.warning("%s", err)
            det = self._fallback_or_raise(frame, err)
            # the frame's detection began with the failed request, not the fallback's run
            det.stamps["detect_start"] = call.t0_ns
            call.stamps["detect_start"] = call.t0_ns
            return det
        t2 = time.perf_counter_ns()
        assert self.card is not None
        boxes, scores, cls = decode_centernet(outs, self.card.decoding, self.score_threshold)
        pp.unscale_boxes(boxes, factor, call.image.shape)
        self.last_source = "triton"
        det = call.finish(boxes, scores, cls, self.class_names,
                          self.card.decoding.get("min_signal_sigma"))
        t3 = time.perf_counter_ns()
        self.last_timing = {"pre_ms": (t1 - t0) / 1e6, "run_ms": (t2 - t1) / 1e6,
                            "post_ms": (t3 - t2) / 1e6,
                            "total_ms": (det.stamps[STAMP_DETECT_END] - call.t0_ns) / 1e6}
        return det

    def _try_reconnect(self) -> bool:
        if time.monotonic() < self._next_retry:
            return False
        try:
            self._connect(min(self.address.timeout_s, self.address.connect_timeout_s))
        except RemoteDetectorUnavailable:
            return False
        log.info("Triton server %s answers again", self.address.url)
        return True

    def _fallback_or_raise(self, frame: Frame | np.ndarray, err: Exception) -> Detections:
        if self.fallback is None:
            raise err
        det = self.fallback.detect(frame)
        self.last_source = "fallback"
        self.last_timing = dict(getattr(self.fallback, "last_timing", {}) or {})
        return det

    def close(self) -> None:
        """Close the channel (and the fallback detector)."""
        self._close_client()
        if self.fallback is not None:
            self.fallback.close()

    def __repr__(self) -> str:
        return f"TritonDetector({SCHEME}{self.address.url}/{self.address.model})"


#: gRPC status codes that mean "no answer" (retry / fall back), not "bad request"
_CONNECTION_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED",
                     "RESOURCE_EXHAUSTED", "UNKNOWN", "INTERNAL")


def _is_connection_error(e: Exception) -> bool:
    status = str(getattr(e, "status", lambda: "")() or "")
    return not status or any(status.endswith(c) for c in _CONNECTION_CODES)


def _short(e: Exception) -> str:
    """First line of a tritonclient error, without gRPC's debug trailer."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg[:300]


def _build_fallback(spec: str, provider: str, threads: int | None,
                    spinning: bool | str | None,
                    score_threshold: float | None, object_size_px: float | None,
                    object_size_um: float | None):
    from inscope.detector.onnx_detector import load_detector

    kw: dict[str, Any] = {"object_size_px": object_size_px, "object_size_um": object_size_um}
    if score_threshold is not None:
        kw["score_threshold"] = score_threshold
    if spec.lower() == "classical":
        return load_detector("classical", **kw)
    if spec.lower() == "local":
        return load_detector(None, provider=provider, threads=threads, spinning=spinning, **kw)
    path = Path(spec)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"fallback={spec!r} is not understood; use fallback=local (the "
                         "shipped model), fallback=classical, or the path of an .onnx file.")
    return load_detector(path, provider=provider, threads=threads, spinning=spinning, **kw)
