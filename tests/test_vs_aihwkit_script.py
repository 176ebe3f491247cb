"""benchmarks/vs_aihwkit.py runs anywhere: without a usable aihwkit it prints the install hint and exits 0."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_aihwkit.py"


@pytest.mark.skipif(importlib.util.find_spec("aihwkit") is not None,
                    reason="aihwkit is installed here: the script would run the full comparison")
def test_without_aihwkit_prints_install_hint_and_exits_0():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=60,
                       env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "aihwkit NOT usable" in out
    assert "pip install --no-deps aihwkit==1.1.0" in out
    assert "pip install torch==2.10.0" in out
    assert "benchmarks/vs_aihwkit.py" in out
