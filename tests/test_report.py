"""report.html: one self-contained page per run directory, also for runs without (swept) results."""

import base64
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from aimc.experiment.runner import run_experiment
from aimc.experiment.spec import experiment_from_dict
from aimc.report import write_report

SECTIONS = ["Accuracy vs time", "Digital baselines", "Summary tables", "Programming error and conductances",
            "GDC factors vs time", "Configuration", "Environment"]
PNG = b"\x89PNG\r\n\x1a\n"


def tiny(**over) -> dict:
    d = {"name": "report-tiny<&>", "seed": 1, "model": {"name": "digits_cnn"},
         "data": {"name": "digits", "batch_size": 64, "train_limit": 300},
         "training": [{"name": "fp", "kind": "fp", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.003}}],
         "baselines": {"fp_digital": "fp"},
         "evaluation": [{"name": "pcm", "analog": "joshi2020", "models": {"fp_direct": "fp"},
                         "times": [25, 86400], "seeds": 2, "compensations": ["none", "gdc"]}]}
    d.update(over)
    return d


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    run_experiment(experiment_from_dict(tiny()), out, quiet=True)
    return out


def check_self_contained(page: str) -> list[bytes]:
    """No external reference; every <img> an embedded PNG. Returns the decoded images."""
    for bad in ("http://", "https://", 'src="/', "src='/", "<script", "<link rel=\"stylesheet\"", "@import"):
        assert bad not in page, bad
    imgs = re.findall(r"<img\b[^>]*>", page)
    pngs = []
    for tag in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert m, tag[:120]
        data = base64.b64decode(m.group(1), validate=True)
        assert data.startswith(PNG)
        pngs.append(data)
    assert all(src.startswith("data:") for src in re.findall(r'\bsrc="([^"]*)"', page))
    assert all(h.startswith(("#", "data:")) for h in re.findall(r'\bhref="([^"]*)"', page))
    return pngs


def test_report_of_a_run(run_dir):
    path = run_dir / "report.html"
    assert path.is_file()  # written by the run itself (write_summary -> write_report)
    assert write_report(run_dir) == path
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    pngs = check_self_contained(page)
    # accuracy (1 sweep), device histograms, GDC factors
    assert len(pngs) == 3
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    # the experiment name is escaped, never raw
    assert "report-tiny&lt;&amp;&gt;" in page and "report-tiny<&>" not in page
    table = pd.read_csv(run_dir / "results.csv")
    base = table[table["sweep"] == "baseline"]
    assert len(base) == 1
    assert f"{100 * base['accuracy'].iloc[0]:.2f}" in page
    # summary of the sweep (n = 2 seeds) and the full results, collapsed
    mean = table[(table["sweep"] == "pcm") & (table["compensation"] == "gdc") & (table["t_seconds"] == 86400)]
    assert f"{100 * mean['accuracy'].mean():.2f}" in page
    assert re.search(r"<details><summary>Full results \(9 rows", page)
    # device state: the programmed chip of the sweep's first model, per layer, and the GDC factors per time
    assert "fp_direct" in page and "28,576" in page  # devices of digits_cnn (2 per weight)
    assert "median α" in page and "1 d" in page
    # resolved config and environment
    assert "analog/joshi2020.yaml" in page and "train_limit: 300" in page
    assert "torch" in page and "command" in page
    assert "no results yet" not in page
    assert path.stat().st_size < 2_000_000
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # shareable, not the 0600 of a temp file


def test_report_with_only_baselines_and_no_stage_weights(run_dir, tmp_path):
    only = tmp_path / "only-baselines"
    shutil.copytree(run_dir, only)
    (only / "report.html").unlink()
    table = pd.read_csv(only / "results.csv")
    table[table["sweep"] == "baseline"].to_csv(only / "results.csv", index=False)
    page = write_report(only).read_text(encoding="utf-8")
    check_self_contained(page)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "no results yet" in page
    assert f"{100 * table['accuracy'].iloc[0]:.2f}" in page
    assert "Full results (1 rows" in page
    # the programmed chip does not depend on results: still shown
    assert "median α" in page

    # stage weights gone and no results.csv: the page says why, and does not fail
    shutil.rmtree(only / "stages")
    (only / "results.csv").unlink()
    page = write_report(only).read_text(encoding="utf-8")
    check_self_contained(page)
    assert "could not rebuild the programmed model" in page
    assert "<img" not in page
    assert "no digital baseline" in page


def test_report_without_sweeps(tmp_path):
    d = tiny(evaluation=[], baselines={})
    d["training"][0]["epochs"] = 0
    out = run_experiment(experiment_from_dict(d), tmp_path / "run", quiet=True)
    page = (out / "report.html").read_text(encoding="utf-8")
    check_self_contained(page)
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    assert "the experiment defines no evaluation sweep" in page
    assert "<img" not in page


def test_report_needs_a_run_directory(tmp_path):
    from aimc.errors import FileFormatError

    with pytest.raises(FileFormatError, match="not a run directory"):
        write_report(tmp_path)
