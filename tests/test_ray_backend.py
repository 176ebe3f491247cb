"""``aimc run --backend ray``: option checks and the missing-ray error (fast, no ray needed); then, behind the
``ray`` marker, a real Ray cluster on 127.0.0.1: results bit-identical to the local backend, a killed worker is
retried, a killed driver resumes, and finished cells are in results.csv while the sweep still runs."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from aimc.cli import app
from aimc.errors import ConfigError
from aimc.errors import ClusterError
from aimc.experiment.runner import run_experiment
from aimc.experiment.spec import experiment_from_dict

ROOT = Path(__file__).resolve().parents[1]
KEY = ["sweep", "model", "compensation", "t_seconds", "seed"]
RAY_BIN = Path(sys.executable).parent / "ray"
# Ray replaces 127.0.0.1 by the machine's network address unless cluster mode is off; off, every Ray process
# listens on loopback only. Token authentication on for the cluster and its drivers alike (~/.ray/auth_token,
# which Ray creates if missing): ray start enables it by itself when that file exists, a driver only when told.
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def tiny(**over) -> dict:
    """test_experiment's tiny run with a larger grid (5 times, 4 seeds), so a sweep lasts long enough to kill."""
    from test_experiment import tiny as base

    d = base(name="tiny_ray")
    d["evaluation"] = [{**d["evaluation"][0], "times": [25, 3600, 86400, 2.6e6, 3.15e7], "seeds": 4}]
    d.update(over)
    return d


N_CELLS = 1 + 2 * 4 * 5 * 3  # baseline + models x seeds x times x compensations


# ---- fast: no ray needed ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend, address, workers, match", [
    ("spark", None, 1, "local, ray"),
    ("local", "127.0.0.1:6379", 1, "--backend ray"),
    ("ray", "127.0.0.1:6379", 2, "Drop --workers"),
])
def test_backend_options_are_checked_before_anything_runs(tmp_path, backend, address, workers, match):
    with pytest.raises(ConfigError, match=match):
        run_experiment(experiment_from_dict(tiny()), tmp_path / "run", quiet=True, backend=backend,
                       address=address, workers=workers)
    assert not (tmp_path / "run").exists()


def test_missing_ray_is_a_clear_error_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as without the package
    with pytest.raises(ConfigError, match=r"pip install 'aimc\[ray\]'"):
        run_experiment(experiment_from_dict(tiny()), tmp_path / "run", quiet=True, backend="ray")
    assert not (tmp_path / "run").exists()
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(tiny()))
    r = CliRunner().invoke(app, ["run", str(f), "--out", str(tmp_path / "run"), "--backend", "ray"])
    assert r.exit_code == 2 and "aimc[ray]" in r.output and "--backend local" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["run", str(f), "--out", str(tmp_path / "run"), "--backend", "spark"])
    assert r.exit_code == 2 and "local, ray" in r.output


def test_unreachable_cluster_fails_in_seconds_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", types.ModuleType("ray"))  # ray "installed"; never reached
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match="no Ray cluster answers at '127.0.0.1:"):
        run_experiment(experiment_from_dict(tiny()), tmp_path / "run", quiet=True, backend="ray",
                       address=f"127.0.0.1:{_free_port()}")
    with pytest.raises(ConfigError, match="not host:port"):
        run_experiment(experiment_from_dict(tiny()), tmp_path / "run", quiet=True, backend="ray", address="head")
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "run").exists()


