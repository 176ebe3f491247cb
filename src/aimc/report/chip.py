"""The report's device sections: the programmed chip of each sweep (its first model, converted with the sweep's
analog config and programmed with seed 0), per-layer programming error and conductance histograms, and the GDC
factor of every tile at each time of the sweep (read seed 0, GDC on: the conductances the evaluation's seed 0
scored)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from aimc.evaluation import format_time
from aimc.report.files import Run, stage_model
from aimc.report.page import NO_RESULTS, e, figure, img, note, table, time_axis

log = logging.getLogger("aimc.report")


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


def build_chip(run: Run, sw: Any) -> _Chip:
    import torch

    from aimc.inference import at_time, program
    from aimc.nn.convert import analog_layers, convert

    label = next(iter(sw.models))
    stage = sw.models[label]
    model = convert(stage_model(run, stage), run.exp.analog_config(sw.analog))
    model.eval()
    program(model, seed=0)
    counts = {r[0]: (r[1], 2 * r[3], r[4]) for r in model.aimc_report.analog}
    layers, g_t, g_p = [], [], []
    with torch.no_grad():
        for name, layer in analog_layers(model):
            err, err_on, n_dev = [], [], 0
            for mat, w in layer.analog_matrices().values():
                st = mat.device_state(w.reshape(w.shape[0], -1))
                t_, p_ = st.g_target.double().flatten(), st.g_prog.double().flatten()
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
            at_time(model, t, seed=0, gdc=True)
            alpha.append(np.concatenate([mat.gdc_alpha.detach().double().flatten().numpy()
                                         for _, layer in analog_layers(model)
                                         for mat, _ in layer.analog_matrices().values()]))
    return _Chip(sw.name, sw.analog, label, stage, layers, np.concatenate(g_t), np.concatenate(g_p), times,
                 np.stack(alpha) if alpha else np.empty((0, 0)))


def chips(run: Run) -> dict[str, _Chip | str]:
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
                cache[key] = build_chip(run, sw)
            c = cache[key]
            out[sw.name] = _Chip(sw.name, sw.analog, label, c.stage, c.layers, c.g_target, c.g_prog, c.times,
                                 c.alpha)
        except Exception as e:  # noqa: BLE001 - the report must not fail a finished run; say what went wrong
            log.warning("report: device state of sweep %s could not be rebuilt: %s", sw.name, e)
            out[sw.name] = f"could not rebuild the programmed model ({type(e).__name__}: {e})"
    return out


def _chip_title(c: _Chip) -> str:
    return (f"<h3>Sweep <code>{e(c.sweep)}</code>: model <code>{e(c.label)}</code> (stage <code>{e(c.stage)}"
            f"</code>) on analog config <code>{e(c.analog)}</code></h3>")


def _per_chip(run: Run, chips: dict[str, _Chip | str], intro: str, render) -> str:  # noqa: ANN001
    """``intro`` then, per sweep, ``render(chip)`` (a list of HTML parts), or the reason there is no chip."""
    if not run.exp.evaluation:
        return intro + note(f"{NO_RESULTS}: the experiment defines no evaluation sweep.")
    parts = []
    for sw in run.exp.evaluation:
        c = chips[sw.name]
        if isinstance(c, str):
            parts.append(f"<h3>Sweep <code>{e(sw.name)}</code></h3>" + note(c))
        else:
            parts.extend(render(c))
    return intro + "".join(parts)


def devices_section(run: Run, chips: dict[str, _Chip | str]) -> str:
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
                table(["layer", "type", "devices", "tiles", "mean error (µS)", "std error (µS)",
                        "std error, g_target > 0 (µS)"], rows, [False, False, True, True, True, True, True]),
                img(_device_figure(c), f"conductance histograms and programming error, sweep {c.sweep}")]

    return _per_chip(run, chips, intro, render)


def _device_figure(c: _Chip):  # noqa: ANN202
    fig, (ax1, ax2) = figure(10, max(3.4, 0.28 * len(c.layers) + 1.2), ncols=2, width_ratios=[1.25, 1])
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
    ax2.legend(fontsize=7.5, loc="lower right", frameon=True, framealpha=0.9)
    ax2.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"sweep {c.sweep}: {c.label} on {c.analog}, seed 0", fontsize=10)
    return fig


def gdc_section(run: Run, chips: dict[str, _Chip | str]) -> str:
    intro = ("<p>Global drift compensation factor α of every crossbar tile (all analog layers) at each time of the "
             "sweep, for the same chip (seed 0, read seed 0): thin lines, one per tile; thick line: median over "
             "tiles. α ≈ 1 right after programming and grows as the conductances drift down.</p>")

    def render(c: _Chip) -> list[str]:
        if c.alpha.size == 0:
            return [_chip_title(c), note("no GDC factors (no times or no tiles).")]
        med = np.median(c.alpha, axis=1)
        rows = [(format_time(t), f"{m:.4f}", f"{a.min():.4f}", f"{a.max():.4f}")
                for t, m, a in zip(c.times, med, c.alpha)]
        return [_chip_title(c), img(_gdc_figure(c, med), f"GDC factor per tile vs time, sweep {c.sweep}"),
                table(["t", "median α", "min α", "max α"], rows, [True, True, True, True])]

    return _per_chip(run, chips, intro, render)


def _gdc_figure(c: _Chip, med: np.ndarray):  # noqa: ANN202
    fig, (ax,) = figure(7.2, 3.4)
    n_tiles = c.alpha.shape[1]
    lw, al = (0.8, 0.5) if n_tiles <= 50 else (0.4, max(0.05, 0.5 * 50 / n_tiles))
    ax.plot(c.times, c.alpha, color="C0", lw=lw, alpha=al, marker="." if len(c.times) == 1 else None)
    ax.plot(c.times, med, color="k", lw=2.2, marker="o", ms=4, label=f"median of {n_tiles} tile(s)")
    time_axis(ax, c.times)
    ax.set_ylabel("GDC factor α")
    ax.set_title(f"sweep {c.sweep}: {c.label} on {c.analog}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig
