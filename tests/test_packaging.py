"""The wheel installs one import name, ``inscope``, and lives beside python-control.

Built and installed as a new user would: ``pip wheel`` of this checkout, then the wheel and
python-control (import name ``control``) into a fresh virtual environment, used from a
folder that holds a lab's own ``acquisition.py``. Before the rename the wheel installed
``acquisition``, ``detector`` and ``control`` at the top level and python-control
overwrote inscope's ``control/__init__.py``.

The fresh environment reuses this one's third-party packages through a ``.pth`` line (so the
test does not download onnxruntime and OpenCV again); ``inscope`` itself comes only from
the wheel, because an editable install is a path finder that a ``.pth`` line does not run.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
         cwd=out)
    (whl,) = out.glob("inscope-*.whl")
    return whl


def test_wheel_installs_only_inscope(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"inscope", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    # the three design folders land under inscope/, with the shipped model
    for sub in ("acquisition/__init__.py", "acquisition/simulated/__init__.py",
                "detector/__init__.py", "detector/train/__init__.py", "control/__init__.py",
                "detector/models/inscope-nuclei.onnx", "detector/models/inscope-nuclei.json"):
        assert f"inscope/{sub}" in names, sub


def test_wheel_and_python_control_live_side_by_side(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bindir = "Scripts" if os.name == "nt" else "bin"
    py = env_dir / bindir / ("python.exe" if os.name == "nt" else "python")
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(_run([str(py), "-c", where], cwd=tmp_path).strip())
    # third-party packages of this environment, read-only (see the module docstring)
    # (every site-packages folder on this interpreter's path, including ones that a .pth
    # line added: a .pth inside a folder named by another .pth is not read)
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages(),
            *(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages"))}
    (purelib / "_inscope_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")

    pip = [str(py), "-m", "pip", "install", "-q", "--no-deps"]
    _run([*pip, str(wheel)], cwd=tmp_path)
    _run([*pip, "control"], cwd=tmp_path)  # python-control, after inscope
    assert not (purelib / "acquisition").exists() and not (purelib / "detector").exists()

    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "acquisition.py").write_text("raise SystemExit('the lab file was imported')\n")
    (lab / "detector.py").write_text("raise SystemExit('the lab file was imported')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    out = _run([str(py), "-c",
                "import control; print('tf', control.tf([1], [1, 1]).num)\n"
                "import inscope.control, inscope.detector, inscope.acquisition\n"
                "from inscope.control import Tracker\n"
                "from inscope.detector import load_detector\n"
                "from inscope.acquisition import Frame\n"
                "print('inscope from', inscope.__file__)\n"
                "print('control from', control.__file__)\n"
                "load_detector(provider='cpu')\n"],
               cwd=lab, env=env)
    assert "tf" in out
    assert str(purelib) in out.split("inscope from", 1)[1].splitlines()[0]
    assert "inscope" not in out.split("control from", 1)[1].splitlines()[0]

    cli = env_dir / bindir / ("inscope.exe" if os.name == "nt" else "inscope")
    help_text = _run([str(cli), "--help"], cwd=lab, env=env)
    assert "demo" in help_text and "calibrate" in help_text
