"""Where the evaluation cells of ``aimc run`` execute: a local process pool (default) or Ray tasks.

``--backend ray`` sends one Ray task per (sweep, model, seed) unit; a task programs the model once, evaluates its
(t, compensation) cells and returns their rows. The driver stores each unit's rows in ``results.csv`` as soon as
``ray.wait`` hands it back (only the driver writes that file), so a killed driver loses at most the units in flight,
and a re-run of the same command resumes. A task whose worker process or node dies is retried by Ray
(``max_retries``); every cell is seeded by (seed, t, compensation) alone, so a retried or resumed cell gives the
same bit-identical accuracy as on the local backend.

Tasks read everything from the run directory (as the local workers do), so the run directory, the data directory
and aimc itself must be reachable at the same paths on every node: a shared filesystem.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from aimc.errors import AimcError, ClusterError, ConfigError

__all__ = ["BACKENDS", "ClusterError", "check_backend", "import_ray", "run_units_on_ray"]

BACKENDS = ("local", "ray")
MAX_RETRIES = 3  # Ray re-runs a task this many times when its worker process or node dies

log = logging.getLogger("aimc.run")

Unit = tuple[str, str, int, list[tuple[float, str]]]  # (sweep, model label, seed, [(t_seconds, compensation)])


def import_ray():  # noqa: ANN201
    """The ``ray`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(
            f"--backend ray needs the ray package, which cannot be imported here ({e}). Install it with "
            "pip install 'aimc[ray]' (on the driver and on every node of the cluster), or use --backend local."
        ) from None
    return ray


def check_backend(backend: str, address: str | None, workers: int) -> None:
    """Reject option combinations that cannot mean anything, before any training starts.

    Raises:
        ConfigError: unknown ``backend``; ``address`` without the ray backend; ``address`` with ``workers`` > 1;
            ray not installed for ``backend="ray"``; an address that is not ``host:port``.
        ClusterError: nothing listens at the address (``address`` or ``$RAY_ADDRESS``).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r} is not known; use one of {', '.join(BACKENDS)}.")
    if address is not None and backend != "ray":
        raise ConfigError(f"address={address!r} is only used by the ray backend; add --backend ray, or drop "
                          "--address to run on local processes.")
    if address is not None and workers > 1:
        raise ConfigError(f"workers={workers} has no effect with address={address!r}: the cluster's CPUs decide how "
                          "many tasks run at once. Drop --workers (it sizes a local Ray instance only).")
    if backend == "ray":
        import_ray()
        _check_reachable(_address(address))


def _address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``$RAY_ADDRESS`` (set by ``ray job submit``), else None (local)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (``ray.init`` would retry for minutes)."""
    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"address={address!r} is not host:port (e.g. head-node:6379, as printed by "
                          "`ray start --head`).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(
            f"no Ray cluster answers at {address!r} ({e}). Start one there with `ray start --head --port {port}`, "
            "correct --address (host:port printed by ray start), or drop --address to start a local Ray "
            "instance.") from None


def _driver_env() -> dict[str, Any]:
    """What a task needs from the driver's environment to resolve the same paths (see :func:`_adopt`)."""
    return {"cwd": os.getcwd(), "AIMC_DATA": os.environ.get("AIMC_DATA"),
            "PYTHONPATH": [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]}


def _adopt(env: dict[str, Any]) -> None:
    """In a Ray worker: the driver's working directory, data directory and extra import paths (model modules).

    Ray gives each job its own worker processes, so this changes nothing outside this run.
    """
    if os.path.isdir(env["cwd"]):
        os.chdir(env["cwd"])  # relative data roots ("../shared/data") and device files resolve as on the driver
    if env["AIMC_DATA"] is not None:
        os.environ["AIMC_DATA"] = env["AIMC_DATA"]
    for p in reversed(env["PYTHONPATH"]):
        if p not in sys.path:
            sys.path.insert(0, p)


def _ray_unit(out: str, sweep: str, label: str, seed: int, cells: list[tuple[float, str]],
              env: dict[str, Any]) -> list[dict[str, Any]]:
    """One unit, run in a Ray worker on one thread; returns one row per cell (the columns of results.csv)."""
    _adopt(env)
    from aimc.experiment.units import eval_unit

    return eval_unit(out, sweep, label, seed, cells, threads=1)


def run_units_on_ray(out: str, units: list[Unit], keep: Callable[[list[dict[str, Any]]], None], *,
                     address: str | None = None, workers: int = 1) -> None:
    """Evaluate ``units`` as Ray tasks and call ``keep(rows)`` in this process as each unit finishes.

    Args:
        out: the run directory, absolute, at the same path on every node.
        units: (sweep, model label, seed, cells) with cells ``[(t_seconds, compensation), ...]``.
        keep: stores a finished unit's rows (called in completion order, never concurrently).
        address: a running cluster (``host:port`` of its head, or ``auto``); ``None`` uses ``$RAY_ADDRESS`` if
            set, else starts a local Ray instance with ``workers`` CPUs (all cores if ``workers`` is 1) that is
            stopped again at the end.
        workers: CPUs of a local Ray instance.

    Raises:
        ClusterError: the cluster cannot be reached, or a unit's worker died on every one of its retries.
        AimcError: whatever a task raised on purpose (e.g. a corrupt stage file), re-raised here unchanged.
    """
    ray = import_ray()
    from ray.exceptions import RayTaskError

    address = _address(address)
    started = False
    where = address or "a local Ray instance"
    if ray.is_initialized():  # a caller of run_experiment joined a cluster itself: use it, leave it running
        where = "the Ray cluster this process had joined"
    else:
        kw: dict[str, Any] = ({"address": address} if address else
                              {"address": "local", "num_cpus": workers if workers > 1 else os.cpu_count(),
                               "include_dashboard": False})
        try:
            ray.init(**kw, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(
                f"cannot connect to {where} ({type(e).__name__}: {e}). Check that "
                "`ray start --head` runs there and that --address is the host:port it printed. If the cluster uses "
                "token authentication (ray start turns it on when ~/.ray/auth_token exists), set RAY_AUTH_MODE=token "
                "and give this process the same token (~/.ray/auth_token). Or drop --address to start a local Ray "
                "instance.") from None
        started = True
    cpus = ray.cluster_resources().get("CPU", 0)
    log.info("evaluation: %d unit(s) as Ray tasks (ray %s) on %s, %g CPU(s), max_retries %d", len(units),
             ray.__version__, where, cpus, MAX_RETRIES)
    task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=False)(_ray_unit)
    env = _driver_env()
    which = {task.remote(out, *u, env): u for u in units}
    pending = list(which)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    rows = ray.get(ref)
                except RayTaskError as e:  # the task raised: show the error itself
                    raise (e.cause if isinstance(e.cause, AimcError) else e) from None
                except ray.exceptions.RayError as e:  # the worker or node died on every retry
                    sweep, label, seed, _ = which[ref]
                    raise ClusterError(
                        f"the Ray task of sweep {sweep!r}, model {label!r}, seed {seed} failed {MAX_RETRIES + 1} "
                        f"times ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Every cell "
                        "finished so far is in results.csv: run the same command again to resume.") from None
                keep(rows)
    finally:
        for ref in pending:  # an error or Ctrl-C here: do not leave tasks running on the cluster
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001, S110 - best effort; the driver is going away
                pass
        if started:
            ray.shutdown()
