"""Accuracy over a grid of (compensation × time × seed), with statistics and a plot.

For each seed the model is programmed once; for each time ``at_time`` draws that time's conductances; each
compensation is then scored on the same conductances: ``none``, ``gdc`` (global drift compensation) and
``gdc+bn`` (GDC, then batch-norm statistics re-estimated on unlabeled calibration data through the drifted model;
BN statistics are restored afterwards).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from aimc.compensation import recalibrate_bn
from aimc.errors import ConfigError, DataError, NonFiniteError
from aimc.inference import at_time, check_seed, check_time, model_device, program
from aimc.nn.layers import has_non_finite

__all__ = ["evaluate", "evaluate_seed", "accuracy", "Results", "COMPENSATIONS", "summarize"]

COMPENSATIONS = ("none", "gdc", "gdc+bn")


def accuracy(model: nn.Module, data: Iterable, *, forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
             channels_last: bool = False) -> float:
    """Top-1 accuracy (fraction) of ``model`` in eval mode over ``data`` (iterable of ``(inputs, labels)``).

    ``forward``: what to call instead of ``model`` (e.g. ``torch.compile(model)``); the analog layers skip their
    per-layer NaN/Inf input checks inside a compiled graph, so the model's input and output are checked here.
    ``channels_last``: pass 4-D inputs in channels-last memory format (convolutions then run in NHWC; same results
    up to float rounding, 10-15 % faster for the ResNets on this CPU, see ``benchmarks/bench_fast.py``).
    """
    correct = total = 0
    dev = model_device(model)
    compiled = forward is not None
    forward = forward or model
    with torch.inference_mode():
        for batch in data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise DataError("evaluation data must yield (inputs, labels) batches, e.g. a DataLoader over a "
                                f"TensorDataset; got a {type(batch).__name__}.")
            x, y = batch[0].to(dev), batch[1].to(dev)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out = forward(x)
            if compiled and (has_non_finite(x) or has_non_finite(out)):
                raise NonFiniteError("the model's input or output holds NaN/Inf; check the data, or run without "
                                     "compile to find the layer where it first appears.")
            if out.dim() != 2 or out.shape[0] != len(y):
                raise DataError(f"model output has shape {tuple(out.shape)}, expected (batch, classes) with "
                                f"batch = {len(y)} labels.")
            correct += int((out.argmax(dim=1) == y).sum())
            total += len(y)
    if total == 0:
        raise DataError("evaluation data is empty; pass a non-empty iterable of (inputs, labels) batches.")
    return correct / total


def summarize(table: pd.DataFrame, by: Sequence[str] = ("compensation", "t_seconds")) -> pd.DataFrame:
    """Mean, std, n and the 95 % confidence interval of the mean (Student t) of ``accuracy`` per group."""
    from scipy import stats

    by = [c for c in by if c in table.columns]
    g = table.groupby(by, sort=False)["accuracy"]
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
        table: tidy DataFrame, one row per (model, compensation, t_seconds, seed); ``accuracy`` is a fraction.
    """

    table: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Mean, std, n, 95 % CI per (model, compensation, t_seconds)."""
        return summarize(self.table, ("model", "compensation", "t_seconds"))

    def to_markdown(self) -> str:
        """The summary as a Markdown table (accuracy in %)."""
        return summary_markdown(self.summary())

    def plot(self, path: str | None = None, *, title: str = "Accuracy after programming"):  # noqa: ANN201
        """Accuracy (mean ± 95 % CI) vs time on a log axis, one line per (model, compensation)."""
        return plot_summary(self.summary(), path, title=title)


def summary_markdown(s: pd.DataFrame) -> str:
    """Render a :func:`summarize` table as Markdown, accuracies in %."""
    cols = [c for c in ("model", "compensation") if c in s.columns]
    head = "| " + " | ".join([*cols, "t", "mean acc. (%)", "std (%)", "95 % CI (%)", "n"]) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 5)]
    for _, r in s.iterrows():
        ci = "—" if math.isnan(r["ci95_low"]) else f"{100 * r['ci95_low']:.2f} – {100 * r['ci95_high']:.2f}"
        lines.append("| " + " | ".join([*(str(r[c]) for c in cols), format_time(r["t_seconds"]),
                                       f"{100 * r['mean']:.2f}", f"{100 * r['std']:.2f}", ci,
                                       str(int(r["n"]))]) + " |")
    return "\n".join(lines)


def format_time(t: float) -> str:
    """Human-readable time since programming: 25 s, 1 h, 1 d, 30 d, 1 y."""
    for unit, sec in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60)):
        if t >= sec:
            return f"{t / sec:.3g} {unit}"
    return f"{t:.3g} s"


def plot_summary(s: pd.DataFrame, path: str | None = None, *, title: str = "Accuracy after programming"):  # noqa: ANN201
    """Plot a :func:`summarize` table: accuracy (%) vs time (log axis) with 95 % CI error bars."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    keys = [c for c in ("model", "compensation") if c in s.columns]
    for key, grp in s.groupby(keys, sort=False):
        grp = grp.sort_values("t_seconds")
        err = np.nan_to_num(grp["ci95_high"].to_numpy() - grp["mean"].to_numpy())
        label = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        ax.errorbar(grp["t_seconds"], 100 * grp["mean"], yerr=100 * err, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
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


def evaluate(model: nn.Module, data: Iterable, times: Iterable[float], seeds: Iterable[int],
             compensation: str | Sequence[str] = ("none", "gdc"), *, calib: Iterable | None = None,
             n_calib: int | None = None, name: str = "analog", progress: bool = True,
             compile: bool = False, channels_last: bool = False) -> Results:  # noqa: A002
    """Accuracy of a converted model over times × seeds × compensations.

    Args:
        model: a model returned by :func:`aimc.convert` (programmed here, once per seed).
        data: iterable of ``(inputs, labels)`` batches (e.g. a ``DataLoader``); re-iterated for every cell.
        times: seconds after programming (each ≥ 0).
        seeds: integer seeds ≥ 0, one programmed chip each.
        compensation: any of ``"none"``, ``"gdc"``, ``"gdc+bn"``.
        calib: unlabeled calibration batches for ``"gdc+bn"`` (labels ignored).
        n_calib: calibration images per BN re-estimation (``None`` = all of ``calib``).
        name: value of the ``model`` column.
        progress: show a progress bar.
        compile: run the forward passes through ``torch.compile`` (same accuracies up to float rounding).
        channels_last: feed 4-D inputs in channels-last memory format (same accuracies up to float rounding).

    Returns:
        :class:`Results` with one row per (compensation, t_seconds, seed).
    """
    times, seeds, comps = _validate_grid(times, seeds, compensation)
    if "gdc+bn" in comps and calib is None:
        raise ConfigError("compensation 'gdc+bn' needs calibration data: pass calib=<iterable of batches> "
                          "(e.g. a DataLoader over unlabeled training images).")
    rows = []
    with ProgressBars(progress, transient=True) as bars:
        task = bars.add(f"evaluating {name}", len(seeds) * len(times) * len(comps))
        for seed in seeds:
            cells = [(t, c) for t in times for c in comps]
            for row in evaluate_seed(model, data, seed, cells, calib=calib, n_calib=n_calib, compile=compile,
                                     channels_last=channels_last):
                rows.append({"model": name, **row})
                bars.advance(task)
    return Results(pd.DataFrame(rows, columns=["model", "compensation", "t_seconds", "seed", "accuracy"]))


def evaluate_seed(model: nn.Module, data: Iterable, seed: int, cells: Sequence[tuple[float, str]], *,
                  calib: Iterable | None = None, n_calib: int | None = None, compile: bool = False,  # noqa: A002
                  channels_last: bool = False):  # noqa: ANN201
    """Program ``model`` with ``seed`` and score each ``(t_seconds, compensation)`` cell; yields one row per cell.

    ``compile``: score through ``torch.compile(model)`` (compiled once per process and input shape; same
    accuracies as eager up to float rounding; see ``benchmarks/bench_fast.py`` for when it pays).

    BN statistics changed by ``gdc+bn`` are restored after each cell; the model's train/eval mode is restored at
    the end. Each cell's result depends only on (seed, t, compensation), not on which other cells are scored.
    """
    was_training = model.training
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    bn_state = [copy.deepcopy(m.state_dict()) for m in bns]
    forward = _compiled(model) if compile else None
    try:
        program(model, seed=seed)
        for t, comp in cells:
            at_time(model, t, seed=seed, gdc=comp != "none")
            if comp == "gdc+bn":
                recalibrate_bn(model, calib, n_calib)
            acc = accuracy(model, data, forward=forward, channels_last=channels_last)
            if comp == "gdc+bn":
                for m, st in zip(bns, bn_state):
                    m.load_state_dict(st)
            yield {"compensation": comp, "t_seconds": float(t), "seed": seed, "accuracy": acc}
    finally:
        model.train(was_training)


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
