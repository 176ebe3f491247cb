"""HTML and figure helpers of the report: escaping, tables, notes, inline PNG figures, the time axis, the CSS."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import Any

from aimc.evaluation import COMPENSATIONS, format_time

DPI = 90
NO_RESULTS = "no results yet"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{margin:0 0 4px;font-size:1.7em}h2{margin-top:2.2em;border-bottom:2px solid #e3e6ec;padding-bottom:4px}
h3{margin-top:1.6em;font-size:1.1em}
.meta{color:#555;margin:0 0 12px}.what{background:#eef4fb;border-left:4px solid #3b78c2;padding:8px 12px;margin:12px 0}
.verdict{background:#fff7e6;border-left:4px solid #e0a030;padding:8px 12px;margin:10px 0}
.note{color:#666;font-style:italic}.error{color:#9b1c1c;background:#fdf0f0;padding:6px 10px;border-radius:4px}
nav ol{columns:2;margin:6px 0 0;padding-left:22px}nav a{color:#2a5d9f;text-decoration:none}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.88em}
th,td{border:1px solid #d9dde4;padding:3px 8px;text-align:left}th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}tbody tr:nth-child(even){background:#fafbfc}
img{max-width:100%;height:auto;display:block;margin:8px 0}
pre{background:#f3f4f6;border:1px solid #e1e4e8;padding:10px;overflow:auto;font-size:.8em;max-height:480px}
details{margin:8px 0}summary{cursor:pointer;color:#2a5d9f}code{background:#f0f2f5;padding:0 3px;border-radius:3px}
"""


def e(x: object) -> str:
    """``x`` as escaped HTML text."""
    return html.escape(str(x))


def note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>'


def error(text: str) -> str:
    return f'<p class="error">{e(text)}</p>'


def table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[bool] | None = None) -> str:
    """An HTML table of escaped cells; ``numeric[i]`` right-aligns column ``i``."""
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{e(v)}</td>' if numeric[i] else f"<td>{e(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage string (``0.9912`` -> ``"99.12"``); ``—`` for None or non-finite values."""
    return "—" if x is None or not math.isfinite(float(x)) else f"{100 * float(x):.{digits}f}"


def seconds(s: float | None) -> str:
    """A wall time: ``0.84 s``, ``42 s``, ``12 min 5 s``, ``3 h 02 min``; ``—`` when unknown."""
    if s is None or not math.isfinite(s) or s < 0:
        return "—"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(round(s % 60))} s"
    return f"{int(s // 3600)} h {int(round(s % 3600 / 60)):02d} min"


def figure(w: float, h: float, nrows: int = 1, ncols: int = 1, **kw: Any):  # noqa: ANN201
    """A matplotlib figure independent of pyplot (no global state, no GUI backend) and its axes (flat list)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw).ravel().tolist()
    return fig, axes


def img(fig, alt: str) -> str:  # noqa: ANN001
    """The figure as an ``<img>`` with an embedded PNG ``data:`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">'


def time_axis(ax, times: Sequence[float]) -> None:  # noqa: ANN001
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


def comp_order(c: str) -> int:
    """Sort key of a compensation: none, gdc, gdc+bn, then any other."""
    return COMPENSATIONS.index(c) if c in COMPENSATIONS else len(COMPENSATIONS)
