"""The README's demo table is the demo's real output, and says which run made it and that numbers vary."""

import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from aimc.demo import TIMES, DemoSettings, run_demo
from aimc.evaluation import format_time, summarize, summary_markdown

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
# what the README says made its table: the torch release and the CPU kernels torch picked
RECORDED_TORCH, RECORDED_CPU = "2.13.0+cpu", "AVX512"


def _demo_part() -> str:
    return README[README.index("## The demo"):README.index("## The Python API")]


def _rows(markdown: str) -> list[list[str]]:
    """The first markdown table of ``markdown``: header and body rows as lists of cells."""
    lines = []
    for ln in markdown.splitlines():
        if ln.startswith("|"):
            lines.append([c.strip() for c in ln.strip().strip("|").split("|")])
        elif lines:
            break
    return [lines[0]] + lines[2:]


def test_readme_demo_table_says_which_run_made_it():
    part = " ".join(_demo_part().replace("**", "").split())
    assert "`OMP_NUM_THREADS=1 aimc demo`" in part and "summary.md" in part
    assert re.search(r"the demo reports \d+ s", part)  # its wall time
    assert f"torch {RECORDED_TORCH}" in part and "AVX-512" in part and "numbers vary" in part


def test_readme_demo_table_has_the_demo_s_rows_and_columns():
    rows = _rows(_demo_part())
    fake = pd.DataFrame([{"model": "m", "compensation": "none", "t_seconds": 25.0, "seed": s, "accuracy": 0.5}
                         for s in range(2)])
    assert rows[0] == _rows(summary_markdown(summarize(fake, ("model", "compensation", "t_seconds"))))[0]
    s = DemoSettings()
    expected = [("fp_digital", "none", "0 s")] + [(m, c, format_time(t)) for m in ("fp_direct", "hwa")
                                                   for t in TIMES for c in ("none", "gdc", "gdc+bn")]
    assert [tuple(r[:3]) for r in rows[1:]] == expected
    assert all(r[-1] == str(s.seeds) for r in rows[2:])


@pytest.mark.slow
def test_demo_reproduces_the_readme_table(tmp_path):
    """The full demo (about 20 s on one thread): bit for bit where torch and its CPU kernels are the README's, else
    the same rows and seeds (numbers vary between machines, as the README says)."""
    run_demo(tmp_path / "demo", progress=False, log=lambda *a: None)
    ours = _rows((tmp_path / "demo" / "summary.md").read_text())
    readme = _rows(_demo_part())
    if torch.__version__ == RECORDED_TORCH and torch.backends.cpu.get_cpu_capability() == RECORDED_CPU:
        assert ours == readme
    else:
        assert [r[:3] + r[-1:] for r in ours] == [r[:3] + r[-1:] for r in readme]
