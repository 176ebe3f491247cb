"""Plots of cost reports: per-layer energy breakdown (inline SVG for HTML reports, matplotlib for docs) and the
tile-size × ADC-bits sweep figure."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from aimc.cost.model import CostReport

__all__ = ["GROUPS", "energy_bars_svg", "energy_bars_figure", "sweep_figure"]

GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("crossbar", ("array",), "#3b78c2"),
    ("DAC", ("dac",), "#7fb3e6"),
    ("ADC", ("adc",), "#d9534f"),
    ("digital post-processing + partial sums", ("post", "psum"), "#f0ad4e"),
    ("BN, activation, residual, pooling", ("bn", "activation", "residual", "pool"), "#5cb85c"),
    ("data movement", ("data",), "#8e7cc3"),
)
"""(label, energy components, colour) of the stacked bars."""


def _unit(v: float) -> tuple[str, float]:
    for unit, f in (("mJ", 1e-3), ("µJ", 1e-6), ("nJ", 1e-9)):
        if v >= f:
            return unit, f
    return "pJ", 1e-12


def _nice(x: float) -> float:
    if x <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(x))
    return next(m * p for m in (1, 2, 2.5, 5, 10) if m * p >= x)


def _fmt(v: float, unit: str, f: float) -> str:
    return f"{v / f:.3g} {unit}"


def energy_bars_svg(report: CostReport, title: str | None = None, width: int = 880,
                    labels: Sequence[str] | None = None) -> str:
    """Per-layer energy per inference as horizontal stacked bars, one self-contained ``<svg>`` element (no external
    references, no scripts). ``labels``: one per analog matrix (default: the module names)."""
    e = html.escape
    layers = report.layers
    names = list(labels) if labels is not None else [lc.layer.name for lc in layers]
    if len(names) != len(layers):
        raise ValueError(f"energy_bars_svg: {len(names)} labels for {len(layers)} layers; give one per layer.")
    left, right, top, row = max(200, 14 + int(6.3 * max(map(len, names), default=0))), 80, 56, 15
    per_row = 3
    legend_h = 18 * math.ceil(len(GROUPS) / per_row)
    height = top + row * len(layers) + 14 + legend_h
    vmax = max((lc.energy_j for lc in layers), default=0.0) or 1e-12
    unit, f = _unit(vmax)
    step = _nice(vmax / f / 5)
    span = math.ceil(vmax / f / step) * step
    plot_w = width - left - right
    sx = plot_w / (span * f)
    out = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           'style="font:11px system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;max-width:100%;'
           'height:auto;display:block;margin:8px 0">',
           f'<title>{e(title or "energy per inference by layer")}</title>',
           f'<text x="{left}" y="14" font-size="12" font-weight="600">{e(title or "")}</text>']
    for i in range(int(round(span / step)) + 1):
        x = left + i * step * f * sx
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{top + row * len(layers)}" stroke="#e3e6ec"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 10}" text-anchor="middle" fill="#555">{i * step:g}</text>')
    out.append(f'<text x="{left + plot_w}" y="{top - 26}" text-anchor="end" fill="#555">energy per inference '
               f'({unit})</text>')
    for r, lc in enumerate(layers):
        y = top + r * row
        out.append(f'<text x="{left - 6}" y="{y + row - 4}" text-anchor="end">{e(names[r])}</text>')
        x = float(left)
        for label, comps, color in GROUPS:
            v = sum(lc.energy[k] for k in comps)
            w = v * sx
            if w > 0.05:
                out.append(f'<rect x="{x:.2f}" y="{y + 2}" width="{w:.2f}" height="{row - 4}" fill="{color}">'
                           f'<title>{e(lc.layer.name)}: {e(label)} {_fmt(v, unit, f)}</title></rect>')
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + row - 4}" fill="#333">{_fmt(lc.energy_j, unit, f)}</text>')
    y0 = top + row * len(layers) + 14
    col_w = (width - 20) / per_row
    for i, (label, _, color) in enumerate(GROUPS):
        x, y = 10 + (i % per_row) * col_w, y0 + (i // per_row) * 18
        out.append(f'<rect x="{x:.0f}" y="{y}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{x + 17:.0f}" y="{y + 10}">{e(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def energy_bars_figure(report: CostReport, title: str | None = None):  # noqa: ANN201
    """The same breakdown as a matplotlib figure (for PNG files)."""
    from matplotlib.figure import Figure

    layers = report.layers
    fig = Figure(figsize=(9, 1.6 + 0.2 * len(layers)), layout="constrained")
    ax = fig.subplots()
    unit, f = _unit(max((lc.energy_j for lc in layers), default=1e-12))
    names = [lc.layer.name for lc in layers]
    left = [0.0] * len(layers)
    for label, comps, color in GROUPS:
        vals = [sum(lc.energy[k] for k in comps) / f for lc in layers]
        ax.barh(range(len(layers)), vals, left=left, color=color, label=label, height=0.75)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(layers)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"energy per inference ({unit})")
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7.5, loc="outside lower center", ncols=3, frameon=False)
    ax.set_title(title or "energy per inference by layer", fontsize=10)
    return fig


def sweep_figure(df: Any, title: str = ""):  # noqa: ANN201
    """Tile size × ADC bits: energy, latency and (if present) accuracy vs energy, in one figure."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    has_acc = "accuracy_mean" in df and df["accuracy_mean"].notna().any()
    fig = Figure(figsize=(14 if has_acc else 9.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 3 if has_acc else 2)
    tiles = sorted(df["tile"].unique())
    bits = sorted(df["adc_bits"].unique())
    cmap = colormaps["viridis"]
    markers = "osD^vP*X"
    for i, t in enumerate(tiles):
        g = df[df["tile"] == t].sort_values("adc_bits")
        col = cmap(i / max(len(tiles) - 1, 1))
        axes[0].plot(g["adc_bits"], g["energy_j"] * 1e6, marker=markers[i % 8], color=col, label=f"{t} × {t}")
        axes[1].plot(g["adc_bits"], g["latency_s"] * 1e3, marker=markers[i % 8], color=col, label=f"{t} × {t}")
    axes[0].set_ylabel("energy per inference (µJ)")
    axes[1].set_ylabel("layer-serial latency (ms)")
    axes[0].set_yscale("log")
    axes[1].set_ylim(bottom=0)
    for ax in axes[:2]:
        ax.set_xlabel("ADC bits")
        ax.set_xticks(bits)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(title="tile", fontsize=8)
    if has_acc:
        ax = axes[2]
        for i, t in enumerate(tiles):
            for j, b in enumerate(bits):
                g = df[(df["tile"] == t) & (df["adc_bits"] == b)]
                if not len(g) or not math.isfinite(float(g["accuracy_mean"].iloc[0])):
                    continue
                col = colormaps["plasma"](j / max(len(bits) - 1, 1))
                ax.errorbar(g["energy_j"] * 1e6, 100 * g["accuracy_mean"], yerr=100 * g["accuracy_std"].fillna(0),
                            fmt=markers[i % 8], color=col, ms=7, capsize=2,
                            label=f"{b}-bit ADC" if i == 0 else None)
        for i, t in enumerate(tiles):
            ax.plot([], [], markers[i % 8], color="0.4", label=f"tile {t}")
        if "accuracy_digital" in df and df["accuracy_digital"].notna().any():
            ax.axhline(100 * float(df["accuracy_digital"].dropna().iloc[0]), color="0.3", ls="--", lw=1,
                       label="digital (FP32)")
        ax.set_xscale("log")
        ax.set_xlabel("energy per inference (µJ)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5, ncols=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
