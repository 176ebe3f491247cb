"""The `aimc` command: the demo end to end on a tiny budget."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aimc.cli import app

ROOT = Path(__file__).resolve().parents[1]


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


def _help(*cmd):
    r = CliRunner().invoke(app, [*cmd, "--help"], terminal_width=250, env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    return " ".join(r.output.split())  # rich wraps and pads; compare words


def test_help_shows_square_brackets():
    """Issue 21.10: rich read `[ray]` as markup and printed `pip install 'aimc'`."""
    assert "pip install 'aimc[ray]'" in _help("run")


@pytest.mark.parametrize("cmd", ["run", "demo"])
def test_run_and_demo_share_one_documented_threads_default(cmd, monkeypatch, tmp_path):
    """Both commands run with 1 torch thread unless --threads says otherwise (0 = torch's default), and restore."""
    import torch

    import aimc.demo
    import aimc.experiment.runner

    seen = []

    def record(*a, **k):
        seen.append(torch.get_num_threads())
        raise aimc.ConfigError("stop here")

    monkeypatch.setattr(aimc.demo, "_run", record)
    monkeypatch.setattr(aimc.experiment.runner, "run_experiment", record)
    args = [cmd, str(ROOT / "examples" / "digits.yaml")] if cmd == "run" else [cmd]
    args += ["--out", str(tmp_path / "o")]
    torch.set_num_threads(2)
    try:
        for extra, expected in (([], 1), (["--threads", "2"], 2), (["--threads", "0"], 2)):
            seen.clear()
            r = CliRunner().invoke(app, args + extra)
            assert seen == [expected], (extra, seen, r.output)
            assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(1)
    assert "Default 1" in _help(cmd) and "0 = torch's default" in _help(cmd)


def test_demo_out_that_is_a_file_is_a_clear_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    r = CliRunner().invoke(app, ["demo", "--quick", "--quiet", "--out", str(afile)])
    assert r.exit_code == 2 and "is a file; results need a directory" in r.output, r.output
    assert afile.read_text() == "mine\n"
