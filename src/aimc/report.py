"""``report.html``: one self-contained page describing a run directory written by ``aimc run``.

The page holds, in order: what the run is; accuracy vs time after programming per sweep (mean and 95 % confidence
band of the mean over seeds, per model and compensation); the digital baselines; the summary tables (and the full
results in a collapsed block); the cost of one inference (energy, latency, devices and tiles from ``aimc.cost`` next to
the accuracy over time, and a per-layer energy breakdown as an inline SVG bar chart); per-layer programming error and conductance histograms of the programmed model; the
GDC factor of every tile over time; the resolved configuration; the environment.

Everything is inline: CSS in a ``<style>`` element, plots as base64 PNG ``data:`` URIs, no scripts and no external
resources, so the file can be mailed, archived or opened offline. It is rebuilt from the run directory's files
alone (``aimc report RUN_DIR``), never from in-memory state of the run.

The device sections re-create the programmed chip of each sweep: the first model of the sweep, converted with the
sweep's analog config and programmed with seed 0, then set to each time of the sweep with GDC on (read seed 0), the
same conductances the evaluation's seed 0 scored.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aimc.evaluation import COMPENSATIONS, format_time, summarize
from aimc.experiment.store import RESULT_COLUMNS, atomic_write

__all__ = ["write_report", "render_report"]

log = logging.getLogger("aimc.report")

DPI = 90
_NO_RESULTS = "no results yet"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{margin:0 0 4px;font-size:1.7em}h2{margin-top:2.2em;border-bottom:2px solid #e3e6ec;padding-bottom:4px}
h3{margin-top:1.6em;font-size:1.1em}
.meta{color:#555;margin:0 0 12px}.what{background:#eef4fb;border-left:4px solid #3b78c2;padding:8px 12px;margin:12px 0}
.note{color:#666;font-style:italic}.error{color:#9b1c1c;background:#fdf0f0;padding:6px 10px;border-radius:4px}
nav ol{columns:2;margin:6px 0 0;padding-left:22px}nav a{color:#2a5d9f;text-decoration:none}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.88em}
th,td{border:1px solid #d9dde4;padding:3px 8px;text-align:left}th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:nth-child(even){background:#fafbfc}
img{max-width:100%;height:auto;display:block;margin:8px 0}
pre{background:#f3f4f6;border:1px solid #e1e4e8;padding:10px;overflow:auto;font-size:.8em;max-height:480px}
details{margin:8px 0}summary{cursor:pointer;color:#2a5d9f}code{background:#f0f2f5;padding:0 3px;border-radius:3px}
"""

_SECTIONS = [
    ("accuracy", "Accuracy vs time"),
    ("baselines", "Digital baselines"),
    ("tables", "Summary tables"),
    ("cost", "Cost"),
    ("devices", "Programming error and conductances"),
    ("gdc", "GDC factors vs time"),
    ("config", "Configuration"),
    ("environment", "Environment"),
]


# ---- small HTML helpers -------------------------------------------------------------------------------------------
def _e(x: object) -> str:
    return html.escape(str(x))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _error(text: str) -> str:
    return f'<p class="error">{_e(text)}</p>'


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[bool] | None = None) -> str:
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{_e(v)}</td>' if numeric[i] else f"<td>{_e(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(x: float, digits: int = 2) -> str:
    return "—" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):.{digits}f}"


def _figure(w: float, h: float, ncols: int = 1, **kw: Any):  # noqa: ANN202
    """A matplotlib figure independent of pyplot (no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    return fig, axes


def _img(fig, alt: str) -> str:  # noqa: ANN001
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _time_axis(ax, times: Sequence[float]) -> None:  # noqa: ANN001
    """Log time axis (symlog if t = 0 occurs), ticks at the sweep's times labelled 25 s, 1 h, 1 d, ..."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ts = sorted({float(t) for t in times})
    pos = [t for t in ts if t > 0]
    if len(pos) < len(ts):
        ax.set_xscale("symlog", linthresh=min(pos) if pos else 1.0)
    else:
        ax.set_xscale("log")
    if 0 < len(ts) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(ts))
        ax.set_xticklabels([format_time(t) for t in ts])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    if len(pos) == 1 and len(ts) == 1:
        ax.set_xlim(pos[0] / 3, pos[0] * 3)
    ax.set_xlabel("time after programming")


