"""report.html: one self-contained page per run directory, also for runs without (swept) results."""

import base64
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aimc.experiment.runner import run_experiment
from aimc.experiment.spec import experiment_from_dict
from aimc.report import write_report
from tests import browser

SECTIONS = ["Accuracy vs time", "Digital baselines", "Training", "Summary tables", "Cost",
            "Programming error and conductances", "GDC factors vs time", "Wall times", "Configuration", "Environment"]
PNG = b"\x89PNG\r\n\x1a\n"


def tiny(**over) -> dict:
    d = {"name": "report-tiny<&>", "seed": 1, "model": {"name": "digits_cnn"},
         "data": {"name": "digits", "batch_size": 64, "train_limit": 300, "validation": 60},
         "training": [{"name": "fp", "kind": "fp", "epochs": 4, "optimizer": {"name": "adam", "lr": 0.003}},
                      {"name": "hwa", "kind": "hwa", "init": "fp", "epochs": 1,
                       "optimizer": {"name": "adam", "lr": 0.001}}],
         "baselines": {"fp_digital": "fp"},
         "evaluation": [{"name": "pcm", "analog": "joshi2020", "models": {"fp_direct": "fp", "hwa": "hwa"},
                         "times": [25, 86400], "seeds": 2, "compensations": ["none", "gdc"]}]}
    d.update(over)
    return d


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    run_experiment(experiment_from_dict(tiny()), out, quiet=True)
    return out


