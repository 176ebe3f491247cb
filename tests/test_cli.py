"""The `aimc` command: the demo end to end on a tiny budget."""

import pandas as pd
from typer.testing import CliRunner

from aimc.cli import app


def test_demo_quick_writes_results(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["demo", "--quick", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = pd.read_csv(out / "results.csv")
    assert {"model", "compensation", "t_seconds", "seed", "accuracy"} <= set(t.columns)
    assert set(t["model"]) == {"fp_digital", "fp_direct", "hwa"}
    assert set(t["compensation"]) == {"none", "gdc", "gdc+bn"}
    assert len(t) == 1 + 2 * 2 * 2 * 3  # FP row + 2 models × 2 seeds × 2 times × 3 compensations
    assert (out / "accuracy_vs_time.png").stat().st_size > 5000
    md = (out / "summary.md").read_text()
    assert "| hwa | gdc+bn |" in md
    assert "hwa" in r.output and "gdc+bn" in r.output


def test_version_and_help():
    r = CliRunner().invoke(app, ["version"])
    assert r.exit_code == 0 and "aimc" in r.output
    r = CliRunner().invoke(app, ["demo", "--seeds", "0"])
    assert r.exit_code != 0
