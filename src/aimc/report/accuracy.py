"""The report's accuracy sections: accuracy vs time per sweep (all curves on one axis, then one zoomed panel per
compensation so that curves a fraction of a percent apart separate), the digital baselines, the summary tables.

"Accuracy" is the run's metric (``metric:`` of the experiment: top-1 by default, or top-K); every value is a fraction
shown in %, and every label names the metric."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

from aimc.evaluation import format_time, summarize
from aimc.report.files import Run
from aimc.report.page import NO_RESULTS, comp_order, e, figure, img, note, pct, table, time_axis

MARKERS = "osD^vP*Xh<>"


def per_sweep(run: Run, render: Callable[..., str]) -> list[str]:
    """Per sweep: a heading, then ``render(sweep, summary)`` (HTML) or a note that it has no results yet."""
    parts = []
    for sw in run.exp.evaluation:
        rows = run.sweep_rows(sw.name)
        parts.append(f"<h3>Sweep <code>{e(sw.name)}</code> (analog config <code>{e(sw.analog)}</code>)</h3>")
        if not len(rows):
            parts.append(note(f"{NO_RESULTS} for this sweep."))
            continue
        parts.append(render(sw, ordered(summarize(rows, ("model", "compensation", "t_seconds"), run.value),
                                        list(sw.models))))
    if not run.exp.evaluation:
        parts.append(note(f"{NO_RESULTS}: the experiment defines no evaluation sweep."))
    return parts


def ordered(s: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """Summary rows by model (in the sweep's order), time, then compensation (none, gdc, gdc+bn), whatever order
    results.csv holds them in (a resumed run appends cells out of order)."""
    rank = {m: i for i, m in enumerate(models)}
    key = s.apply(lambda r: (rank.get(r["model"], len(rank)), float(r["t_seconds"]), comp_order(r["compensation"])),
                  axis=1)
    return s.iloc[sorted(range(len(s)), key=lambda i: key.iloc[i])].reset_index(drop=True)


def _keys(s: pd.DataFrame) -> list[tuple[str, str]]:
    models = list(dict.fromkeys(s["model"]))
    return sorted({(m, c) for m, c in zip(s["model"], s["compensation"])},
                  key=lambda k: (models.index(k[0]), comp_order(k[1])))


def _curve(ax, g: pd.DataFrame, color, marker: str, label: str) -> None:  # noqa: ANN001
    g = g.sort_values("t_seconds")
    t = g["t_seconds"].to_numpy(float)
    ax.plot(t, 100 * g["mean"].to_numpy(float), marker=marker, ms=4, lw=1.6, color=color, label=label)
    lo, hi = g["ci95_low"].to_numpy(float), g["ci95_high"].to_numpy(float)
    if np.isfinite(lo).any():
        ax.fill_between(t, 100 * np.clip(lo, 0, 1), 100 * np.clip(hi, 0, 1), color=color, alpha=0.2, lw=0)


def accuracy_figure(s: pd.DataFrame, base: pd.DataFrame, title: str, metric: str = "accuracy"):  # noqa: ANN201
    """All (model, compensation) curves of one sweep on one axis, with the digital baselines dashed (``metric``: the
    name of the run's metric, a fraction, and the value column of ``base``)."""
    from aimc.metrics import get_metric

    m = get_metric(metric)
    from matplotlib import colormaps

    fig, (ax,) = figure(9.4, 4.2)
    keys = _keys(s)
    cmap = colormaps["tab10" if len(keys) <= 10 else "tab20"]
    models = list(dict.fromkeys(s["model"]))
    for i, (model, comp) in enumerate(keys):
        _curve(ax, s[(s["model"] == model) & (s["compensation"] == comp)], cmap(i % cmap.N),
               MARKERS[models.index(model) % len(MARKERS)], f"{model} / {comp}")
    for j, (model, v) in enumerate(zip(base["model"], base[m.name])):
        ax.axhline(100 * float(v), color="0.35", ls=(0, (4, 2 + j)), lw=1,
                   label=f"digital {model}: {100 * float(v):.2f} %")
    time_axis(ax, s["t_seconds"].tolist())
    ax.set_ylabel(f"test {m.title}")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def panels_figure(s: pd.DataFrame, reference: dict[str, float], title: str,  # noqa: ANN201
                  metric: str = "accuracy"):
    """One panel per compensation, each with its own accuracy axis fitted to its curves, so that models a fraction
    of a percent apart separate; dotted: each model's digital accuracy (``reference``: model label -> fraction)."""
    from aimc.metrics import get_metric

    ylabel = f"test {get_metric(metric).title}"
    comps = sorted(dict.fromkeys(s["compensation"]), key=comp_order)
    models = list(dict.fromkeys(s["model"]))
    ncols = min(3, len(comps))
    nrows = math.ceil(len(comps) / ncols)
    fig, axes = figure(3.6 * ncols + 0.6, 3.2 * nrows, nrows=nrows, ncols=ncols)
    for ax, comp in zip(axes, comps):
        lo_all, hi_all = [], []
        for model in models:
            g = s[(s["model"] == model) & (s["compensation"] == comp)]
            if not len(g):
                continue
            color = f"C{models.index(model) % 10}"
            _curve(ax, g, color, MARKERS[models.index(model) % len(MARKERS)], model)
            lo = g["ci95_low"].where(np.isfinite(g["ci95_low"]), g["mean"])
            hi = g["ci95_high"].where(np.isfinite(g["ci95_high"]), g["mean"])
            lo_all.append(100 * float(lo.min()))
            hi_all.append(100 * float(hi.max()))
            ref = reference.get(model)
            if ref is not None and math.isfinite(ref):
                ax.axhline(100 * ref, color=color, ls=":", lw=1.2, label=f"{model} digital {100 * ref:.2f} %")
                lo_all.append(100 * ref)
                hi_all.append(100 * ref)
        if lo_all:
            lo, hi = min(lo_all), max(hi_all)
            pad = max(0.15 * (hi - lo), 0.1)
            ax.set_ylim(max(lo - pad, 0.0), min(hi + pad, 100.0))
        time_axis(ax, s["t_seconds"].tolist())
        ax.set_title(f"compensation: {comp}", fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(comps):]:
        ax.set_visible(False)
    handles = {}
    for ax in axes[:len(comps)]:  # one legend for all panels, below them: the panels stay uncluttered
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(4, len(handles)),
               fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def model_references(run: Run, sw, digital: dict[str, float | str]) -> dict[str, float]:  # noqa: ANN001
    """Model label of a sweep -> digital test accuracy of the stage it programs (when known)."""
    out = {}
    for label, stage in sw.models.items():
        acc = digital.get(stage)
        if isinstance(acc, float):
            out[label] = acc
    return out


def accuracy_section(run: Run, digital: dict[str, float | str]) -> str:
    base = run.baseline_rows()
    m = run.metric

    def render(sw, s: pd.DataFrame) -> str:  # noqa: ANN001
        name = f"{run.exp.name}: sweep {sw.name} ({sw.analog})"
        full = img(accuracy_figure(s, base, name, m.name), f"{m.label} vs time, sweep {sw.name}")
        if s["compensation"].nunique() < 1 or len(s) < 2:
            return full
        zoom = img(panels_figure(s, model_references(run, sw, digital), f"{name}, one panel per compensation",
                                 m.name), f"{m.label} vs time per compensation (zoomed), sweep {sw.name}")
        return (full + f"<p>The same curves, one panel per compensation, each with its own {e(m.label)} axis (so "
                "that curves a fraction of a percent apart separate); dotted: the digital test "
                f"{e(m.label)} of the stage each model programs (see Training).</p>" + zoom)

    intro = (f"<p>Test {e(m.title)} vs time after programming, log time axis. Lines: mean over seeds (programmed "
             "chips); shaded bands: 95 % confidence interval of the mean (Student t; none with a single seed). "
             "Dashed horizontal lines: digital baselines.</p>")
    return intro + "".join(per_sweep(run, render))


def baselines_section(run: Run) -> str:
    base = run.baseline_rows()
    if not len(base):
        return note(f"{NO_RESULTS}: no digital baseline in results.csv"
                    + ("" if run.exp.baselines else " (the experiment names none)") + ".")
    m = run.metric
    rows = [(label, run.exp.baselines.get(label, "?"), pct(v)) for label, v in zip(base["model"], run.values(base))]
    return (f"<p>{e(m.label.capitalize())} of the trained weights in floating point, on the same test set (every "
            "stage's is in Training).</p>" + table(["model", "stage", m.title], rows, [False, False, True]))


def tables_section(run: Run) -> str:
    def render(_sw, s: pd.DataFrame) -> str:  # noqa: ANN001
        body = []
        for r in s.itertuples():
            ci = "—" if not math.isfinite(r.ci95_low) else f"{pct(r.ci95_low)} – {pct(r.ci95_high)}"
            body.append((r.model, r.compensation, format_time(r.t_seconds), pct(r.mean), pct(r.std), ci, int(r.n)))
        return table(["model", "compensation", "t", f"mean {short} (%)", "std (%)", "95 % CI (%)", "n"], body,
                     [False, False, True, True, True, True, True])

    m = run.metric
    short = "acc." if m.name == "accuracy" else m.label
    parts = per_sweep(run, render)
    intro = ("<p>Per sweep, model, compensation and time: mean, standard deviation and 95 % confidence interval of "
             f"the mean {e(m.label)} over <i>n</i> seeds.</p>")
    full = run.table
    if len(full):
        rows = [(r.sweep, r.model, r.periphery, r.compensation, format_time(float(r.t_seconds)), int(r.seed),
                 pct(v)) for r, v in zip(full.itertuples(), run.values(full))]
        details = (f"<details><summary>Full results ({len(full)} rows of results.csv)</summary>"
                   + table(["sweep", "model", "periphery", "compensation", "t", "seed", m.title], rows,
                           [False, False, False, False, True, True, True]) + "</details>")
    else:
        details = note(f"{NO_RESULTS}: results.csv is empty or missing.")
    return intro + "".join(parts) + details
