"""``summary.md`` and ``accuracy_vs_time.png`` of a run directory, from its ``results.csv``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aimc.evaluation import plot_summary, summarize, summary_markdown
from aimc.experiment.spec import Experiment
from aimc.experiment.store import atomic_write

__all__ = ["write_summary", "summary_text", "rewrite"]


def summary_text(exp: Experiment, table: pd.DataFrame) -> str:
    """Markdown: digital baselines, then per sweep the mean, std and 95 % CI of accuracy per model × comp. × time."""
    lines = [f"# {exp.name}", "", f"Model `{exp.model.name}`, data `{exp.data.name}`, master seed {exp.seed}.", ""]
    base = table[table["sweep"] == "baseline"]
    if len(base):
        lines += ["## Digital baselines", "", "| model | accuracy (%) |", "|---|---|"]
        lines += [f"| {r.model} | {100 * r.accuracy:.2f} |" for r in base.itertuples()]
        lines.append("")
    for sw in exp.evaluation:
        t = table[table["sweep"] == sw.name]
        if not len(t):
            continue
        lines += [f"## Sweep `{sw.name}` (analog config `{sw.analog}`)", "",
                  summary_markdown(summarize(t, ("model", "compensation", "t_seconds"))), ""]
    return "\n".join(lines)


def write_summary(out: str | Path, exp: Experiment, table: pd.DataFrame) -> None:
    """Write ``summary.md``, ``accuracy_vs_time.png`` and, if the report module is present, ``report.html``."""
    out = Path(out)
    text = summary_text(exp, table)
    atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(text))
    swept = table[table["sweep"] != "baseline"]
    if len(swept):
        s = summarize(swept.assign(model=swept["sweep"] + ": " + swept["model"]), ("model", "compensation",
                                                                                    "t_seconds"))
        atomic_write(out / "accuracy_vs_time.png", lambda tmp: plot_summary(s, tmp + ".png", title=exp.name)
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
    table = ResultsStore(run_dir / "results.csv").table()
    write_summary(run_dir, exp, table)
    return [p for p in (run_dir / "summary.md", run_dir / "accuracy_vs_time.png", run_dir / "report.html")
            if p.exists()]
