"""``summary.md`` and ``accuracy_vs_time.png`` of a run directory, from its ``results.csv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimc.evaluation import plot_summary, summarize, summary_markdown
from aimc.experiment.spec import Experiment
from aimc._files import atomic_write

__all__ = ["write_summary", "summary_text", "rewrite"]


def summary_text(exp: Experiment, table: pd.DataFrame) -> str:
    """Markdown: digital baselines, then per sweep the mean, std and 95 % CI of the experiment's metric (accuracy
    unless ``metric:`` says otherwise) per model × compensation × time."""
    m = exp.scorer()
    lines = [f"# {exp.name}", "", f"Model `{exp.model.name}`, data `{exp.data.name}`, master seed {exp.seed}."
             + ("" if m.name == "accuracy" else f" Metric: {m.label} (`{m.name}`), {m.direction}."), ""]
    base = table[table["sweep"] == "baseline"]
    if len(base):
        lines += ["## Digital baselines", "", f"| model | {m.title} |", "|---|---|"]
        lines += [f"| {r.model} | {100 * getattr(r, m.name) if m.percent else getattr(r, m.name):.2f} |"
                  for r in base.itertuples()]
        lines.append("")
    for sw in exp.evaluation:
        t = table[table["sweep"] == sw.name]
        if not len(t):
            continue
        lines += [f"## Sweep `{sw.name}` (analog config `{sw.analog}`)", "",
                  summary_markdown(summarize(t, ("model", "compensation", "t_seconds"), m.name), m), ""]
    return "\n".join(lines)


def write_summary(out: str | Path, exp: Experiment, table: pd.DataFrame) -> None:
    """Write ``summary.md``, ``accuracy_vs_time.png`` (the file keeps its name whatever the metric; its axis names
    the metric) and, if the report module is present, ``report.html``."""
    out = Path(out)
    m = exp.scorer()
    text = summary_text(exp, table)
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(text))
    swept = table[table["sweep"] != "baseline"]
    if len(swept):
        s = summarize(swept.assign(model=swept["sweep"] + ": " + swept["model"]), ("model", "compensation",
                                                                                    "t_seconds"), m.name)
        atomic_write(out / "accuracy_vs_time.png", lambda tmp: plot_summary(s, tmp + ".png", title=exp.name, metric=m)
                     and Path(tmp + ".png").replace(tmp))
    try:
        from aimc.report import write_report
    except ImportError:
        return
    write_report(out)


def rewrite(run_dir: str | Path) -> list[Path]:
    """Re-create ``summary.md``, ``accuracy_vs_time.png`` and ``report.html`` from a run directory's files."""
    from aimc.experiment.spec import load_run_experiment
    from aimc.experiment.store import ResultsStore

    run_dir = Path(run_dir)
    exp = load_run_experiment(run_dir)
    table = ResultsStore(run_dir / "results.csv", value=exp.metric).table()
    write_summary(run_dir, exp, table)
    return [p for p in (run_dir / "summary.md", run_dir / "accuracy_vs_time.png", run_dir / "report.html")
            if p.exists()]
