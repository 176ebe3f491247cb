"""Evaluation of a run: digital baselines and the sweeps' cells, serially or in a local process pool, each finished
cell stored in ``results.csv`` before the next one starts."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from aimc.evaluation import score
from aimc.experiment.context import RunContext
from aimc.experiment.store import ResultsStore
from aimc.experiment.units import _WORKER, eval_unit

__all__ = ["run_baselines", "run_sweeps", "eval_unit"]

log = logging.getLogger("aimc.run")


def run_baselines(ctx: RunContext, store: ResultsStore) -> None:
    for label, stage in ctx.exp.baselines.items():
        row = {"sweep": "baseline", "model": label, "periphery": "digital", "compensation": "none",
               "t_seconds": 0.0, "seed": 0}
        if store.done(row):
            continue
        m = ctx.exp.scorer()
        value = score(ctx.weights(stage).eval(), ctx.splits.loader("test", ctx.exp.data.eval_batch_size), m)
        store.add([{**row, m.name: value}])
        # the report reads this line back (aimc.report.files.log_sessions): the accuracy line keeps its old form
        what = "" if m.name == "accuracy" else f"{m.name} "
        log.info("baseline %s (stage %s, digital): %s%.2f %%", label, stage, what, 100 * value)


def run_sweeps(ctx: RunContext, store: ResultsStore, progress, workers: int,  # noqa: ANN001
            backend: str = "local", address: str | None = None) -> None:
    units = []
    for sw in ctx.exp.evaluation:
        for seed in sw.seed_list():  # seed-major: a partial sweep has every model on the same seeds
            for label in sw.models:
                cells = [(float(t), c) for t in sw.times for c in sw.compensations
                         if not store.done({"sweep": sw.name, "model": label, "periphery": sw.analog,
                                            "compensation": c, "t_seconds": float(t), "seed": seed})]
                if cells:
                    units.append((sw.name, label, seed, cells))
    n_cells = sum(len(u[3]) for u in units)
    if not n_cells:
        return
    task = progress.add("evaluation cells", n_cells, 0)
    if backend == "ray":  # one Ray task per unit; its rows are stored here as soon as it returns
        from aimc.experiment.backends import run_units_on_ray

        def keep_unit(rows: list[dict[str, Any]]) -> None:
            store.add(rows)
            progress.advance(task, len(rows))

        run_units_on_ray(str(ctx.out.resolve()), units, keep_unit, address=address, workers=workers)
        return
    log.info("evaluation: %d unit(s) on the local backend, %d process(es)", len(units), workers)
    if workers <= 1:
        def keep(row: dict[str, Any]) -> None:  # every finished cell is on disk before the next one starts
            store.add([row])
            progress.advance(task)

        for sweep, label, seed, cells in units:
            eval_unit(str(ctx.out), sweep, label, seed, cells, on_row=keep)
        return
    import multiprocessing as mp
    import queue as queue_mod

    threads = max(1, torch.get_num_threads() // workers)
    spawn = mp.get_context("spawn")
    rows_q = spawn.Queue()  # workers stream each finished cell; only this process writes results.csv
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init_worker, initargs=(rows_q, threads)) as pool:
        pending = {pool.submit(_eval_unit_in_worker, str(ctx.out), *u) for u in units}
        received, returned = 0, 0  # rows taken off the queue; rows the finished units say they put on it
        try:
            while pending or received < returned:
                try:
                    row = rows_q.get(timeout=0.05)
                except queue_mod.Empty:
                    done = {f for f in pending if f.done()}
                    for f in done:
                        returned += f.result()  # re-raises a worker's error
                    pending -= done
                    continue
                store.add([row])
                received += 1
                progress.advance(task)
        except BaseException:  # Ctrl-C or a worker's error: start no queued unit, keep every finished cell
            pool.shutdown(wait=True, cancel_futures=True)
            _drain(rows_q, store)
            raise
        t_end = time.perf_counter()
    log.debug("worker pool shut down in %.2f s", time.perf_counter() - t_end)


def _drain(rows_q, store: ResultsStore) -> None:  # noqa: ANN001
    """Store the cells the workers finished but this process has not taken off the queue yet."""
    import queue as queue_mod

    rows = []
    while True:
        try:
            rows.append(rows_q.get(timeout=0.2))
        except (queue_mod.Empty, OSError, ValueError):
            break
    if rows:
        store.add(rows)
        log.info("kept %d cell(s) finished by the workers before the stop", len(rows))


def _init_worker(rows_q, threads: int) -> None:  # noqa: ANN001 - runs once in each pool process
    from aimc.experiment.distributed import _die_with_parent

    _die_with_parent()  # a driver killed by SIGTERM/SIGKILL (no Ctrl-C to the process group) leaves no workers behind
    torch.set_num_threads(threads)
    _WORKER["rows_q"] = rows_q


def _eval_unit_in_worker(out: str, sweep_name: str, label: str, seed: int, cells: list[tuple[float, str]]) -> int:
    return len(eval_unit(out, sweep_name, label, seed, cells, on_row=_WORKER["rows_q"].put))


_eval_unit = eval_unit  # the old private name
