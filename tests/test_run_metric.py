"""`metric:` of experiment files: top-K accuracy scored by the baselines, the sweeps and the validation of `aimc run`,
named in results.csv, summary.md, the plot and report.html; runs from before the key load and render unchanged."""

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import aimc
from aimc.cli import app
from aimc.evaluation import score
from aimc.experiment.context import RunContext
from aimc.experiment.runner import RunDirError, run_experiment
from aimc.experiment.schema import ExperimentConfigError
from aimc.experiment.spec import experiment_from_dict, load_run_experiment
from aimc.experiment.store import ResultsStore
from aimc.report import render_report

ROOT = Path(__file__).resolve().parents[1]


def tiny(**over) -> dict:
    d = {"name": "metric-tiny", "seed": 2, "metric": "top5", "model": {"name": "digits_cnn"},
         "data": {"name": "digits", "batch_size": 64, "train_limit": 200, "validation": 50},
         "training": [{"name": "fp", "kind": "fp", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.003}}],
         "baselines": {"fp_digital": "fp"},
         "evaluation": [{"name": "pcm", "analog": "joshi2020", "models": {"fp_direct": "fp"}, "times": [25, 86400],
                         "seeds": 2, "compensations": ["none", "gdc"], "test_limit": 200}]}
    d.update(over)
    return d


@pytest.fixture(scope="module")
def top5_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("metric") / "run"
    run_experiment(experiment_from_dict(tiny()), out, quiet=True)
    return out


def test_top5_run_writes_its_column_and_scores_top5(top5_run):
    t = pd.read_csv(top5_run / "results.csv")
    assert list(t.columns) == ["sweep", "model", "periphery", "compensation", "t_seconds", "seed", "top5"]
    assert len(t) == 1 + 2 * 2 * 2 and t["top5"].between(0, 1).all()
    # the baseline is the top-5 accuracy of the stage's weights, not top-1 (one epoch on 150 images: they differ)
    exp = load_run_experiment(top5_run)
    ctx = RunContext(exp, top5_run)
    loader = ctx.splits.loader("test", exp.data.eval_batch_size)
    weights = ctx.weights("fp").eval()
    top5, top1 = score(weights, loader, "top5"), score(weights, loader, "accuracy")
    assert t.loc[t["sweep"] == "baseline", "top5"].item() == top5
    assert top5 > top1 + 0.05
    # the sweeps too: with GDC at 25 s a programmed chip keeps most of its top-5 accuracy, well above its top-1
    sweep = t[(t["sweep"] == "pcm") & (t["compensation"] == "gdc") & (t["t_seconds"] == 25)]
    assert sweep["top5"].mean() > top1
    # validation during training scored the same metric
    hist = aimc.experiment.store.load_checkpoint(top5_run / "checkpoints/fp/last.safetensors")["extra"]["history"]
    assert "val_top5" in hist[-1] and "val_accuracy" not in hist[-1]


def test_summary_plot_and_report_name_the_metric(top5_run):
    summary = (top5_run / "summary.md").read_text()
    assert "| model | top-5 accuracy (%) |" in summary and "mean top-5 accuracy (%)" in summary
    assert "acc." not in summary
    base = pd.read_csv(top5_run / "results.csv").query("sweep == 'baseline'")["top5"].item()
    assert f"| fp_digital | {100 * base:.2f} |" in summary
    assert (top5_run / "accuracy_vs_time.png").stat().st_size > 0
    page = (top5_run / "report.html").read_text(encoding="utf-8")
    assert "<h2>Top-5 accuracy vs time</h2>" in page and '<a href="#accuracy">Top-5 accuracy vs time</a>' in page
    assert "<th>top-5 accuracy (%)</th>" in page and "mean top-5 accuracy (%)" in page
    assert "digital test top-5 accuracy (%)" in page and "validation top-5 accuracy (%)" in page
    assert f"{100 * base:.2f}" in page
    assert "<h2>Accuracy vs time</h2>" not in page and "mean acc." not in page