# ---- a real Ray cluster on loopback -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """``ray start --head`` on 127.0.0.1 with 2 CPUs; yields its address; ``ray stop --force`` at the end."""
    pytest.importorskip("ray")
    port = _free_port()
    env = {**os.environ, **LOOPBACK, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    logs = tmp_path_factory.mktemp("ray") / "ray_start.log"
    try:
        with open(logs, "w") as f:  # a file, not a pipe: the daemons ray start leaves behind keep its output open
            rc = subprocess.run([str(RAY_BIN), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                                 "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                                env=env, stdout=f, stderr=subprocess.STDOUT, timeout=120).returncode
        assert rc == 0, logs.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY_BIN), "stop", "--force"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained and swept on the local backend (one process): the reference results."""
    out = tmp_path_factory.mktemp("ref")
    run_experiment(experiment_from_dict(tiny()), out, quiet=True)
    return out


def _copy_without_results(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    (dst / "results.csv").unlink()
    return dst


def _assert_same_results(a: Path, b: Path) -> None:
    ta, tb = pd.read_csv(a / "results.csv"), pd.read_csv(b / "results.csv")
    assert len(ta) == len(tb) == N_CELLS
    pd.testing.assert_frame_equal(ta.sort_values(KEY).reset_index(drop=True),
                                  tb.sort_values(KEY).reset_index(drop=True))


def _driver(exp_file: Path, out: Path, *options: str) -> subprocess.Popen:
    """``aimc run --backend ray`` in its own process (Ray reads LOOPBACK when it is imported)."""
    env = {**os.environ, **LOOPBACK, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    err = out.parent / f"{out.name}.stderr"  # a file: a full pipe nobody reads would stall the driver
    with open(err, "ab") as f:
        p = subprocess.Popen([sys.executable, "-m", "aimc.cli", "run", str(exp_file), "--out", str(out), "--quiet",
                              "--threads", "1", "--backend", "ray", *options],
                             env=env, stdout=subprocess.DEVNULL, stderr=f)
    p.err = err
    return p


def _finish(p: subprocess.Popen) -> None:
    assert p.wait(timeout=300) == 0, p.err.read_text()


@pytest.fixture
def exp_file(tmp_path) -> Path:
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(tiny()))
    return f


@pytest.mark.ray
def test_cluster_results_equal_local_backend(trained, ray_cluster, tmp_path, exp_file):
    out = _copy_without_results(trained, tmp_path / "r")
    _finish(_driver(exp_file, out, "--address", ray_cluster))
    _assert_same_results(trained, out)
    log = (out / "run.log").read_text()
    assert "as Ray tasks (ray " in log and f"on {ray_cluster}, 2 CPU(s)" in log


def _raylets() -> int:
    ps = subprocess.run(["ps", "-eo", "args="], capture_output=True, text=True, check=True).stdout
    return sum("/raylet " in line for line in ps.splitlines())


@pytest.mark.ray
def test_local_ray_instance_results_equal_local_backend(trained, tmp_path, exp_file):
    pytest.importorskip("ray")
    out = _copy_without_results(trained, tmp_path / "r")
    before = _raylets()
    _finish(_driver(exp_file, out, "--workers", "2"))
    _assert_same_results(trained, out)
    assert "on a local Ray instance, 2 CPU(s)" in (out / "run.log").read_text()
    assert _raylets() == before  # the instance aimc started is stopped again


def _pcm_rows(out: Path) -> int:
    try:
        return int((pd.read_csv(out / "results.csv")["sweep"] == "pcm").sum())
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _task_pids() -> list[int]:
    """Ray workers executing a unit right now (Ray titles a busy worker ``ray::<function name>``)."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split(None, 1)[0]) for line in ps.splitlines() if "ray::_ray_unit" in line]


def _wait_for(cond, p: subprocess.Popen, what: str, timeout: float = 180):  # noqa: ANN001, ANN202
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = cond()
        if got:
            return got
        assert p.poll() is None, f"the driver ended (rc {p.returncode}) before {what}: {p.err.read_text()}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.ray
def test_killed_worker_is_retried_and_killed_driver_resumes(trained, ray_cluster, tmp_path, exp_file):
    # 1) SIGKILL a worker in the middle of a unit, after some units are stored: Ray re-runs that unit
    out = _copy_without_results(trained, tmp_path / "worker")
    p = _driver(exp_file, out, "--address", ray_cluster)
    _wait_for(lambda: _pcm_rows(out) > 0, p, "the first unit was stored")
    victim = _wait_for(_task_pids, p, "a unit was running")[0]
    assert 0 < _pcm_rows(out) < N_CELLS - 1  # rows stream in while the sweep runs; only the driver writes them
    assert "ray::_ray_unit" in Path(f"/proc/{victim}/cmdline").read_text()  # still busy with its unit
    os.kill(victim, signal.SIGKILL)
    _finish(p)
    _assert_same_results(trained, out)
    logs = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir()), "ray").glob(
        f"session_*/logs/python-core-driver-*_{p.pid}.log")
    text = "".join(f.read_text() for f in logs)
    assert "Will resubmit task" in text and "_ray_unit" in text  # Ray's own log of the retry (Ray 2.60 wording)
    # 2) SIGKILL the driver mid-sweep: finished units are on disk; the same command resumes the rest
    out = _copy_without_results(trained, tmp_path / "driver")
    p = _driver(exp_file, out, "--address", ray_cluster)
    _wait_for(lambda: _pcm_rows(out) > 0, p, "the first unit was stored")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert 0 < _pcm_rows(out) < N_CELLS - 1
    _finish(_driver(exp_file, out, "--address", ray_cluster))
    _assert_same_results(trained, out)
    assert not list(out.rglob("*.tmp"))
