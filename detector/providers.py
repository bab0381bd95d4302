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

log = logging.getLogger("inscope.detector")

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


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


def _session_options(threads: int | None, spinning: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return so


def create_session(model_path: str | Path, provider: str = "auto",
                   threads: int | None = None, spinning: bool = True):
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
        Let idle intra-op threads spin for the next run (ORT's default). Lowest median
        latency on a quiet machine; off, they sleep and leave the cores to the camera and
        control threads: measured on 2 cores, p50 3.8 -> 5.4 ms but p99 with a busy
        camera thread 14.9 -> 10.8 ms at 512x512.

    Returns
    -------
    (session, provider short name)
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    provider = (provider or "auto").lower()
    if provider not in ("auto", *PROVIDER_NAMES):
        raise ValueError(f"Unknown provider {provider!r}; use 'auto', 'tensorrt', 'cuda' "
                         "or 'cpu'.")
    available = set(ort.get_available_providers())
    wanted = AUTO_ORDER if provider == "auto" else (provider,)
    path = str(model_path)
    errors: dict[str, str] = {}
    for name in wanted:
        ort_name = PROVIDER_NAMES[name]
        if ort_name not in available:
            errors[name] = "not in this onnxruntime build"
            continue
        chain = [ort_name] if name == "cpu" else [ort_name, "CPUExecutionProvider"]
        if name == "cpu":
            try:
                sess = ort.InferenceSession(path, _session_options(threads, spinning),
                                            providers=chain)
            except Exception as e:  # noqa: BLE001 - re-raised with the fix below
                raise ValueError(
                    f"ONNX Runtime cannot load {path}: {e}. Check that the file is a valid "
                    "ONNX model (re-export it) and that its opset is supported.") from None
            return sess, "cpu"
        try:
            with _silenced() as out:
                sess = ort.InferenceSession(path, _session_options(threads, spinning),
                                            providers=chain)
        except Exception as e:  # noqa: BLE001 - a GPU provider failing is expected here
            errors[name] = failure_reason(out.getvalue() + "\n" + str(e))
            continue
        active = sess.get_providers()
        if active and active[0] == ort_name:
            return sess, name
        msg = out.getvalue().strip()
        errors[name] = failure_reason(msg) if msg else "falls back to CPU (no usable GPU)"
        log.debug("provider %s did not start: %s", name, errors[name])
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items())
    raise RuntimeError(
        f"Execution provider {provider!r} cannot run on this machine ({detail}). Use "
        "provider='auto' or 'cpu', or install the CUDA/TensorRT libraries that "
        "onnxruntime-gpu needs.")
