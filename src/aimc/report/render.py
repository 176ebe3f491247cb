"""Assembling ``report.html``: the header, the configuration and environment sections, and the page itself from
the sections of :mod:`aimc.report.accuracy`, :mod:`~aimc.report.training`, :mod:`~aimc.report.cost` and
:mod:`~aimc.report.chip`."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from aimc._files import atomic_write
from aimc.report.accuracy import accuracy_section, baselines_section, tables_section
from aimc.report.chip import chips, devices_section, gdc_section
from aimc.report.cost import cost_section
from aimc.report.files import Run, digital_accuracies, load, log_sessions, stage_histories
from aimc.report.page import CSS, e, error, note, table
from aimc.report.training import times_section, training_section

__all__ = ["write_report", "render_report", "SECTIONS"]

log = logging.getLogger("aimc.report")

SECTIONS = [
    ("accuracy", "Accuracy vs time"),
    ("baselines", "Digital baselines"),
    ("training", "Training"),
    ("tables", "Summary tables"),
    ("cost", "Cost"),
    ("devices", "Programming error and conductances"),
    ("gdc", "GDC factors vs time"),
    ("times", "Wall times"),
    ("config", "Configuration"),
    ("environment", "Environment"),
]
"""(anchor, title) of the page's sections, in order."""


def _titles(run: Run) -> dict[str, str]:
    """Anchor -> title of each section; the first names the run's metric ("Top-5 accuracy vs time")."""
    label = run.metric.label
    return {k: (f"{label[0].upper()}{label[1:]} vs time" if k == "accuracy" else t) for k, t in SECTIONS}


def _header(run: Run) -> str:
    exp = run.exp
    env = _environment(run)
    started = env.get("started") if isinstance(env, dict) else None
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta = (f"Experiment <b>{e(exp.name)}</b> · model <code>{e(exp.model.name)}</code> · data "
            f"<code>{e(exp.data.name)}</code> · master seed {e(exp.seed)}<br>"
            f"Run started {e(started or 'unknown')} · report generated {e(generated)} · run directory "
            f"<code>{e(run.path.resolve())}</code>")
    n_sweeps = len(exp.evaluation)
    n_stages = len(exp.training)
    what = (f"What this is: the results of an <code>aimc run</code> — {n_stages} training stage(s), "
            f"{len(exp.baselines)} digital baseline(s) and {n_sweeps} evaluation sweep(s) of a network whose weights "
            "are programmed onto simulated phase-change-memory crossbars, scored over time after programming "
            "(conductance drift and noise) with and without drift compensation. Rebuilt from the run directory's "
            "files; re-create it with <code>aimc report RUN_DIR</code>.")
    nav = "".join(f'<li><a href="#{k}">{e(t)}</a></li>' for k, t in _titles(run).items())
    problems = "".join(error(p) for p in run.problems)
    return (f"<h1>aimc run report: {e(exp.name)}</h1><p class=\"meta\">{meta}</p><p class=\"what\">{what}</p>"
            f"{problems}<nav><b>Contents</b><ol>{nav}</ol></nav>")


def _config_section(run: Run) -> str:
    parts = ["<h3><code>config.yaml</code> (the resolved experiment)</h3>",
             f"<pre>{e(run.text('config.yaml') or '(missing)')}</pre>"]
    adir = run.path / "analog"
    files = sorted(adir.glob("*.yaml")) if adir.is_dir() else []
    for p in files:
        parts.append(f"<h3><code>analog/{e(p.name)}</code></h3><pre>{e(run.text(f'analog/{p.name}') or '')}</pre>")
    if not files:
        parts.append(note("no analog/*.yaml files in the run directory."))
    return "".join(parts)


def _environment(run: Run) -> dict | str | None:
    text = run.text("environment.json")
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _environment_section(run: Run) -> str:
    env = _environment(run)
    if env is None:
        return note("environment.json is missing.")
    if isinstance(env, str):
        return error("environment.json is not valid JSON; its text:") + f"<pre>{e(env)}</pre>"
    rows = []
    for k in ("aimc", "torch", "python", "platform", "threads", "seed", "started"):
        if k in env:
            rows.append((k, env[k]))
    cmd = env.get("command")
    if isinstance(cmd, list):
        import shlex

        rows.append(("command", shlex.join(str(c) for c in cmd)))
    return table(["", "value"], rows) + f"<details><summary>environment.json</summary><pre>" \
        f"{e(json.dumps(env, indent=2, ensure_ascii=False))}</pre></details>"


# ---- entry points -------------------------------------------------------------------------------------------------
def render_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one self-contained HTML document (a string)."""
    run = load(Path(run_dir))
    histories = stage_histories(run)
    digital = digital_accuracies(run, histories)
    programmed = chips(run)
    body = {
        "accuracy": accuracy_section(run, digital),
        "baselines": baselines_section(run),
        "training": training_section(run, histories, digital),
        "tables": tables_section(run),
        "cost": cost_section(run),
        "devices": devices_section(run, programmed),
        "gdc": gdc_section(run, programmed),
        "times": times_section(run, histories, log_sessions(run)),
        "config": _config_section(run),
        "environment": _environment_section(run),
    }
    titles = _titles(run)
    sections = "".join(f'<section id="{k}"><h2>{e(titles[k])}</h2>{body[k]}</section>' for k, _ in SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>aimc report: {e(run.exp.name)}</title><style>{CSS}</style></head>"
            f"<body><main>{_header(run)}{sections}"
            "<footer><p class=\"note\">Self-contained: all figures are embedded; no network access is needed."
            "</p></footer></main></body></html>\n")


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` into ``run_dir`` (atomically) and return its path."""
    run_dir = Path(run_dir)
    page = render_report(run_dir)
    out = run_dir / "report.html"
    atomic_write(out, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    log.info("report written to %s (%.0f kB)", out, out.stat().st_size / 1024)
    return out