# ---- reading the run directory ------------------------------------------------------------------------------------
@dataclass
class _Run:
    path: Path
    exp: Any
    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)

    def text(self, rel: str) -> str | None:
        p = self.path / rel
        try:
            return p.read_text()
        except (OSError, UnicodeDecodeError):
            return None


def _load(run_dir: Path) -> _Run:
    from aimc.errors import FileFormatError
    from aimc.experiment.spec import load_run_experiment
    from aimc.experiment.store import ResultsStore

    exp = load_run_experiment(run_dir)
    problems = []
    try:
        table = ResultsStore(run_dir / "results.csv").table()
    except FileFormatError as e:
        problems.append(str(e))
        table = pd.DataFrame(columns=RESULT_COLUMNS)
    return _Run(run_dir, exp, table, problems)


def _sweep_rows(run: _Run, name: str) -> pd.DataFrame:
    return run.table[run.table["sweep"] == name]


def _comp_order(c: str) -> int:
    return COMPENSATIONS.index(c) if c in COMPENSATIONS else len(COMPENSATIONS)


# ---- sections -----------------------------------------------------------------------------------------------------
def _header(run: _Run) -> str:
    exp = run.exp
    env = _environment(run)
    started = env.get("started") if isinstance(env, dict) else None
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta = (f"Experiment <b>{_e(exp.name)}</b> · model <code>{_e(exp.model.name)}</code> · data "
            f"<code>{_e(exp.data.name)}</code> · master seed {_e(exp.seed)}<br>"
            f"Run started {_e(started or 'unknown')} · report generated {_e(generated)} · run directory "
            f"<code>{_e(run.path.resolve())}</code>")
    n_sweeps = len(exp.evaluation)
    n_stages = len(exp.training)
    what = (f"What this is: the results of an <code>aimc run</code> — {n_stages} training stage(s), "
            f"{len(exp.baselines)} digital baseline(s) and {n_sweeps} evaluation sweep(s) of a network whose weights "
            "are programmed onto simulated phase-change-memory crossbars, scored over time after programming "
            "(conductance drift and noise) with and without drift compensation. Rebuilt from the run directory's "
            "files; re-create it with <code>aimc report RUN_DIR</code>.")
    nav = "".join(f'<li><a href="#{k}">{_e(t)}</a></li>' for k, t in _SECTIONS)
    problems = "".join(_error(p) for p in run.problems)
    return (f"<h1>aimc run report: {_e(exp.name)}</h1><p class=\"meta\">{meta}</p><p class=\"what\">{what}</p>"
            f"{problems}<nav><b>Contents</b><ol>{nav}</ol></nav>")


def _baseline_rows(run: _Run) -> pd.DataFrame:
    return run.table[run.table["sweep"] == "baseline"]


def _per_sweep(run: _Run, render) -> list[str]:  # noqa: ANN001
    """Per sweep: a heading, then ``render(sweep, summary)`` (HTML) or a note that it has no results yet."""
    parts = []
    for sw in run.exp.evaluation:
        rows = _sweep_rows(run, sw.name)
        parts.append(f"<h3>Sweep <code>{_e(sw.name)}</code> (analog config <code>{_e(sw.analog)}</code>)</h3>")
        if not len(rows):
            parts.append(_note(f"{_NO_RESULTS} for this sweep."))
            continue
        parts.append(render(sw, summarize(rows, ("model", "compensation", "t_seconds"))))
    if not run.exp.evaluation:
        parts.append(_note(f"{_NO_RESULTS}: the experiment defines no evaluation sweep."))
    return parts


