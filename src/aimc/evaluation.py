"""A metric (accuracy by default; see :mod:`aimc.metrics`) over a grid of (compensation × time × seed), with
statistics and a plot.

For each seed the model is programmed once; for each time ``at_time`` draws that time's conductances; each
compensation is then scored on the same conductances: ``none``, ``gdc`` (global drift compensation) and
``gdc+bn`` (GDC, then batch-norm statistics re-estimated on unlabeled calibration data through the drifted model;
BN statistics are restored afterwards). The model leaves :func:`evaluate` as it came in, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from aimc.compensation import recalibrate_bn
from aimc.errors import ConfigError, DataError, NonFiniteError
from aimc.inference import at_time, check_seed, check_time, model_device, program, set_gdc
from aimc.metrics import Metric, float_dtype, get_metric, logits_of, model_inputs, move_batch
from aimc.nn.layers import has_non_finite
from aimc.nn.tile import AnalogMatrix

__all__ = ["evaluate", "evaluate_seed", "score", "accuracy", "Results", "COMPENSATIONS", "summarize"]

COMPENSATIONS = ("none", "gdc", "gdc+bn")


def score(model: nn.Module, data: Iterable, metric: str | Callable | Metric = "accuracy", *,
          forward: Callable[..., Any] | None = None, channels_last: bool = False) -> float:
    """``metric`` of ``model`` in its current mode over ``data`` (see :mod:`aimc.metrics` for batches and outputs).

    Every batch is moved to the model's device; floating-point inputs are cast to the model's dtype (a float64
    numpy array into a float32 model); the metric's ``(sum, count)`` pairs are added over all batches.

    ``forward``: what to call instead of ``model`` (e.g. ``torch.compile(model)``); the analog layers skip their
    per-layer NaN/Inf input checks inside a compiled graph, so the model's input and output are checked here.
    ``channels_last``: pass 4-D inputs in channels-last memory format (convolutions then run in NHWC; same results
    up to float rounding, 10-15 % faster for the ResNets on this CPU, see ``benchmarks/bench_fast.py``).
    """
    m = get_metric(metric)
    total, count, n_batches = 0.0, 0, 0
    dev, dtype = model_device(model), float_dtype(model)
    compiled = forward is not None
    forward = forward or model
    with torch.inference_mode():
        for batch in data:
            batch = move_batch(batch, dev)
            args, kwargs = model_inputs(batch, dtype, channels_last=channels_last)
            out = forward(*args, **kwargs)
            if compiled and _non_finite(args, kwargs, out):
                raise NonFiniteError("the model's input or output holds NaN/Inf; check the data, or run without "
                                     "compile to find the layer where it first appears.")
            s, c = _pair(m, m.fn(out, batch))
            total += s
            count += c
            n_batches += 1
    if n_batches == 0:
        raise DataError("evaluation data is empty; pass a non-empty iterable of (inputs, labels) batches.")
    return m.value(total, count)


def accuracy(model: nn.Module, data: Iterable, *, forward: Callable[..., Any] | None = None,
             channels_last: bool = False) -> float:
    """Top-1 accuracy (fraction) of ``model`` over ``data`` (iterable of ``(inputs, labels)``): :func:`score`."""
    return score(model, data, "accuracy", forward=forward, channels_last=channels_last)


def _pair(m: Metric, res: Any) -> tuple[float, int | float]:
    """A metric's ``(sum, count)`` as Python numbers, checked."""
    try:
        s, c = res
        s, c = (float(s), (int(c) if float(c) == int(c) else float(c)))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise DataError(f"metric {m.name!r} returned {res!r}; a metric returns (sum, count) per batch, e.g. "
                        "(correct, batch size) or (summed loss, tokens).") from None
    if c < 0 or not math.isfinite(c):
        raise DataError(f"metric {m.name!r} returned count {c}; counts are finite and ≥ 0.")
    return s, c


def _non_finite(args: tuple, kwargs: dict, out: Any) -> bool:
    tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    try:
        tensors.append(logits_of(out))
    except DataError:
        pass
    return any(has_non_finite(t) for t in tensors)


def summarize(table: pd.DataFrame, by: Sequence[str] = ("compensation", "t_seconds"),
              value: str = "accuracy") -> pd.DataFrame:
    """Mean, std, n and the 95 % confidence interval of the mean (Student t) of column ``value`` per group.

    The statistics are over the table's rows (one per seed, i.e. per programmed chip): for perplexity, each seed's
    perplexity comes from all of that seed's tokens, and the mean and CI are over the per-seed perplexities.
    """
    from scipy import stats

    if value not in table.columns:
        raise DataError(f"the results table has no column {value!r} (columns {list(table.columns)}).")
    by = [c for c in by if c in table.columns]
    g = table.groupby(by, sort=False)[value]
    s = g.agg(mean="mean", std="std", n="count").reset_index()
    s["std"] = s["std"].fillna(0.0)
    half = [float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else float("nan")
            for sd, n in zip(s["std"], s["n"])]
    s["ci95_low"] = s["mean"] - np.asarray(half)
    s["ci95_high"] = s["mean"] + np.asarray(half)
    return s


