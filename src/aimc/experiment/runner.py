"""``aimc run``: prepare the run directory, train the stages, evaluate the sweeps, write the results — resumable at
every step. The jobs live in :mod:`~aimc.experiment.training` (stages), :mod:`~aimc.experiment.sweeps` (baselines
and evaluation cells) and :mod:`~aimc.experiment.context` (what they share).

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
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from aimc.errors import ConfigError
from aimc.evaluation import ProgressBars
from aimc.experiment.context import RunContext
from aimc.experiment.distributed import Dist, init_distributed, world_size
from aimc.experiment.spec import Experiment, experiment_to_yaml, load_run_experiment
from aimc._files import atomic_write
from aimc.experiment.store import ResultsStore
from aimc.experiment.sweeps import run_baselines, run_sweeps
from aimc.experiment.training import train_stage

from aimc.experiment.sweeps import _WORKER, _eval_unit, _init_worker

__all__ = ["run_experiment", "RunDirError"]

# names other modules and tests imported from here before the split into context / training / sweeps
_Context, _train_stage, _COMPAT = RunContext, train_stage, (_WORKER, _eval_unit, _init_worker)

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
            stored = load_run_experiment(out)
        except ConfigError:
            stored = None
        if stored != exp:
            if not force and stored is not None and stored.metric != exp.metric:
                raise RunDirError(
                    f"{out} holds a run scored with metric {stored.metric!r} (its results.csv column); this experiment "
                    f"asks for {exp.metric!r}. Results of different metrics do not mix: choose another --out "
                    f"directory, set `metric: {stored.metric}` to resume that run, or pass --force to delete that "
                    "run's files and start over.")
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


def check_out(out: str | Path) -> None:
    """A run directory must be (or become) a directory: a file in its place is a clear error, not 'File exists'."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            what = "is a file" if p == out else f"lies inside {str(p)!r}, which is a file"
            raise ConfigError(f"--out {str(out)!r} {what}; results need a directory. Choose another --out (a "
                              "directory that does not exist yet is created).")
        if p.exists():
            return


def _version() -> str:
    import aimc

    return aimc.__version__


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
    check_out(out)
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
        ctx = RunContext(exp, out, dd)
        store = ResultsStore(out / "results.csv", keep_good_rows=keep_good_rows, value=exp.metric)
        with ProgressBars(not quiet) as progress:
            for stage in exp.training:
                train_stage(ctx, stage, progress)
            if dd is not None:
                dd.finish()  # the other ranks leave here; baselines and sweeps run on rank 0 alone
                log.info("DDP training on %d processes finished; evaluating on rank 0", dd.world)
            run_baselines(ctx, store)
            run_sweeps(ctx, store, progress, workers, backend, address)
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
    ctx = RunContext(exp, out, dd)
    with ProgressBars(False) as progress:
        for stage in exp.training:
            train_stage(ctx, stage, progress)
    dd.finish()
    return out