def _accuracy_section(run: _Run) -> str:
    base = _baseline_rows(run)
    parts = _per_sweep(run, lambda sw, s: _img(
        _accuracy_figure(s, base, f"{run.exp.name}: sweep {sw.name} ({sw.analog})"),
        f"accuracy vs time, sweep {sw.name}"))
    intro = ("<p>Test accuracy (%) vs time after programming, log time axis. Lines: mean over seeds (programmed "
             "chips); shaded bands: 95 % confidence interval of the mean (Student t; none with a single seed). "
             "Dashed horizontal lines: digital baselines.</p>")
    return intro + "".join(parts)


def _accuracy_figure(s: pd.DataFrame, base: pd.DataFrame, title: str):  # noqa: ANN202
    fig, (ax,) = _figure(9.4, 4.2)
    from matplotlib import colormaps

    keys = sorted({(m, c) for m, c in zip(s["model"], s["compensation"])},
                  key=lambda k: (list(s["model"]).index(k[0]), _comp_order(k[1])))
    cmap = colormaps["tab10" if len(keys) <= 10 else "tab20"]
    markers = "osD^vP*Xh<>"
    models = list(dict.fromkeys(s["model"]))
    for i, (model, comp) in enumerate(keys):
        g = s[(s["model"] == model) & (s["compensation"] == comp)].sort_values("t_seconds")
        t = g["t_seconds"].to_numpy(float)
        color = cmap(i % cmap.N)
        ax.plot(t, 100 * g["mean"].to_numpy(float), marker=markers[models.index(model) % len(markers)], ms=4,
                lw=1.6, color=color, label=f"{model} / {comp}")
        lo, hi = g["ci95_low"].to_numpy(float), g["ci95_high"].to_numpy(float)
        if np.isfinite(lo).any():
            ax.fill_between(t, 100 * np.clip(lo, 0, 1), 100 * np.clip(hi, 0, 1), color=color, alpha=0.2, lw=0)
    for j, r in enumerate(base.itertuples()):
        ax.axhline(100 * float(r.accuracy), color="0.35", ls=(0, (4, 2 + j)), lw=1,
                   label=f"digital {r.model}: {100 * float(r.accuracy):.2f} %")
    _time_axis(ax, s["t_seconds"].tolist())
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def _baselines_section(run: _Run) -> str:
    base = _baseline_rows(run)
    if not len(base):
        return _note(f"{_NO_RESULTS}: no digital baseline in results.csv"
                     + ("" if run.exp.baselines else " (the experiment names none)") + ".")
    rows = [(r.model, run.exp.baselines.get(r.model, "?"), _pct(r.accuracy)) for r in base.itertuples()]
    return ("<p>Accuracy of the trained weights in floating point, on the same test set.</p>"
            + _table(["model", "stage", "accuracy (%)"], rows, [False, False, True]))


def _tables_section(run: _Run) -> str:
    def render(_sw, s: pd.DataFrame) -> str:  # noqa: ANN001
        body = []
        for r in s.itertuples():
            ci = "—" if not math.isfinite(r.ci95_low) else f"{_pct(r.ci95_low)} – {_pct(r.ci95_high)}"
            body.append((r.model, r.compensation, format_time(r.t_seconds), _pct(r.mean), _pct(r.std), ci,
                         int(r.n)))
        return _table(["model", "compensation", "t", "mean acc. (%)", "std (%)", "95 % CI (%)", "n"], body,
                      [False, False, True, True, True, True, True])

    parts = _per_sweep(run, render)
    intro = ("<p>Per sweep, model, compensation and time: mean, standard deviation and 95 % confidence interval of "
             "the mean accuracy over <i>n</i> seeds.</p>")
    full = run.table
    if len(full):
        rows = [(r.sweep, r.model, r.periphery, r.compensation, format_time(float(r.t_seconds)), int(r.seed),
                 _pct(r.accuracy)) for r in full.itertuples()]
        details = (f"<details><summary>Full results ({len(full)} rows of results.csv)</summary>"
                   + _table(["sweep", "model", "periphery", "compensation", "t", "seed", "accuracy (%)"], rows,
                            [False, False, False, False, True, True, True]) + "</details>")
    else:
        details = _note(f"{_NO_RESULTS}: results.csv is empty or missing.")
    return intro + "".join(parts) + details