@dataclass
class Results:
    """Outcome of :func:`evaluate`.

    Attributes:
        table: tidy DataFrame, one row per (model, compensation, t_seconds, seed); the last column is named after
            the metric (``accuracy`` as a fraction, ``top5``, ``perplexity``, ``nll``, a callable's name).
        metric: the :class:`aimc.metrics.Metric` scored (name, direction, unit).
    """

    table: pd.DataFrame
    metric: Metric = field(default_factory=lambda: get_metric("accuracy"))

    def summary(self) -> pd.DataFrame:
        """Mean, std, n, 95 % CI of the metric per (model, compensation, t_seconds)."""
        return summarize(self.table, ("model", "compensation", "t_seconds"), self.metric.name)

    def to_markdown(self) -> str:
        """The summary as a Markdown table (accuracies in %)."""
        return summary_markdown(self.summary(), self.metric)

    def plot(self, path: str | None = None, *, title: str | None = None):  # noqa: ANN201
        """The metric (mean ± 95 % CI) vs time on a log axis, one line per (model, compensation)."""
        return plot_summary(self.summary(), path, title=title, metric=self.metric)


def _fmt(m: Metric, v: float) -> str:
    if m.percent:
        return f"{100 * v:.2f}"
    return f"{v:.2f}" if 1 <= abs(v) < 1e6 else f"{v:.4g}"


def summary_markdown(s: pd.DataFrame, metric: str | Callable | Metric = "accuracy") -> str:
    """Render a :func:`summarize` table as Markdown; accuracies in %, the metric's direction in the header."""
    m = get_metric(metric)
    cols = [c for c in ("model", "compensation") if c in s.columns]
    unit = " (%)" if m.percent else ""
    name = "acc." if m.name == "accuracy" else (m.label or m.name)
    head = "| " + " | ".join([*cols, "t", f"mean {name}{unit}", f"std{unit}", f"95 % CI{unit}", "n"]) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 5)]
    for _, r in s.iterrows():
        ci = "—" if math.isnan(r["ci95_low"]) else f"{_fmt(m, r['ci95_low'])} – {_fmt(m, r['ci95_high'])}"
        lines.append("| " + " | ".join([*(str(r[c]) for c in cols), format_time(r["t_seconds"]),
                                       _fmt(m, r["mean"]), _fmt(m, r["std"]), ci, str(int(r["n"]))]) + " |")
    if m.direction and not m.percent:  # accuracies: higher is better goes without saying
        lines.append(f"\n{(m.label or m.name).capitalize()}: {m.direction}.")
    return "\n".join(lines)


def format_time(t: float) -> str:
    """Human-readable time since programming: 25 s, 1 h, 1 d, 30 d, 1 y."""
    for unit, sec in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if t >= sec:
            return f"{t / sec:.3g} {unit}"
    return f"{t:.3g} s"


