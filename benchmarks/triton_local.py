"""Start a real Triton server on this machine: PyTriton in its own virtual environment.

Used by the tests (``tests/detector/test_det_triton.py``) and
:mod:`benchmarks.bench_triton`. PyTriton (``nvidia-pytriton``) bundles a ``tritonserver``
binary with its Python backend; that backend's stub runs under the distribution's Python
(Debian's 3.11.2 here) but fails under a pyenv-built 3.11.7 (``'_thread.RLock' object has
no attribute '_recursion_count'``), so the server gets a virtual environment of its own,
built once from the system Python and cached (about 450 MB, ~1 min with a package index).

:func:`server_python` builds or finds that environment; :class:`LocalTritonServer` runs
``benchmarks/pytriton_server.py`` in it on free ports, waits until the model is ready, and
stops the whole process group (server, ``tritonserver``, backend stubs) when done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

#: what the server's environment holds (numpy < 2: nvidia-pytriton 0.7.0 requires it)
SERVER_REQUIREMENTS = ("nvidia-pytriton==0.7.0", "onnxruntime>=1.18", "numpy<2")
#: where a system Python is looked for, in order (``INSCOPE_TRITON_PYTHON`` overrides)
SYSTEM_PYTHONS = ("/usr/bin/python3.11", "/usr/bin/python3.12", "/usr/bin/python3.10",
                  "/usr/bin/python3")
SERVER_SCRIPT = Path(__file__).resolve().parent / "pytriton_server.py"


class ServerUnavailable(RuntimeError):
    """A local Triton server cannot be built or started here (the message says why)."""


def system_python() -> Path:
    """The distribution's Python to build the server environment from.

    ``INSCOPE_TRITON_PYTHON`` names one explicitly; otherwise the first of
    :data:`SYSTEM_PYTHONS` that exists and has ``venv``.
    """
    env = os.environ.get("INSCOPE_TRITON_PYTHON")
    cands = [env] if env else list(SYSTEM_PYTHONS)
    if sys.platform != "linux":
        raise ServerUnavailable("PyTriton's tritonserver binary is built for Linux x86-64 "
                                f"only; this is {sys.platform}")
    for c in cands:
        p = Path(c)
        if not p.exists():
            continue
        ok = subprocess.run([str(p), "-c", "import venv, ensurepip"], capture_output=True,
                            timeout=60)
        if ok.returncode == 0:
            return p
    raise ServerUnavailable(
        "no system Python with venv found (looked for " + ", ".join(cands) + "); PyTriton's "
        "Python backend needs the distribution's Python (apt-get install python3-venv), "
        "or set INSCOPE_TRITON_PYTHON")


def server_python(cache_dir: Path, timeout_s: float = 600) -> Path:
    """Python of a cached environment with :data:`SERVER_REQUIREMENTS` (built if missing).

    The environment lives in ``cache_dir/pytriton-<hash of python and requirements>``; a
    ``.complete`` marker is written last, so an interrupted build is redone, not used.
    """
    base = system_python()
    key = hashlib.sha256((str(base.resolve()) + "|" + "|".join(SERVER_REQUIREMENTS)).encode()
                         ).hexdigest()[:12]
    venv = Path(cache_dir) / f"pytriton-{key}"
    py = venv / "bin" / "python"
    done = venv / ".complete"
    if done.exists() and py.exists():
        return py
    import fcntl  # Linux only, as the tritonserver binary

    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"pytriton-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others wait and reuse it
        if done.exists() and py.exists():
            return py
        shutil.rmtree(venv, ignore_errors=True)  # an interrupted build: start over
        deadline = time.monotonic() + timeout_s
        steps = [[str(base), "-m", "venv", str(venv)],
                 [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  *SERVER_REQUIREMENTS]]
        for cmd in steps:
            left = deadline - time.monotonic()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True,
                                   timeout=max(1.0, left))
            except subprocess.TimeoutExpired:
                raise ServerUnavailable(f"building the PyTriton environment took over "
                                        f"{timeout_s:.0f} s (is the package index "
                                        "reachable?)") from None
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["(no output)"]
                raise ServerUnavailable(f"building the PyTriton environment failed at "
                                        f"'{' '.join(cmd[:4])} ...': {tail[0]}")
        done.write_text("\n".join(SERVER_REQUIREMENTS) + "\n")
    return py


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalTritonServer:
    """``benchmarks/pytriton_server.py`` serving one exported model, on free ports.

    Parameters
    ----------
    python
        The server environment's Python (:func:`server_python`).
    repository, model
        The exported repository (``inscope export-triton``) and the model's name.
    threads
        ONNX Runtime intra-op threads on the server.
    log_path
        Where the server's output goes (default: ``repository/<model>.log``).
    stats_path
        Where the server writes the batch sizes it formed, on stop.
    grpc_port
        0: a free port, chosen at the first start and kept for restarts.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, python: Path, repository: Path, model: str, *, threads: int | None = 1,
                 log_path: Path | None = None, stats_path: Path | None = None,
                 grpc_port: int = 0) -> None:
        self.python = Path(python)
        self.repository = Path(repository)
        self.model = model
        self.threads = threads
        self.log_path = Path(log_path) if log_path else self.repository / f"{model}.log"
        self.stats_path = stats_path
        self.grpc_port = grpc_port  # 0: a free one at the first start, kept for restarts
        self.stragglers = False  # True when stop() had to SIGKILL what SIGTERM left
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """``triton://127.0.0.1:PORT/MODEL`` for :func:`inscope.detector.load_detector`."""
        return f"triton://127.0.0.1:{self.grpc_port}/{self.model}"

    def start(self, timeout_s: float = 120) -> LocalTritonServer:
        self.grpc_port = self.grpc_port or free_port()
        http, metrics = free_port(), free_port()
        cmd = [str(self.python), str(SERVER_SCRIPT), "--repository", str(self.repository),
               "--model", self.model, "--grpc-port", str(self.grpc_port), "--http-port",
               str(http), "--metrics-port", str(metrics)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        if self.stats_path is not None:
            cmd += ["--stats", str(self.stats_path)]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        # its own process group: stop() reaches tritonserver and the backend stubs too
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{self.grpc_port}")
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerUnavailable(f"PyTriton's tritonserver exited at start (code "
                                            f"{self.proc.returncode}): {self.log_tail()}")
                try:
                    if client.is_model_ready(self.model, client_timeout=1.0):
                        return
                except Exception:  # noqa: BLE001 - not up yet: poll again
                    pass
                time.sleep(0.3)
        finally:
            client.close()
        raise ServerUnavailable(f"PyTriton's tritonserver did not load {self.model!r} within "
                                f"{timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 1) -> str:
        """The last error-looking line(s) of the server log (for skip/fail reasons)."""
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        errs = [t for t in text if "Error" in t or "error" in t or t.startswith("E")]
        return " | ".join((errs or text)[-lines:]) or "(empty log)"

    def batch_sizes(self, timeout_s: float = 5.0) -> dict[int, int]:
        """Batch sizes the server has formed so far: {size: count} (needs *stats_path*)."""
        if self.stats_path is None or self.proc is None:
            raise RuntimeError("batch_sizes() needs a running server started with stats_path")
        before = self.stats_path.stat().st_mtime_ns if self.stats_path.exists() else 0
        self.proc.send_signal(signal.SIGUSR1)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.stats_path.exists() and self.stats_path.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        data = json.loads(self.stats_path.read_text())
        return {int(k): int(v) for k, v in data["batch_sizes"].items()}

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's whole process group so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if self.proc is not None and int(f[2]) == self.proc.pid:
                total += int(f[11]) + int(f[12])  # utime, stime (children not yet reaped
        return total / tick                       # are counted by their own entries)

    @property
    def pgid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM the server (it unloads the model and stops tritonserver), then SIGKILL
        what is left of its process group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.stragglers = group_alive(proc.pid)
        if self.stragglers:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # what is left of the group we started
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait(5)
        end = time.monotonic() + 10
        while group_alive(proc.pid) and time.monotonic() < end:
            time.sleep(0.05)  # killed processes take a moment to go
        self._log.close()

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def group_alive(pgid: int) -> bool:
    """True while any process of group *pgid* is alive (zombies do not count)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
