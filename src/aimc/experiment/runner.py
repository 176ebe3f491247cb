"""``aimc run``: train the stages, evaluate the sweeps, write the results — resumable at every step.

Run directory::

    config.yaml            the resolved experiment (defaults filled in); a different experiment is refused
    analog/<name>.yaml     each named analog config, fully resolved
    environment.json       aimc / torch / python versions, command line, start time
    run.log                the log
    checkpoints/<stage>/last.safetensors   model + optimizer + scheduler + RNG after the last finished epoch
    stages/<stage>.safetensors             final weights of each stage (plain state_dict)
    results.csv            one row per finished (sweep, model, periphery, compensation, t_seconds, seed)
    summary.md, accuracy_vs_time.png, report.html

Every file is written atomically; every epoch and every evaluated cell is kept, so a killed run resumed with the
same command continues where it stopped and gives bit-identical results.

Under torchrun (``aimc run --nproc N``) the training stages run data-parallel on N ranks and only rank 0 writes;
evaluation runs on rank 0 alone (see :mod:`aimc.experiment.distributed`).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from aimc.errors import ConfigError, FileFormatError
from aimc.evaluation import ProgressBars, accuracy, evaluate_seed
from aimc.experiment.build import Splits, build_model, build_splits, plain_state
from aimc.experiment.distributed import Dist, init_distributed, world_size
from aimc.experiment.spec import Experiment, StageSpec, experiment_to_yaml, load_run_experiment
from aimc.experiment.store import ResultsStore, atomic_write, load_checkpoint, save_checkpoint
from aimc.nn.convert import convert
from aimc.nn.tile import derive_seed
from aimc.train.hwa import clip

__all__ = ["run_experiment", "RunDirError"]

log = logging.getLogger("aimc.run")
_OWNED = ("config.yaml", "analog", "environment.json", "run.log", "checkpoints", "stages", "results.csv",
          "summary.md", "accuracy_vs_time.png", "report.html", "report")


class RunDirError(ConfigError):
    """The run directory belongs to a different experiment."""


# ---- run directory -----------------------------------------------------------------------------------------------
def _prepare(exp: Experiment, out: Path, force: bool) -> None:
    text = experiment_to_yaml(exp)
    cfg = out / "config.yaml"
    if cfg.exists():
        try:  # compare meaning, not text: a field added to the schema later takes its default in both
            same = load_run_experiment(out) == exp
        except ConfigError:
            same = False
        if not same:
            if not force:
                raise RunDirError(
                    f"{out} holds a different experiment (its config.yaml differs from this one); choose another "
                    "--out directory, or pass --force to delete that run's files and start over.")
            for name in _OWNED:
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(cfg, lambda tmp: Path(tmp).write_text(text))
    for name in exp.analog:
        atomic_write(out / "analog" / f"{name}.yaml", lambda tmp, n=name: Path(tmp).write_text(
            exp.analog_config(n).to_yaml()))
    env = {"aimc": _version(), "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "threads": torch.get_num_threads(), "command": sys.argv,
           "seed": exp.seed, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "world_size": world_size()}
    atomic_write(out / "environment.json", lambda tmp: Path(tmp).write_text(json.dumps(env, indent=1)))


def _check_out(out: Path) -> None:
    """A run directory must be (or become) a directory: a file in its place is a clear error, not 'File exists'."""
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            what = "is a file" if p == out else f"lies inside {str(p)!r}, which is a file"
            raise ConfigError(f"--out {str(out)!r} {what}; a run needs a directory. Choose another --out (a "
                              "directory that does not exist yet is created).")
        if p.exists():
            return


def _version() -> str:
    import aimc

    return aimc.__version__


# ---- training -----------------------------------------------------------------------------------------------------
def _optimizer(stage: StageSpec, params) -> torch.optim.Optimizer:  # noqa: ANN001
    o = stage.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                               nesterov=o.nesterov and o.momentum > 0)
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def _scheduler(stage: StageSpec, opt: torch.optim.Optimizer):  # noqa: ANN202
    s = stage.schedule
    if s.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(stage.epochs, 1))
    if s.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=1.0)


class _Context:
    """What the stages and sweeps share: the experiment, the run directory, the data."""

    def __init__(self, exp: Experiment, out: Path, dist: Dist | None = None):
        self.exp, self.out = exp, out
        self.dist = dist  # None in a single process; else this rank of a DDP training group
        self.device = dist.device if dist is not None else torch.device(exp.device)
        self._splits: Splits | None = None
        self._keys: set[str] | None = None

    @property
    def splits(self) -> Splits:
        if self._splits is None:
            self._splits = build_splits(self.exp.data, self.exp.seed)
        return self._splits

    def fresh_model(self) -> nn.Module:
        """The model section's network; its random initialisation is seeded by the experiment seed."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.exp.seed, "init") % 2**63)
            return build_model(self.exp.model)

    @property
    def plain_keys(self) -> set[str]:
        if self._keys is None:
            self._keys = set(self.fresh_model().state_dict())
        return self._keys

    def test_set(self, limit: int | None) -> Dataset:
        """The test images a sweep evaluates on: all of them, or a fixed class-balanced subset of ``limit`` (the first
        images of each class in file order; the same for every cell, seed and process)."""
        test = self.splits.test
        if limit is None or limit >= len(test):
            return test
        cache = self.__dict__.setdefault("_test_subsets", {})
        if limit not in cache:
            from aimc.data import first_per_class
            from aimc.experiment.build import _labels

            cache[limit] = Subset(test, first_per_class(_labels(test), limit).tolist())
        return cache[limit]

    def calibration_loader(self, sweep) -> DataLoader:  # noqa: ANN001
        """BN re-estimation images of a sweep: fixed, seeded, cached per process."""
        key = (sweep.n_calib, sweep.calib_augment)
        cache = self.__dict__.setdefault("_calib", {})
        if key not in cache:
            cache[key] = self.splits.calibration(sweep.n_calib, augmented=sweep.calib_augment,
                                                 seed=derive_seed(self.exp.seed, "calib") % 2**63)
        return DataLoader(cache[key], batch_size=self.exp.data.eval_batch_size)

    def stage_path(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.safetensors"

    def weights(self, stage: str) -> nn.Module:
        """A plain model holding the final weights of ``stage`` (or of the model section for 'model')."""
        model = self.fresh_model()
        if stage != "model":
            from safetensors.torch import load_file

            path = self.stage_path(stage)
            try:
                sd = load_file(str(path))
            except Exception as e:  # noqa: BLE001
                raise FileFormatError(f"stage weights {str(path)!r} are missing or corrupt ({e}); delete the file "
                                      "to retrain that stage.") from None
            model.load_state_dict(sd, strict=False)
        return model.to(self.device)


def _train_stage(ctx: _Context, stage: StageSpec, progress) -> None:  # noqa: ANN001
    from safetensors.torch import save_file

    final = ctx.stage_path(stage.name)
    if final.exists():
        log.info("stage %s: done before, using %s", stage.name, final)
        return
    model = ctx.weights(stage.init)
    if stage.kind == "hwa":
        model = convert(model, ctx.exp.stage_config(stage))
    dd = ctx.dist  # under DDP: forward through the wrapper, only rank 0 writes, the others wait at barriers
    net, main = (model, True) if dd is None else (dd.wrap(model), dd.main)
    opt = _optimizer(stage, model.parameters())
    sched = _scheduler(stage, opt)
    ckpt = ctx.out / "checkpoints" / stage.name / "last.safetensors"
    start, history = 0, []
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, history = state["epoch"], state["extra"].get("history", [])
        log.info("stage %s: resuming after epoch %d from %s", stage.name, start, ckpt)
    sp = ctx.splits
    bs = ctx.exp.data.batch_size
    task = progress.add(f"stage {stage.name} ({stage.kind})", stage.epochs, start)
    for epoch in range(start, stage.epochs):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(ctx.exp.seed, stage.name, epoch, "noise") + (dd.rank if dd else 0))
        order = derive_seed(ctx.exp.seed, stage.name, epoch, "order") % 2**62
        loader = sp.loader("train", bs, seed=order) if dd is None else dd.loader(sp.train, bs, order)
        net.train()
        total, n = 0.0, 0
        for x, y in loader:
            x, y = x.to(ctx.device), y.to(ctx.device)
            loss = F.cross_entropy(net(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"stage {stage.name}, epoch {epoch + 1}: the loss is {float(loss)}; "
                                         "lower the learning rate.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if stage.kind == "hwa":
                clip(model)
            total += float(loss.detach()) * len(y)
            n += len(y)
        sched.step()
        if dd is not None:
            total, n = dd.all_sum([total, n])
        rec: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(n, 1), "lr": opt.param_groups[0]["lr"],
                               "seconds": time.perf_counter() - t0}
        if sp.val is not None and main:
            rec["val_accuracy"] = accuracy(model.eval(), sp.loader("val", ctx.exp.data.eval_batch_size))
        history.append(rec)
        t1 = time.perf_counter()
        if main:
            save_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched, epoch=epoch + 1,
                            extra={"history": history})
        if dd is not None:
            dd.barrier()  # every rank leaves the epoch with the checkpoint on disk
        rec["checkpoint_seconds"] = time.perf_counter() - t1
        log.info("stage %s epoch %d/%d: %s", stage.name, epoch + 1, stage.epochs,
                 ", ".join(f"{k} {v:.4g}" for k, v in rec.items() if k != "epoch"))
        progress.advance(task)
    if main:
        sd = plain_state(model, ctx.plain_keys)
        # one metadata entry: safetensors orders several by hash, and the same weights should give the same file
        meta = {"aimc_stage": json.dumps({"stage": stage.name, "history": history}, sort_keys=True)}
        atomic_write(final, lambda tmp: save_file(sd, tmp, metadata=meta))
        if stage.kind == "hwa":
            from aimc.io import save

            save(model, ctx.out / "stages" / f"{stage.name}.aimc.safetensors")
    if dd is not None:
        dd.barrier()  # the next stage reads this one's weights on every rank
    log.info("stage %s: finished, weights in %s", stage.name, final)