def plot_summary(s: pd.DataFrame, path: str | None = None, *, title: str | None = None,  # noqa: ANN201
                 metric: str | Callable | Metric = "accuracy"):
    """Plot a :func:`summarize` table: the metric vs time (log axis) with 95 % CI error bars.

    Accuracies in %; the y label names the metric and its direction ("lower is better" for perplexity), and a
    positive metric spanning more than a factor 20 (perplexity after long drift) gets a log y axis.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = get_metric(metric)
    scale = 100.0 if m.percent else 1.0
    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = [c for c in ("model", "compensation") if c in s.columns]
    for key, grp in s.groupby(keys, sort=False):
        grp = grp.sort_values("t_seconds")
        err = np.nan_to_num(grp["ci95_high"].to_numpy() - grp["mean"].to_numpy())
        label = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        ax.errorbar(grp["t_seconds"], scale * grp["mean"], yerr=scale * err, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    lo, hi = float(s["mean"].min()), float(s["mean"].max())
    if not m.percent and lo > 0 and hi / lo > 20:
        ax.set_yscale("log")
    ax.set_xlabel("time after programming (s)")
    ylabel = "test accuracy (%)" if m.name == "accuracy" else f"test {m.title}"
    ax.set_ylabel(ylabel + (f"\n{m.direction}" if m.direction and not m.percent else ""))
    ax.set_title(title or f"{(m.label or m.name).capitalize()} after programming")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def _validate_grid(times: Iterable[float], seeds: Iterable[int], compensation: str | Sequence[str]):
    times = [check_time(t) for t in times]
    seeds = [check_seed(s) for s in seeds]
    comps = [compensation] if isinstance(compensation, str) else list(compensation)
    bad = [c for c in comps if c not in COMPENSATIONS]
    if bad:
        raise ConfigError(f"unknown compensation(s) {bad}; choose from {list(COMPENSATIONS)}.")
    empty = [n for n, v in (("times", times), ("seeds", seeds), ("compensation", comps)) if not v]
    if empty:
        raise ConfigError(f"the evaluation grid is empty: no {', '.join(empty)} given; e.g. times=[25, 3600], "
                          "seeds=range(10), compensation=('none', 'gdc').")
    return times, seeds, comps


_KEYS = ("model", "compensation", "t_seconds", "seed")


def evaluate(model: nn.Module, data: Iterable, times: Iterable[float], seeds: Iterable[int],
             compensation: str | Sequence[str] = ("none", "gdc"), *, metric: str | Callable | Metric = "accuracy",
             calib: Iterable | None = None, n_calib: int | None = None, name: str = "analog", progress: bool = True,
             compile: bool = False, channels_last: bool = False) -> Results:  # noqa: A002
    """A metric (accuracy by default) of a converted model over times × seeds × compensations.

    The model leaves as it came in, also when interrupted (Ctrl-C) or when an error is raised: its programmed
    state (conductances, drift exponents, time, GDC factors, read-noise generator), batch-norm statistics and
    train/eval mode are restored. While it runs it holds the entry state besides the state being evaluated (for a
    model that came in programmed, twice its device state in memory).

    Args:
        model: a model returned by :func:`aimc.convert` (programmed here, once per seed).
        data: iterable of batches, re-iterated for every cell: ``(inputs, labels)`` tuples (e.g. a
            ``DataLoader``), dicts such as ``{"input_ids": ..., "labels": ...}`` (passed to the model as keyword
            arguments without the labels), or input tensors; see :mod:`aimc.metrics`. Floating-point inputs are
            cast to the model's dtype (float64 arrays from numpy into a float32 model).
        times: seconds after programming (each ≥ 0).
        seeds: integer seeds ≥ 0, one programmed chip each.
        compensation: any of ``"none"``, ``"gdc"``, ``"gdc+bn"``.
        metric: ``"accuracy"`` (top-1), ``"top5"`` (any ``"topK"``), ``"perplexity"`` or ``"nll"`` (causal language
            models, labels shifted inside, -100 ignored), a callable ``metric(output, batch) -> (sum, count)``, or
            an :class:`aimc.metrics.Metric`. It names the table's value column.
        calib: calibration batches for ``"gdc+bn"``, of the same kinds as ``data`` (labels ignored).
        n_calib: calibration samples per BN re-estimation (``None`` = all of ``calib``).
        name: value of the ``model`` column.
        progress: show a progress bar.
        compile: run the forward passes through ``torch.compile`` (same results up to float rounding).
        channels_last: feed 4-D inputs in channels-last memory format (same results up to float rounding).

    Returns:
        :class:`Results` with one row per (compensation, t_seconds, seed).
    """
    m = get_metric(metric)
    if m.name in _KEYS:
        raise ConfigError(f"metric name {m.name!r} clashes with a column of the results table; name it otherwise "
                          "(aimc.metrics.Metric(name=..., fn=...)).")
    times, seeds, comps = _validate_grid(times, seeds, compensation)
    if "gdc+bn" in comps and calib is None:
        raise ConfigError("compensation 'gdc+bn' needs calibration data: pass calib=<iterable of batches> "
                          "(e.g. a DataLoader over unlabeled training images).")
    rows = []
    with ProgressBars(progress, transient=True) as bars:
        task = bars.add(f"evaluating {name}", len(seeds) * len(times) * len(comps))
        for seed in seeds:
            cells = [(t, c) for t in times for c in comps]
            # closing(): the generator's `finally` (which restores the model) runs now, also on Ctrl-C between cells
            with contextlib.closing(evaluate_seed(model, data, seed, cells, calib=calib, n_calib=n_calib,
                                                  compile=compile, channels_last=channels_last, metric=m)) as gen:
                for row in gen:
                    rows.append({"model": name, **row})
                    bars.advance(task)
    return Results(pd.DataFrame(rows, columns=[*_KEYS, m.name]), m)


def evaluate_seed(model: nn.Module, data: Iterable, seed: int, cells: Sequence[tuple[float, str]], *,
                  calib: Iterable | None = None, n_calib: int | None = None, compile: bool = False,  # noqa: A002
                  channels_last: bool = False, metric: str | Callable | Metric = "accuracy"):  # noqa: ANN201
    """Program ``model`` with ``seed`` and score each ``(t_seconds, compensation)`` cell; yields one row per cell
    ``{"compensation", "t_seconds", "seed", <metric name>}``.

    ``compile``: score through ``torch.compile(model)`` (compiled once per process and input shape; same
    results as eager up to float rounding; see ``benchmarks/bench_fast.py`` for when it pays).

    BN statistics changed by ``gdc+bn`` are restored after each cell (also when interrupted); the programmed state
    and the train/eval mode the model came in with are restored when the generator finishes or is closed (close
    it, e.g. with ``contextlib.closing``, when you stop early). Each cell's result depends only on
    (seed, t, compensation), not on which other cells are scored.
    """
    m = get_metric(metric)
    modes = [(mod, mod.training) for mod in model.modules()]
    bns = [b for b in model.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    bn_state = [copy.deepcopy(b.state_dict()) for b in bns]
    analog_state = _snapshot_analog(model)
    forward = _compiled(model) if compile else None
    try:
        model.eval()
        program(model, seed=seed)
        comps_at: dict[float, set[bool]] = {}
        for t, comp in cells:
            comps_at.setdefault(float(t), set()).add(comp != "none")
        drawn = None  # the time whose conductances at_time(keep=True) holds: none/gdc switch without a new draw
        for t, comp in cells:
            if drawn == float(t):
                set_gdc(model, comp != "none")
            else:
                both = len(comps_at[float(t)]) > 1
                at_time(model, t, seed=seed, gdc=comp != "none", keep=both)
                drawn = float(t) if both else None
            try:
                if comp == "gdc+bn":
                    recalibrate_bn(model, calib, n_calib)
                value = score(model, data, m, forward=forward, channels_last=channels_last)
            finally:
                if comp == "gdc+bn":
                    for b, st in zip(bns, bn_state):
                        b.load_state_dict(st)
            yield {"compensation": comp, "t_seconds": float(t), "seed": seed, m.name: value}
    finally:
        for b, st in zip(bns, bn_state):
            b.load_state_dict(st)
        _restore_analog(analog_state)
        for mod, training in modes:
            mod.training = training


def _snapshot_analog(model: nn.Module) -> list:
    """The programmed state of every ``AnalogMatrix``: its buffers, plain attributes (caches, the output-noise
    generator) and the generator's state.

    ``program`` and ``at_time`` assign new tensors to the device-state buffers rather than writing into them, so the
    entry tensors are kept by reference (no copy); 0-d buffers (time, seed, flags, input range) are written in
    place and are copied. ``tests/test_interrupt.py`` checks the round trip bit for bit.
    """
    snap = []
    for mat in model.modules():
        if isinstance(mat, AnalogMatrix):
            bufs = {k: (v, v.clone() if v is not None and v.dim() == 0 else None) for k, v in mat._buffers.items()}
            attrs = {k: v for k, v in vars(mat).items() if k not in ("_buffers", "_parameters", "_modules")}
            gens = {k: v.get_state() for k, v in attrs.items() if isinstance(v, torch.Generator)}
            snap.append((mat, bufs, attrs, gens))
    return snap


def _restore_analog(snap: list) -> None:
    for mat, bufs, attrs, gens in snap:
        for k in [k for k in mat._buffers if k not in bufs]:  # registered while evaluating
            del mat._buffers[k]
        for k, (v, val) in bufs.items():
            if val is not None:
                v.copy_(val)
            mat._buffers[k] = v
        for k in [k for k in vars(mat) if k not in attrs and k not in ("_buffers", "_parameters", "_modules")]:
            delattr(mat, k)  # caches created while evaluating
        vars(mat).update(attrs)
        for k, state in gens.items():
            attrs[k].set_state(state)


def _compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(model)``, kept on the model so that later seeds and cells reuse the compiled code."""
    fwd = model.__dict__.get("_aimc_compiled")
    if fwd is None:
        fwd = torch.compile(model)
        model.__dict__["_aimc_compiled"] = fwd
    return fwd


class ProgressBars:
    """Rich progress bars (or nothing when disabled); a context manager holding any number of tasks."""

    def __init__(self, enabled: bool, *, transient: bool = False):
        self.p = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

            self.p = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), TimeRemainingColumn(), transient=transient)

    def __enter__(self) -> ProgressBars:
        if self.p is not None:
            self.p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.p is not None:
            self.p.stop()

    def add(self, label: str, total: int, done: int = 0) -> object:
        return None if self.p is None else self.p.add_task(label, total=total, completed=done)

    def advance(self, task: object, n: int = 1) -> None:
        if self.p is not None:
            self.p.advance(task, n)
