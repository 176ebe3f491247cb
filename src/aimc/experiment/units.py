"""One evaluation unit of a sweep (one sweep × model × seed, several (t, compensation) cells), as run in this
process, a local pool process or a Ray worker; ``aimc.experiment.sweeps`` schedules the units and
``aimc.experiment.backends`` ships them to Ray (both import it; it imports neither)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from aimc.evaluation import evaluate_seed
from aimc.experiment.context import RunContext
from aimc.experiment.spec import load_run_experiment
from aimc.nn.convert import convert

__all__ = ["eval_unit"]

_WORKER: dict[str, Any] = {}


def eval_unit(out: str, sweep_name: str, label: str, seed: int, cells: list[tuple[float, str]],
              threads: int | None = None, on_row: Callable[[dict[str, Any]], None] | None = None
              ) -> list[dict[str, Any]]:
    """Evaluate cells of one (sweep, model, seed): program once, then each (t, compensation).

    ``on_row`` is called with each finished cell (so the serial runner stores it at once); the rows are returned too.
    """
    if threads:
        torch.set_num_threads(threads)
    key = out
    if _WORKER.get("key") != key:  # one context per process, reused across units
        exp = load_run_experiment(out)
        _WORKER.update(key=key, ctx=RunContext(exp, Path(out)), models={})  # models of another run are dropped
    ctx: RunContext = _WORKER["ctx"]
    sweep = next(s for s in ctx.exp.evaluation if s.name == sweep_name)
    model = _WORKER["models"].get((sweep_name, label))
    if model is None:
        model = convert(ctx.weights(sweep.models[label]), ctx.exp.analog_config(sweep.analog))
        if ctx.exp.compile:  # one converted model per (sweep, model) and process, so its compiled code is reused
            _WORKER["models"][(sweep_name, label)] = model
    test = DataLoader(ctx.test_set(sweep.test_limit), batch_size=ctx.exp.data.eval_batch_size)
    calib = ctx.calibration_loader(sweep)
    rows = []
    for r in evaluate_seed(model, test, seed, cells, calib=calib, n_calib=sweep.n_calib, compile=ctx.exp.compile,
                               channels_last=ctx.exp.channels_last, metric=ctx.exp.metric):
        rows.append({"sweep": sweep.name, "model": label, "periphery": sweep.analog, **r})
        if on_row is not None:
            on_row(rows[-1])
    return rows