def test_changed_metric_refuses_to_resume(top5_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(top5_run, out)
    before = (out / "results.csv").read_bytes()
    with pytest.raises(RunDirError, match=r"scored with metric 'top5'.*asks for 'accuracy'.*--force"):
        run_experiment(experiment_from_dict(tiny(metric="accuracy")), out, quiet=True)
    assert (out / "results.csv").read_bytes() == before
    r = CliRunner().invoke(app, ["run", str(_write(tmp_path, tiny(metric="top3"))), "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and "'top5'" in r.output and "'top3'" in r.output
    # the same metric resumes: nothing to do, nothing changed
    run_experiment(experiment_from_dict(tiny()), out, quiet=True)
    assert (out / "results.csv").read_bytes() == before
    # a results.csv of another metric (config.yaml edited by hand) is refused naming both, not read as damaged
    with pytest.raises(aimc.FileFormatError, match=r"holds 'top5' results.*metric 'accuracy'"):
        ResultsStore(out / "results.csv")


def _write(tmp_path: Path, d: dict) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("bad", ["perplexity", "nll", "top1", "top0", "top-5", "Top5", "f1", 5, None, ["top5"]])
def test_bad_metric_names_are_validation_problems(bad, tmp_path):
    with pytest.raises(ExperimentConfigError) as e:
        experiment_from_dict(tiny(metric=bad))
    assert [p for p, _ in e.value.problems] == ["metric"]
    r = CliRunner().invoke(app, ["validate", str(_write(tmp_path, tiny(metric=bad)))])
    assert r.exit_code == 2 and "metric" in r.output and "Traceback" not in r.output
    if bad in ("perplexity", "nll"):
        assert "aimc.evaluate" in r.output  # where language models are scored instead


def test_validate_names_the_metric(tmp_path):
    r = CliRunner().invoke(app, ["validate", str(_write(tmp_path, tiny()))])
    assert r.exit_code == 0 and "valid" in r.output and "metric top5" in r.output


def test_metric_defaults_to_accuracy_and_round_trips():
    d = tiny()
    del d["metric"]
    assert experiment_from_dict(d).metric == "accuracy"
    for m in ("accuracy", "top2", "top10"):
        exp = experiment_from_dict(tiny(metric=m))
        assert experiment_from_dict(yaml.safe_load(aimc.experiment.spec.experiment_to_yaml(exp))) == exp
        assert exp.scorer().name == m


def test_committed_cifar_run_loads_resumes_and_renders(tmp_path):
    run = ROOT / "runs" / "cifar10_resnet32"
    exp = load_run_experiment(run)
    assert exp.metric == "accuracy" and "metric" not in yaml.safe_load((run / "config.yaml").read_text())
    store = ResultsStore(run / "results.csv", value=exp.metric)
    assert list(store.table().columns)[-1] == "accuracy" and len(store.rows) > 100
    # resuming: the resolved experiment (metric filled in by its default) is the same experiment
    assert experiment_from_dict(yaml.safe_load(aimc.experiment.spec.experiment_to_yaml(exp))) == exp
    page = render_report(run)
    assert "<h2>Accuracy vs time</h2>" in page and "<th>accuracy (%)</th>" in page
    assert "82.56" in page and "88.49" in page  # the digital baselines of the README
    assert not re.search(r'class="error"', page)


def test_damaged_rows_of_a_top5_results_file_are_salvaged(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("sweep,model,periphery,compensation,t_seconds,seed,top5\n"
                 "pcm,m,joshi2020,none,25.0,0,0.93\n"
                 "pcm,m,joshi2020,none,25.0,1,1.5\n"      # a fraction above 1: damaged
                 "pcm,m,joshi2020,gdc,25.0,0,0.95\n")
    with pytest.raises(aimc.FileFormatError, match=r"1 damaged row.*line\(s\) 3.*2 row\(s\) are intact"):
        ResultsStore(p, value="top5")
    s = ResultsStore(p, value="top5", keep_good_rows=True)
    assert s.table()["top5"].tolist() == [0.93, 0.95]
    assert pd.read_csv(p).columns[-1] == "top5" and (tmp_path / "results.csv.damaged").exists()


def test_plot_axis_names_the_metric(top5_run, tmp_path, monkeypatch):
    import aimc.experiment.summary as summary
    import aimc.report

    labels = []

    def spy(*args, **kw):
        fig = real(*args, **kw)
        labels.append(fig.axes[0].get_ylabel())
        return fig

    real = summary.plot_summary
    monkeypatch.setattr(summary, "plot_summary", spy)
    monkeypatch.setattr(aimc.report, "write_report", lambda out: None)
    out = tmp_path / "copy"
    shutil.copytree(top5_run, out)
    summary.rewrite(out)
    assert labels == ["test top-5 accuracy (%)"]