# ---- cost: energy, latency and devices next to accuracy ------------------------------------------------------------
COST_HARDWARE = "hermes_4phase"
"""Hardware preset of the report's cost section (HERMES in the 4-phase mode its accuracy results used)."""


def _cost_section(run: _Run) -> str:
    from aimc.cost import estimate
    from aimc.cost.plots import energy_bars_svg
    from aimc.cost.render import digital_summary, experiment_target, fmt_energy, fmt_time

    names = list(dict.fromkeys(sw.analog for sw in run.exp.evaluation)) or list(run.exp.analog)[:1]
    intro = (f"<p>One inference (batch 1) on the <code>{_e(COST_HARDWARE)}</code> hardware preset of "
             "<code>aimc.cost</code>, with the tile size and DAC/ADC bits of each analog config (the preset's where "
             "the config has none), next to the accuracy the sweeps measured. Estimates, not measurements: the "
             "presets are calibrated to published chip figures, other constants are sourced or assumed (see "
             "<code>aimc.cost.params</code>). Re-create with <code>aimc cost RUN_DIR</code>.</p>")
    parts = []
    for name in names:
        parts.append(f"<h3>Analog config <code>{_e(name)}</code></h3>")
        try:
            tgt = experiment_target(run.exp, run.exp.name, "run", analog=name)
            rep = estimate(tgt.model, COST_HARDWARE, config=tgt.config, input_shape=tgt.input_shape,
                           on_overflow="chips", name=run.exp.model.name)
        except Exception as e:  # noqa: BLE001 - the report must not fail a finished run; say what went wrong
            log.warning("report: cost of analog config %s could not be estimated: %s", name, e)
            parts.append(_note(f"could not estimate the cost ({type(e).__name__}: {e})"))
            continue
        t, mp = rep.totals, rep.mapping
        energy, lat = fmt_energy(t["energy_j"]), fmt_time(t["latency_s"])
        parts.append(_table(
            ["tiles", "chips", "PCM devices", "energy / inference", "latency (layer-serial)", "pipelined: one every",
             f"digital baseline ({rep.baseline.name})", "baseline / analog energy"],
            [(f"{t['tiles']} of {mp.tile_rows}×{mp.tile_cols}", t["n_chips"], f"{t['devices']:,}", energy, lat,
              fmt_time(t["pipeline_interval_s"]), f"{fmt_energy(t['baseline_energy_j'])}, "
              f"{fmt_time(t['baseline_latency_s'])}", f"{t['energy_ratio']:.3g}")], [True] * 8))
        for sw in run.exp.evaluation:
            if sw.analog != name:
                continue
            rows = _sweep_rows(run, sw.name)
            times = sorted({float(x) for x in sw.times})
            body = []
            if len(rows):
                s = summarize(rows, ("model", "compensation", "t_seconds"))
                for (model, comp), g in s.groupby(["model", "compensation"], sort=False):
                    acc = {float(r.t_seconds): r.mean for r in g.itertuples()}
                    body.append((model, comp, f"{t['devices']:,}", energy, lat,
                                 *[_pct(acc.get(x, float("nan"))) for x in times]))
            parts.append(f"<p>Sweep <code>{_e(sw.name)}</code>: accuracy (%, mean over seeds) after programming"
                         + ("" if body else f" — {_NO_RESULTS}") + "</p>")
            if body:
                parts.append(_table(["model", "compensation", "devices", "energy / inference", "latency",
                                     *[format_time(x) for x in times]], body,
                                    [False, False] + [True] * (3 + len(times))))
        parts.append(energy_bars_svg(rep, f"{run.exp.model.name} on {COST_HARDWARE}, analog config {name}: energy "
                                          "per inference by layer"))
        parts.append(_note("Stays digital: " + "; ".join(digital_summary(rep)) if mp.digital else
                           "Every module with weights is analog.") + "".join(_note(n) for n in rep.notes))
    return intro + "".join(parts)


