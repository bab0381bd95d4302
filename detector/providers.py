"""ONNX Runtime session creation and execution-provider choice.

onnxruntime-gpu lists TensorRT and CUDA as *available* even on a box with no GPU or no
CUDA libraries; only a created session's ``get_providers()`` says what really runs. Asking
for a GPU provider that cannot load makes ORT print a wall of errors (C++ log lines and
Python ``print`` calls) before it falls back. We therefore try each GPU provider on its
own with ORT's output silenced, keep the first that really runs, and log one plain line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inscope.enums import Spinning

log = logging.getLogger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")

#: What the last :func:`create_session` chose and why the faster providers were not used:
#: ``{"provider": "cpu", "skipped": {"tensorrt": "...", "cuda": "..."}, "note": "..."}``.
LAST_CHOICE: dict = {}

_PRELOADED: dict[str, str | None] = {}


def trt_cache_dir() -> Path:
    """Where TensorRT keeps its built engines (building one takes seconds to minutes;
    the cache makes every later start fast): ``$INSCOPE_TRT_CACHE``, else
    ``%LOCALAPPDATA%/inscope/tensorrt`` on Windows, ``~/.cache/inscope/tensorrt`` elsewhere.
    """
    env = os.environ.get("INSCOPE_TRT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("LOCALAPPDATA") if sys.platform == "win32" else None
    root = Path(base) if base else Path.home() / ".cache"
    return root / "inscope" / "tensorrt"


def tensorrt_options(fp16: bool = True) -> dict[str, str]:
    """TensorRT provider options: engine and timing caches on (see :func:`trt_cache_dir`),
    FP16 when the GPU supports it."""
    cache = trt_cache_dir()
    return {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache),
            "trt_fp16_enable": "True" if fp16 else "False"}


def cuda_options() -> dict[str, str]:
    """CUDA provider options: cuDNN picks convolution algorithms by heuristics.

    ONNX Runtime's default (``EXHAUSTIVE``) times every algorithm the first time it sees
    an input shape: the detector's warm-up frame, then the first real frame of another
    size (and each new size after a change of camera ROI or binning) stalled the loop for
    about 0.45 s on an H200, dropping ~40 frames at the start of every demo
    (``benchmarks/results/gpu_demo*.json``).
    """
    return {"cudnn_conv_algo_search": "HEURISTIC"}


def preload_gpu_libraries() -> str | None:
    """Load the CUDA / cuDNN libraries that the ``inscope[gpu]`` extra installs from PyPI
    (``onnxruntime.preload_dlls()``, ONNX Runtime >= 1.21), once per process.

    Without it ONNX Runtime finds pip's ``nvidia-*`` libraries only if they are on the
    system library path, which they are not. Returns None when done (or nothing to do),
    else what failed (shown as the reason CUDA was not used).
    """
    if "result" in _PRELOADED:
        return _PRELOADED["result"]
    import onnxruntime as ort

    result: str | None = None
    if hasattr(ort, "preload_dlls") and "CUDAExecutionProvider" in \
            ort.get_available_providers():
        try:
            with _silenced() as out:
                ort.preload_dlls()
            text = out.getvalue()
            missing = re.findall(r"Failed to load (\S+?):", text)
            if missing:
                result = ("CUDA libraries not found (" + ", ".join(missing[:3])
                          + "): pip install 'inscope[gpu]'")
        except Exception as e:  # noqa: BLE001 - reported as the reason CUDA is not used
            result = f"preload_dlls failed: {e}"
    _PRELOADED["result"] = result
    if result:
        log.debug("GPU libraries: %s", result)
    return result


_DISPLAY = {"tensorrt": "TensorRT", "cuda": "CUDA", "cpu": "CPU"}
_GPU_FIX = "pip install 'inscope[gpu]' (docs/gpu.md)"


def _choice_note(name: str, skipped: dict[str, str]) -> str:
    """``"ONNX Runtime provider CPU (TensorRT not used: ...; CUDA not used: ...)"``."""
    faster = AUTO_ORDER[:AUTO_ORDER.index(name)] if name in AUTO_ORDER else ()
    reasons = [f"{_DISPLAY[k]} not used: {skipped[k]}" for k in faster if k in skipped]
    why = "; ".join(reasons)
    if any(m in why for m in (".so", ".dll", "Failed to load")) and _GPU_FIX not in why:
        why += f"; fix: {_GPU_FIX}"
    return f"ONNX Runtime provider {_DISPLAY.get(name, name)}" + (f" ({why})" if why else "")


def _record(name: str, errors: dict[str, str]) -> None:
    LAST_CHOICE.clear()
    LAST_CHOICE.update(provider=name, skipped=dict(errors), note=_choice_note(name, errors))
    log.debug("%s", LAST_CHOICE["note"])  # the detector logs it in its one start-up line


def short_name(ort_name: str) -> str:
    """``"CUDAExecutionProvider"`` -> ``"cuda"`` (unknown names are lower-cased)."""
    for k, v in PROVIDER_NAMES.items():
        if v == ort_name:
            return k
    return ort_name.replace("ExecutionProvider", "").lower()


@contextlib.contextmanager
def _silenced() -> Iterator[io.StringIO]:
    """Swallow Python prints and C-level stderr/stdout (ORT's EP error wall) for a moment.

    The C-level output is captured into a temporary file so it can be shown when every
    provider fails. Not thread-safe with other threads' console output during the
    ~20 ms it lasts; it runs only while a detector is built.
    """
    buf = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = []
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(tmp.fileno(), fd)
                except OSError:
                    pass
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                yield buf
        finally:
            for fd, old in saved:
                os.dup2(old, fd)
                os.close(old)
            tmp.seek(0)
            buf.write(tmp.read().decode(errors="replace"))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_PREFIX = re.compile(r"^\S+ \S+ \[[EWI]:onnxruntime:[^\]]*\]\s*")


def failure_reason(text: str, limit: int = 220) -> str:
    """The one informative sentence in ONNX Runtime's provider-failure output.

    ORT prints colour codes, time stamps, source locations and banners; what a user needs
    is the missing library (``libcublasLt.so.13: cannot open shared object file``) and the
    versions it wants (``Require cuDNN 9.* and CUDA 13.*``).
    """
    lines = [_LOG_PREFIX.sub("", _ANSI.sub("", ln)).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("***")]
    found = []
    for ln in lines:
        m = re.search(r"with error: (.*)", ln)
        if m:
            found.append(m.group(1).strip())
        m = re.search(r"(Require [^.]*\.\*[^.]*\.\*)", ln)
        if m:
            found.append(m.group(1).strip())
        elif "Please install" in ln and not found:
            found.append(ln[ln.index("Please install"):].split(",")[0])
    if not found:
        found = lines[:1] or ["no message"]
    return "; ".join(dict.fromkeys(found))[:limit]


def default_spinning() -> Spinning:
    """What idle intra-op threads do when the caller does not say (:class:`~inscope.enums.
    Spinning`): ``"off"``, they sleep.

    Spinning between runs buys the lowest median latency of a detector running alone, but
    a live loop keeps a camera, a control and output threads busy beside it, and the
    spinning threads take their CPU: the loop's p99 gets worse on few cores and on many.
    On 2 cores (``inscope bench --backend demo --spinning on --spinning off``) p99 with a
    busy camera thread went 14.9 -> 10.8 ms with spinning off. On 16 cores
    (Micro-Manager's DemoCamera, CPU provider, on and off alternated twice:
    ``benchmarks/results/spinning_16cores_headless.json``) ready -> published p99 was
    23.9 and 9.9 ms spinning against 8.0 and 8.8 ms sleeping, the pipeline overhead p99
    9.2 and 3.3 against 0.7 and 0.8 ms, and the process used 1571 % of a core against
    215 %: spinning held 14 cores that Micro-Manager and the rest of the PC need.
    ``spinning="on"`` (``[detector] spinning = "on"`` or ``true``) still spins, and
    ``"run"`` spins only inside a run.
    """
    return Spinning.OFF


def spinning_mode(spinning: bool | str | None) -> Spinning:
    """A :class:`~inscope.enums.Spinning` mode from what a caller or a config file gives.

    ``None``: :func:`default_spinning`; ``True`` / ``False``: ``"on"`` / ``"off"`` (the
    older boolean form); a string: one of the modes (any case).
    """
    if spinning is None:
        return default_spinning()
    if isinstance(spinning, bool):
        return Spinning.ON if spinning else Spinning.OFF
    mode = str(spinning).strip().lower()
    if mode not in tuple(Spinning):
        raise ValueError(f"spinning {spinning!r} is not a mode; {SPINNING_HELP}.")
    return Spinning(mode)


#: the modes in one clause, for the errors of every place that takes one
SPINNING_HELP = ("use 'off' (idle ONNX Runtime threads sleep), 'run' (they spin only while "
                 "a frame runs) or 'on' (they also spin between frames); true/false mean "
                 "'on'/'off'")


#: ONNX Runtime's session config key for idle intra-op threads spinning ("1") or not ("0").
SPINNING_KEY = "session.intra_op.allow_spinning"
#: ... and for stopping the spinning when a run returns ("1"), restarted by the next run.
SPINNING_STOP_KEY = "session.force_spinning_stop"


def session_spinning(session: Any) -> Spinning:
    """What *session*'s idle intra-op threads really do (a key left unset is ORT's
    default: spin, and keep spinning after a run)."""
    so = session.get_session_options()
    if so.get_session_config_entry(SPINNING_KEY) == "0":
        return Spinning.OFF
    if so.get_session_config_entry(SPINNING_STOP_KEY) == "1":
        return Spinning.RUN
    return Spinning.ON


def session_options(threads: int | None, spinning: bool | str | None = None):
    """The ``onnxruntime.SessionOptions`` every inscope session is made with: all graph
    optimisations, *threads* intra-op threads (and one inter-op), the *spinning* mode
    (:func:`spinning_mode`), errors only (severity 3: ORT's warnings stay quiet).
    Benchmarks use it too, so they time the service's own sessions."""
    import onnxruntime as ort

    mode = spinning_mode(spinning)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.add_session_config_entry(SPINNING_KEY, "0" if mode is Spinning.OFF else "1")
    so.add_session_config_entry(SPINNING_STOP_KEY, "1" if mode is Spinning.RUN else "0")
    return so


def create_session(model_path: str | Path, provider: str = "auto",
                   threads: int | None = None, spinning: bool | str | None = None):
    """Create an ``onnxruntime.InferenceSession`` on the best provider that really runs.

    Parameters
    ----------
    model_path
        The .onnx file.
    provider
        ``"auto"`` (TensorRT, then CUDA, then CPU), ``"tensorrt"``, ``"cuda"`` or
        ``"cpu"``. An explicit GPU provider that cannot run raises, naming the fix.
    threads
        ``intra_op_num_threads`` (None: ORT's default, one per core).
    spinning
        What idle intra-op threads do (:class:`~inscope.enums.Spinning`): ``"off"`` sleep and leave
        the cores to the camera and control threads, ``"run"`` spin only while a run is in
        progress, ``"on"`` spin between runs too (ORT's own default: lowest median alone,
        but on 2 cores p99 with a busy camera thread 14.9 ms against 10.8 ms off, at
        512x512). ``True`` / ``False`` = ``"on"`` / ``"off"``. None:
        :func:`default_spinning`.

    Returns
    -------
    (session, provider short name)
    """
    import onnxruntime as ort

    spinning = spinning_mode(spinning)  # a wrong mode fails here, before any session

    ort.set_default_logger_severity(3)
    provider = (provider or "auto").lower()
    if provider not in ("auto", *PROVIDER_NAMES):
        raise ValueError(f"Unknown provider {provider!r}; use 'auto', 'tensorrt', 'cuda' "
                         "or 'cpu'.")
    available = set(ort.get_available_providers())
    wanted = AUTO_ORDER if provider == "auto" else (provider,)
    path = str(model_path)
    errors: dict[str, str] = {}
    preload_error = None
    if any(n != "cpu" and PROVIDER_NAMES[n] in available for n in wanted):
        preload_error = preload_gpu_libraries()
    for name in wanted:
        ort_name = PROVIDER_NAMES[name]
        if ort_name not in available:
            errors[name] = ("not in this onnxruntime build (CPU-only onnxruntime installed; "
                            "pip install 'inscope[gpu]')")
            continue
        chain: list = [ort_name] if name == "cpu" else [(ort_name, cuda_options()),
                                                         "CPUExecutionProvider"]
        if name == "tensorrt":
            trt_cache_dir().mkdir(parents=True, exist_ok=True)
            chain = [(ort_name, tensorrt_options()),
                     ("CUDAExecutionProvider", cuda_options()), "CPUExecutionProvider"]
        if name == "cpu":
            try:
                sess = ort.InferenceSession(path, session_options(threads, spinning),
                                            providers=chain)
            except Exception as e:  # noqa: BLE001 - re-raised with the fix below
                raise ValueError(
                    f"ONNX Runtime cannot load {path}: {e}. Check that the file is a valid "
                    "ONNX model (re-export it) and that its opset is supported.") from None
            _record("cpu", errors)
            return sess, "cpu"
        try:
            with _silenced() as out:
                sess = ort.InferenceSession(path, session_options(threads, spinning),
                                            providers=chain)
        except Exception as e:  # noqa: BLE001 - a GPU provider failing is expected here
            errors[name] = failure_reason(out.getvalue() + "\n" + str(e))
            continue
        active = sess.get_providers()
        if active and active[0] == ort_name:
            _record(name, errors)
            return sess, name
        msg = out.getvalue().strip()
        errors[name] = failure_reason(msg) if msg else (
            preload_error or "falls back to CPU (no usable GPU)")
        log.debug("provider %s did not start: %s", name, errors[name])
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
    raise RuntimeError(
        f"Execution provider {provider!r} cannot run on this machine ({detail}). Use "
        "provider='auto' or 'cpu', or install the CUDA/TensorRT libraries that "
        f"onnxruntime-gpu needs: {_GPU_FIX}.")
