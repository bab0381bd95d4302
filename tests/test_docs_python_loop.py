"""The "From Python" block of docs/service.md, saved as a script and run as users run it
(``python loop.py``): the simulator's camera process imports the script again (spawn),
so a block without its ``__main__`` guard starts a second service there and fails."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "service.md"


def _loop_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return next(b for b in blocks if 'open_microscope("sim")' in b and "Pipeline(" in b)


def test_the_python_loop_of_the_docs_runs_as_a_script(tmp_path):
    code = _loop_block()
    assert 'if __name__ == "__main__":' in code
    # fewer frames, and any free port (the doc's 5556 may be taken on a test machine)
    code = code.replace("frames=300", "frames=20").replace("PubOutput()",
                                                           "PubOutput(port=0)")
    script = tmp_path / "loop.py"
    script.write_text(code, encoding="utf-8")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # unguarded, the camera's process ran the block too: a second, empty report
    latency = [line for line in r.stdout.splitlines() if "p50" in line]
    assert len(latency) == 1 and "'n': 20" in latency[0], r.stdout
    assert "can only join a started process" not in r.stderr