# ---- device state: programming error, conductances, GDC -------------------------------------------------------------
@dataclass
class _Chip:
    """One programmed model of a sweep: per-layer statistics and the GDC factors per tile over the sweep's times."""

    sweep: str
    analog: str
    label: str
    stage: str
    layers: list[dict[str, Any]]
    g_target: np.ndarray
    g_prog: np.ndarray
    times: list[float]
    alpha: np.ndarray  # (n_times, n_tiles)


def _chip(run: _Run, sw: Any) -> _Chip:
    import torch

    import aimc
    from aimc.experiment.runner import _Context
    from aimc.nn.convert import analog_layers

    label = next(iter(sw.models))
    stage = sw.models[label]
    model = aimc.convert(_Context(run.exp, run.path).weights(stage), run.exp.analog_config(sw.analog))
    model.eval()
    aimc.program(model, seed=0)
    counts = {r[0]: (r[1], 2 * r[3], r[4]) for r in model.aimc_report.analog}
    layers, g_t, g_p = [], [], []
    with torch.no_grad():
        for name, layer in analog_layers(model):
            err, err_on, n_dev = [], [], 0
            for mat, _ in layer.analog_matrices().values():
                t_, p_ = mat.g_target.double().flatten(), mat.g_prog.double().flatten()
                g_t.append(t_.float().numpy())
                g_p.append(p_.float().numpy())
                err.append((p_ - t_).numpy())
                err_on.append((p_ - t_)[t_ > 0].numpy())
                n_dev += t_.numel()
            e = np.concatenate(err)
            e_on = np.concatenate(err_on)
            kind, devices, tiles = counts.get(name, (type(layer).__name__, n_dev, 0))
            layers.append({"name": name or "<root>", "type": kind, "devices": devices, "tiles": tiles,
                           "mean": float(e.mean()) if e.size else float("nan"),
                           "std": float(e.std()) if e.size > 1 else float("nan"),
                           "std_on": float(e_on.std()) if e_on.size > 1 else float("nan")})
        times = sorted({float(t) for t in sw.times})
        alpha = []
        for t in times:
            aimc.at_time(model, t, seed=0, gdc=True)
            alpha.append(np.concatenate([mat.gdc_alpha.detach().double().flatten().numpy()
                                         for _, layer in analog_layers(model)
                                         for mat, _ in layer.analog_matrices().values()]))
    return _Chip(sw.name, sw.analog, label, stage, layers, np.concatenate(g_t), np.concatenate(g_p), times,
                 np.stack(alpha) if alpha else np.empty((0, 0)))


def _chips(run: _Run) -> dict[str, _Chip | str]:
    """Per sweep: the programmed chip, or why it could not be built (e.g. stage weights not trained yet)."""
    out: dict[str, _Chip | str] = {}
    cache: dict[tuple, _Chip] = {}
    for sw in run.exp.evaluation:
        label = next(iter(sw.models), None)
        if label is None:
            out[sw.name] = "the sweep names no model."
            continue
        key = (sw.analog, sw.models[label], tuple(sorted({float(t) for t in sw.times})))
        try:
            if key not in cache:
                cache[key] = _chip(run, sw)
            c = cache[key]
            out[sw.name] = _Chip(sw.name, sw.analog, label, c.stage, c.layers, c.g_target, c.g_prog, c.times,
                                 c.alpha)
        except Exception as e:  # noqa: BLE001 - the report must not fail a finished run; say what went wrong
            log.warning("report: device state of sweep %s could not be rebuilt: %s", sw.name, e)
            out[sw.name] = f"could not rebuild the programmed model ({type(e).__name__}: {e})"
    return out


def _chip_title(c: _Chip) -> str:
    return (f"<h3>Sweep <code>{_e(c.sweep)}</code>: model <code>{_e(c.label)}</code> (stage <code>{_e(c.stage)}"
            f"</code>) on analog config <code>{_e(c.analog)}</code></h3>")