# ---- evaluation ---------------------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _eval_unit(out: str, sweep_name: str, label: str, seed: int, cells: list[tuple[float, str]],
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
        _WORKER.update(key=key, ctx=_Context(exp, Path(out)), models={})  # models of another run are dropped
    ctx: _Context = _WORKER["ctx"]
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
                               channels_last=ctx.exp.channels_last):
        rows.append({"sweep": sweep.name, "model": label, "periphery": sweep.analog, **r})
        if on_row is not None:
            on_row(rows[-1])
    return rows


def _baselines(ctx: _Context, store: ResultsStore) -> None:
    for label, stage in ctx.exp.baselines.items():
        row = {"sweep": "baseline", "model": label, "periphery": "digital", "compensation": "none",
               "t_seconds": 0.0, "seed": 0}
        if store.done(row):
            continue
        acc = accuracy(ctx.weights(stage).eval(), ctx.splits.loader("test", ctx.exp.data.eval_batch_size))
        store.add([{**row, "accuracy": acc}])
        log.info("baseline %s (stage %s, digital): %.2f %%", label, stage, 100 * acc)


def _sweeps(ctx: _Context, store: ResultsStore, progress, workers: int,  # noqa: ANN001
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
            _eval_unit(str(ctx.out), sweep, label, seed, cells, on_row=keep)
        return
    import multiprocessing as mp
    import queue as queue_mod

    threads = max(1, torch.get_num_threads() // workers)
    spawn = mp.get_context("spawn")
    rows_q = spawn.Queue()  # workers stream each finished cell; only this process writes results.csv
    with ProcessPoolExecutor(workers, mp_context=spawn, initializer=_init_worker, initargs=(rows_q, threads)) as pool:
        pending = {pool.submit(_eval_unit_in_worker, str(ctx.out), *u) for u in units}
        received, returned = 0, 0  # rows taken off the queue; rows the finished units say they put on it
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
        t_end = time.perf_counter()
    log.debug("worker pool shut down in %.2f s", time.perf_counter() - t_end)


def _init_worker(rows_q, threads: int) -> None:  # noqa: ANN001 - runs once in each pool process
    from aimc.experiment.distributed import _die_with_parent

    _die_with_parent()  # a driver killed by SIGTERM/SIGKILL (no Ctrl-C to the process group) leaves no workers behind
    torch.set_num_threads(threads)
    _WORKER["rows_q"] = rows_q


def _eval_unit_in_worker(out: str, sweep_name: str, label: str, seed: int, cells: list[tuple[float, str]]) -> int:
    return len(_eval_unit(out, sweep_name, label, seed, cells, on_row=_WORKER["rows_q"].put))


# ---- entry point --------------------------------------------------------------------------------------------------
def run_experiment(exp: Experiment, out: str | Path, *, force: bool = False, quiet: bool = False,
                   workers: int = 1, backend: str = "local", address: str | None = None,
                   keep_good_rows: bool = False) -> Path:
    """Run (or resume) ``exp`` in ``out``; returns the run directory.

    ``backend`` runs the evaluation cells on ``"local"`` processes (``workers`` of them) or as ``"ray"`` tasks on
    the cluster at ``address`` (default: a local Ray instance); see :mod:`aimc.experiment.backends`.
    ``keep_good_rows``: a damaged ``results.csv`` keeps its intact rows (the file itself is kept as
    ``results.csv.damaged``) instead of stopping the run; only the other cells are recomputed.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be an integer ≥ 1.")
    from aimc.experiment.backends import check_backend

    check_backend(backend, address, workers)  # before any training: a missing ray fails now, not in an hour
    if exp.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {exp.device} was asked for but torch sees no CUDA device here; use device: cpu.")
    out = Path(out)
    _check_out(out)
    dd = init_distributed(exp.device, exp.data.batch_size)  # None unless torchrun started WORLD_SIZE > 1 ranks
    if dd is not None and not dd.main:
        return _follow(exp, out, dd)
    _prepare(exp, out, force)
    if dd is not None:
        dd.barrier()  # the run directory is ready for the other ranks
    handler = logging.FileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("aimc")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        log.info("run %s in %s", exp.name, out)
        ctx = _Context(exp, out, dd)
        store = ResultsStore(out / "results.csv", keep_good_rows=keep_good_rows)
        with ProgressBars(not quiet) as progress:
            for stage in exp.training:
                _train_stage(ctx, stage, progress)
            if dd is not None:
                dd.finish()  # the other ranks leave here; baselines and sweeps run on rank 0 alone
                log.info("DDP training on %d processes finished; evaluating on rank 0", dd.world)
            _baselines(ctx, store)
            _sweeps(ctx, store, progress, workers, backend, address)
        from aimc.experiment.summary import write_summary

        write_summary(out, exp, store.table())
        log.info("finished in %.0f s; results in %s", time.perf_counter() - t0, out / "results.csv")
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
    return out


def _follow(exp: Experiment, out: Path, dd: Dist) -> Path:
    """A rank > 0 of DDP training: train in step with rank 0, write nothing, leave before the evaluation."""
    dd.barrier()  # rank 0 has prepared (or refused) the run directory
    ctx = _Context(exp, out, dd)
    with ProgressBars(False) as progress:
        for stage in exp.training:
            _train_stage(ctx, stage, progress)
    dd.finish()
    return out


_ = math