def section(page: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', page, flags=re.S)
    assert m, anchor
    return m.group(1)


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
    # accuracy (1 sweep: all curves, then one panel per compensation), training curves, device histograms, GDC
    assert len(pngs) == 5
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
    # the experiment name is escaped, never raw
    assert "report-tiny&lt;&amp;&gt;" in page and "report-tiny<&>" not in page
    table = pd.read_csv(run_dir / "results.csv")
    base = table[table["sweep"] == "baseline"]
    assert len(base) == 1
    assert f"{100 * base['accuracy'].iloc[0]:.2f}" in page
    # summary of the sweep (n = 2 seeds) and the full results, collapsed
    mean = table[(table["sweep"] == "pcm") & (table["model"] == "fp_direct") & (table["compensation"] == "gdc")
                 & (table["t_seconds"] == 86400)]
    assert f"{100 * mean['accuracy'].mean():.2f}" in page
    assert re.search(r"<details><summary>Full results \(17 rows", page)
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
    # the programmed chip and the training curves do not depend on results: still shown
    assert "median α" in page and "training loss and validation metric per epoch" in page

    # stage weights gone and no results.csv: the page says why, and does not fail
    shutil.rmtree(only / "stages")
    (only / "results.csv").unlink()
    page = write_report(only).read_text(encoding="utf-8")
    check_self_contained(page)
    assert "could not rebuild the programmed model" in page
    assert "no digital baseline" in page
    # the stages' checkpoints still hold their histories: curves of unfinished stages, no digital accuracy
    assert re.findall(r'<img alt="([^"]*)"', page) == ["training loss and validation metric per epoch"]
    training = section(page, "training")
    assert training.count("(unfinished)") == 2 and training.count("not trained yet") == 2
    shutil.rmtree(only / "checkpoints")  # run.log still knows the epochs
    page = write_report(only).read_text(encoding="utf-8")
    assert re.findall(r'<img alt="([^"]*)"', page) == ["training loss and validation metric per epoch"]
    (only / "run.log").unlink()
    page = write_report(only).read_text(encoding="utf-8")
    assert "<img" not in page and "no epoch has finished yet" in page


def test_report_without_sweeps(tmp_path):
    d = tiny(evaluation=[], baselines={})
    d["training"] = d["training"][:1]
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


# ---- training, wall times, zoomed accuracy, cost (issue 21, items 12-14) ------------------------------------------
def _history(path: Path) -> list[dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["aimc_stage"])["history"]


def test_training_curves_digital_accuracy_of_every_stage_and_wall_times(run_dir):
    import torch
    from safetensors.torch import load_file

    from aimc.data import digits
    from aimc.evaluation import accuracy
    from aimc.models import digits_cnn

    page = (run_dir / "report.html").read_text(encoding="utf-8")
    training = section(page, "training")
    # the HWA stage's digital accuracy, measured here independently: its plain weights on the full digits test set
    model = digits_cnn()
    model.load_state_dict(load_file(str(run_dir / "stages" / "hwa.safetensors")))
    hwa_acc = accuracy(model.eval(), torch.utils.data.DataLoader(digits("test"), batch_size=512))
    fp_acc = pd.read_csv(run_dir / "results.csv").query("sweep == 'baseline'")["accuracy"].iloc[0]
    rows = dict(re.findall(r"<tr><td>(fp|hwa)</td>(.*?)</tr>", training))
    assert f"<td class=\"num\">{100 * hwa_acc:.2f}</td>" in rows["hwa"]
    assert f"<td class=\"num\">{100 * fp_acc:.2f}</td>" in rows["fp"]
    # per-epoch records of each stage: epochs run, last loss and validation accuracy, summed wall time
    for stage, epochs in (("fp", 4), ("hwa", 1)):
        hist = _history(run_dir / "stages" / f"{stage}.safetensors")
        assert len(hist) == epochs
        assert f"{epochs} / {epochs}" in rows[stage]
        assert f"{hist[-1]['loss']:.4g}" in rows[stage]
        assert f"validation accuracy (%): {100 * hist[-1]['val_accuracy']:.2f}" in rows[stage]
    assert 'alt="training loss and validation metric per epoch"' in training
    times = section(page, "times")
    assert "stage fp (fp)" in times and "stage hwa (hwa)" in times and "evaluation sweeps" in times
    assert "whole run" in times


def test_log_sessions_and_wall_time_of_a_resumed_run(tmp_path):
    from aimc.report.files import Run, log_sessions
    from aimc.report.page import seconds
    from aimc.report.training import times_section

    (tmp_path / "run.log").write_text(
        "2026-01-02 03:04:05,100 INFO aimc.run: run x in /r\n"
        "2026-01-02 03:04:06,000 INFO aimc.run: stage fp epoch 1/2: loss 1.5, seconds 0.5\n"
        "KeyboardInterrupt\n"
        "2026-01-02 04:00:00,000 INFO aimc.run: run x in /r\n"
        "2026-01-02 04:00:01,000 INFO aimc.run: baseline fp_digital (stage fp, digital): 97.50 %\n"
        "2026-01-02 04:00:01,500 INFO aimc.run: evaluation: 4 unit(s) on the local backend, 1 process(es)\n"
        "2026-01-02 04:01:01,500 INFO aimc.run: finished in 62 s; results in /r/results.csv\n")
    run = Run(tmp_path, None, pd.DataFrame())
    first, second = log_sessions(run)
    assert first.started == "2026-01-02 03:04:05" and first.finished_s is None and first.eval_start_s is None
    assert second.finished_s == 62 and second.baselines == {"fp_digital": 0.975}
    assert second.eval_start_s - second.start_s == pytest.approx(1.5)
    assert second.last_s - second.eval_start_s == pytest.approx(60.0)
    assert first.epochs == 1 and second.eval_end_s - second.eval_start_s == pytest.approx(60.0)
    assert [seconds(x) for x in (0.845, 42.4, 725, 10920)] == ["0.84 s", "42 s", "12 min 5 s", "3 h 02 min"]
    page = times_section(run, [], [first, second])
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", page)[1:]]
    assert rows[0][0] == "session 1 (started 2026-01-02 03:04:05): whole run" and rows[0][2] == "—"
    assert "interrupted" in rows[0][1] and "55 min 55 s after it" in rows[0][1]
    assert rows[1][0].endswith("evaluation sweeps") and rows[1][2] == "1 min 0 s"
    assert rows[2][0].endswith("whole run") and rows[2][2] == "1 min 2 s"


def test_zoomed_panels_separate_the_compensations():
    """Curves 96-99 % under GDC and 10-99 % without: each compensation gets a panel whose axis fits its curves."""
    from aimc.report.accuracy import panels_figure

    rows = []
    for model, off in (("fp_direct", 0.0), ("hwa", 0.01)):
        for comp, accs in (("none", (0.98, 0.5, 0.1)), ("gdc", (0.975, 0.97, 0.96)), ("gdc+bn", (0.99, 0.989, 0.985))):
            for t, a in zip((25.0, 86400.0, 3.15e7), accs):
                rows.append({"model": model, "compensation": comp, "t_seconds": t, "mean": a + off, "std": 0.002,
                             "ci95_low": a + off - 0.002, "ci95_high": a + off + 0.002, "n": 5})
    s = pd.DataFrame(rows)
    fig = panels_figure(s, {"fp_direct": 0.995, "hwa": 0.993}, "t")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["compensation: none", "compensation: gdc", "compensation: gdc+bn"]
    lo, hi = axes[1].get_ylim()  # gdc: 95.8 .. 99.5 (the hwa digital reference) plus a margin, not 0 .. 100
    assert 94 < lo < 95.8 and 99.5 < hi < 100.5
    lo, hi = axes[2].get_ylim()
    assert 98 < lo < 98.3 and 99.9 < hi <= 100
    assert axes[0].get_ylim()[0] < 11
    # every model drawn in every panel, with its digital reference dotted
    for ax in axes:
        assert sum(1 for ln in ax.get_lines() if ln.get_linestyle() == ":") == 2
        assert sum(1 for ln in ax.get_lines() if ln.get_linestyle() == "-") == 2
    assert fig.legends  # one legend for all panels


def test_cost_section_in_words_once_per_chip_with_layer_names(run_dir):
    from aimc.cost import estimate
    from aimc.cost.render import experiment_target, fmt_energy
    from aimc.experiment.spec import load_run_experiment

    page = (run_dir / "report.html").read_text(encoding="utf-8")
    cost = section(page, "cost")
    exp = load_run_experiment(run_dir)
    tgt = experiment_target(exp, exp.name, "run", analog="joshi2020")
    rep = estimate(tgt.model, "hermes_4phase", config=tgt.config, input_shape=tgt.input_shape, on_overflow="chips")
    ratio = rep.totals["energy_j"] / rep.totals["baseline_energy_j"]
    words = f"{ratio:.1f}× the energy" if ratio > 1 else f"{1 / ratio:.1f}× less energy"
    assert words in cost and "the digital baseline" in cost
    assert "ADC conversions" in cost and f"{rep.totals['adc_conversions']:,} ADC conversions" in cost
    assert "baseline / analog energy" not in cost  # the bare ratio is gone
    # energy and latency once per chip, not on every accuracy row
    assert cost.count("<th>energy / inference</th>") == 1
    energy = fmt_energy(rep.totals["energy_j"])
    assert cost.count(f"<td class=\"num\">{energy}</td>") == 1
    acc_table = re.search(r"Sweep <code>pcm</code> on this chip.*?(<table>.*?</table>)", cost, flags=re.S).group(1)
    assert "µJ" not in acc_table and "nJ" not in acc_table and "µs" not in acc_table
    assert acc_table.count("<tr>") == 1 + 4  # header + 2 models x 2 compensations
    # the bar chart names its layers with their type and shape, not bare Sequential indices
    labels = re.findall(r'<text x="[0-9.]+" y="[0-9.]+" text-anchor="end">([^<]*)</text>', cost)
    assert labels == ["layer 0 · Conv2d 16×1×3×3", "layer 3 · Conv2d 32×16×3×3", "layer 7 · Conv2d 32×32×3×3",
                      "layer 12 · Linear 10×32"]


def test_report_package_is_split_and_uses_no_private_runner_name():
    src = Path(__file__).resolve().parents[1] / "src" / "aimc" / "report"
    assert src.is_dir()
    for p in src.glob("*.py"):
        text = p.read_text()
        assert len(text.splitlines()) <= 400, p
        assert "experiment.runner" not in text and "_Context" not in text, p
    from aimc.report import render_report, write_report

    assert callable(render_report) and callable(write_report)


# ---- the page in a real browser (issue 21, item 15) ----------------------------------------------------------------
needs_chromium = pytest.mark.skipif(browser.CHROMIUM is None, reason=browser.SKIP_REASON)

BROKEN = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>broken</title></head><body>
<img alt="truncated png" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB">
<img alt="missing file" src="missing-figure.png">
<script>console.error("a console error");</script></body></html>"""


@needs_chromium
def test_browser_check_catches_broken_images_and_console_errors(tmp_path):
    """The checker itself: a page with an undecodable PNG, a missing file and a console error fails every check."""
    page = tmp_path / "broken.html"
    page.write_text(BROKEN, encoding="utf-8")
    res = browser.check_page(page, tmp_path)
    assert res["title"] == "broken"
    assert res["images"] == ["undecodable", "undecodable"]
    assert any("missing-figure.png" in p for p in res["problems"]), res
    assert any("a console error" in c for c in res["console"]), res


@needs_chromium
def test_report_in_headless_chromium(run_dir, tmp_path):
    page = run_dir / "report.html"
    text = page.read_text(encoding="utf-8")
    res = browser.check_page(page, tmp_path)
    assert res["title"] == "aimc report: report-tiny<&>"
    assert res["h2"] == SECTIONS
    assert res["problems"] == [] and res["console"] == [], res
    # every embedded plot decodes, at the size it was drawn; the cost section's SVG bar chart is there too
    assert len(res["images"]) == text.count("<img ") == 5
    for wh in res["images"]:
        w, h = (int(v) for v in wh.split("x"))
        assert w > 300 and h > 200, res["images"]
    assert res["svgs"] == 1

    shot = tmp_path / "report.png"
    out = browser.screenshot(page, shot, tmp_path)
    assert shot.is_file(), out.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(str(shot))[..., :3]
    assert img.shape[:2] == (3000, 1280)
    px = (img.reshape(-1, 3) * 255).round().astype(np.int32)
    assert (px < 245).any(axis=1).mean() > 0.05  # text, tables and plots, not a blank page
    sat = px.max(axis=1) - px.min(axis=1)  # saturated pixels (plot lines, bands) in several distinct hues
    colourful = px[sat > 80]
    assert len(colourful) > 5_000 and len({tuple(c // 32) for c in colourful}) >= 6
    assert not browser.console_messages(out.stderr), out.stderr[-2000:]


def test_histories_of_older_stage_files_and_from_run_log(run_dir, tmp_path):
    """Stage files of older runs keep the history as a bare JSON list; files without one fall back to run.log."""
    from safetensors.torch import load_file, save_file

    from aimc.report.files import load, stage_histories

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    fp_hist = _history(copy / "stages" / "fp.safetensors")
    hwa_hist = _history(copy / "stages" / "hwa.safetensors")
    for stage, meta in (("fp", {"history": json.dumps(fp_hist)}), ("hwa", None)):
        path = copy / "stages" / f"{stage}.safetensors"
        save_file(load_file(str(path)), str(path), metadata=meta)
    fp, hwa = stage_histories(load(copy))
    assert list(fp.records) == fp_hist and fp.source == "stages/fp.safetensors" and fp.finished
    assert hwa.source == "run.log" and hwa.finished
    assert [r["epoch"] for r in hwa.records] == [r["epoch"] for r in hwa_hist]
    assert [r["loss"] for r in hwa.records] == [float(f"{r['loss']:.4g}") for r in hwa_hist]
    assert [r["val_accuracy"] for r in hwa.records] == [float(f"{r['val_accuracy']:.4g}") for r in hwa_hist]