def _per_chip(run: _Run, chips: dict[str, _Chip | str], intro: str, render) -> str:  # noqa: ANN001
    """``intro`` then, per sweep, ``render(chip)`` (a list of HTML parts), or the reason there is no chip."""
    if not run.exp.evaluation:
        return intro + _note(f"{_NO_RESULTS}: the experiment defines no evaluation sweep.")
    parts = []
    for sw in run.exp.evaluation:
        c = chips[sw.name]
        if isinstance(c, str):
            parts.append(f"<h3>Sweep <code>{_e(sw.name)}</code></h3>" + _note(c))
        else:
            parts.extend(render(c))
    return intro + "".join(parts)


def _devices_section(run: _Run, chips: dict[str, _Chip | str]) -> str:
    intro = ("<p>For each sweep, its first model converted with the sweep's analog config and programmed with seed "
             "0 (the chip of seed 0). Programming error = g<sub>prog</sub> − g<sub>target</sub> over every device "
             "of the layer (both devices of each differential pair; the idle one has g<sub>target</sub> = 0), in "
             "µS; the last column restricts it to devices with g<sub>target</sub> &gt; 0.</p>")

    def render(c: _Chip) -> list[str]:
        rows = [(r["name"], r["type"], f"{r['devices']:,}", r["tiles"], f"{r['mean']:+.3f}", f"{r['std']:.3f}",
                 f"{r['std_on']:.3f}") for r in c.layers]
        tot_dev = sum(r["devices"] for r in c.layers)
        tot_tiles = sum(r["tiles"] for r in c.layers)
        all_err = c.g_prog.astype(np.float64) - c.g_target.astype(np.float64)
        rows.append(("all layers", "", f"{tot_dev:,}", tot_tiles, f"{all_err.mean():+.3f}",
                     f"{all_err.std():.3f}", f"{all_err[c.g_target > 0].std():.3f}"
                     if (c.g_target > 0).sum() > 1 else "—"))
        return [_chip_title(c),
                _table(["layer", "type", "devices", "tiles", "mean error (µS)", "std error (µS)",
                        "std error, g_target > 0 (µS)"], rows, [False, False, True, True, True, True, True]),
                _img(_device_figure(c), f"conductance histograms and programming error, sweep {c.sweep}")]

    return _per_chip(run, chips, intro, render)


def _device_figure(c: _Chip):  # noqa: ANN202
    fig, (ax1, ax2) = _figure(10, max(3.4, 0.28 * len(c.layers) + 1.2), ncols=2, width_ratios=[1.25, 1])
    lo = float(min(c.g_target.min(), c.g_prog.min())) if c.g_target.size else 0.0
    hi = float(max(c.g_target.max(), c.g_prog.max())) if c.g_target.size else 1.0
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 81)
    ax1.hist(c.g_target, bins=bins, histtype="stepfilled", alpha=0.35, color="C0", label="g_target")
    ax1.hist(c.g_prog, bins=bins, histtype="step", lw=1.3, color="C3", label="g_prog (programmed)")
    ax1.set_yscale("log")
    ax1.set_xlabel("conductance (µS)")
    ax1.set_ylabel("devices")
    ax1.set_title(f"all {c.g_target.size:,} devices", fontsize=9)
    ax1.legend(fontsize=8)
    names = [r["name"] for r in c.layers]
    y = np.arange(len(names))
    ax2.barh(y - 0.2, [r["std"] for r in c.layers], height=0.4, color="C1", label="all devices")
    ax2.barh(y + 0.2, [r["std_on"] for r in c.layers], height=0.4, color="C4", label="devices with g_target > 0")
    ax2.set_yticks(y, names, fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("programming-error std (µS)")
    ax2.set_title("per analog layer", fontsize=9)
    ax2.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)
    ax2.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"sweep {c.sweep}: {c.label} on {c.analog}, seed 0", fontsize=10)
    return fig


def _gdc_section(run: _Run, chips: dict[str, _Chip | str]) -> str:
    intro = ("<p>Global drift compensation factor α of every crossbar tile (all analog layers) at each time of the "
             "sweep, for the same chip (seed 0, read seed 0): thin lines, one per tile; thick line: median over "
             "tiles. α ≈ 1 right after programming and grows as the conductances drift down.</p>")

    def render(c: _Chip) -> list[str]:
        if c.alpha.size == 0:
            return [_chip_title(c), _note("no GDC factors (no times or no tiles).")]
        med = np.median(c.alpha, axis=1)
        rows = [(format_time(t), f"{m:.4f}", f"{a.min():.4f}", f"{a.max():.4f}")
                for t, m, a in zip(c.times, med, c.alpha)]
        return [_chip_title(c), _img(_gdc_figure(c, med), f"GDC factor per tile vs time, sweep {c.sweep}"),
                _table(["t", "median α", "min α", "max α"], rows, [True, True, True, True])]

    return _per_chip(run, chips, intro, render)


def _gdc_figure(c: _Chip, med: np.ndarray):  # noqa: ANN202
    fig, (ax,) = _figure(7.2, 3.4)
    n_tiles = c.alpha.shape[1]
    lw, al = (0.8, 0.5) if n_tiles <= 50 else (0.4, max(0.05, 0.5 * 50 / n_tiles))
    ax.plot(c.times, c.alpha, color="C0", lw=lw, alpha=al, marker="." if len(c.times) == 1 else None)
    ax.plot(c.times, med, color="k", lw=2.2, marker="o", ms=4, label=f"median of {n_tiles} tile(s)")
    _time_axis(ax, c.times)
    ax.set_ylabel("GDC factor α")
    ax.set_title(f"sweep {c.sweep}: {c.label} on {c.analog}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _config_section(run: _Run) -> str:
    parts = ["<h3><code>config.yaml</code> (the resolved experiment)</h3>",
             f"<pre>{_e(run.text('config.yaml') or '(missing)')}</pre>"]
    adir = run.path / "analog"
    files = sorted(adir.glob("*.yaml")) if adir.is_dir() else []
    for p in files:
        parts.append(f"<h3><code>analog/{_e(p.name)}</code></h3><pre>{_e(run.text(f'analog/{p.name}') or '')}</pre>")
    if not files:
        parts.append(_note("no analog/*.yaml files in the run directory."))
    return "".join(parts)


def _environment(run: _Run) -> dict | str | None:
    text = run.text("environment.json")
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _environment_section(run: _Run) -> str:
    env = _environment(run)
    if env is None:
        return _note("environment.json is missing.")
    if isinstance(env, str):
        return _error("environment.json is not valid JSON; its text:") + f"<pre>{_e(env)}</pre>"
    rows = []
    for k in ("aimc", "torch", "python", "platform", "threads", "seed", "started"):
        if k in env:
            rows.append((k, env[k]))
    cmd = env.get("command")
    if isinstance(cmd, list):
        import shlex

        rows.append(("command", shlex.join(str(c) for c in cmd)))
    return _table(["", "value"], rows) + f"<details><summary>environment.json</summary><pre>" \
        f"{_e(json.dumps(env, indent=2, ensure_ascii=False))}</pre></details>"


# ---- entry points -------------------------------------------------------------------------------------------------
def render_report(run_dir: str | Path) -> str:
    """The report of ``run_dir`` as one self-contained HTML document (a string)."""
    run = _load(Path(run_dir))
    chips = _chips(run)
    body = {
        "accuracy": _accuracy_section(run),
        "baselines": _baselines_section(run),
        "tables": _tables_section(run),
        "cost": _cost_section(run),
        "devices": _devices_section(run, chips),
        "gdc": _gdc_section(run, chips),
        "config": _config_section(run),
        "environment": _environment_section(run),
    }
    sections = "".join(f'<section id="{k}"><h2>{_e(title)}</h2>{body[k]}</section>' for k, title in _SECTIONS)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>aimc report: {_e(run.exp.name)}</title><style>{_CSS}</style></head>"
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
