"""`aimc run --nproc N`: DDP training through torchrun (2 CPU ranks, gloo on 127.0.0.1).

The end-to-end tests (marker ``ddp``, deselected by default) run the real CLI: DDP equals single-process training
with the same global batch (BN-free model: up to float rounding; training noise or batch norm: close), only rank 0
writes, and a torchrun group killed with SIGKILL resumes to the bit-identical result of an uninterrupted DDP run.
The default tests check ``--nproc`` validation and the data order without launching anything.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from aimc.cli import app
from aimc.errors import ConfigError
from aimc.experiment.distributed import _SameOrderSampler, check_world, init_distributed
from aimc.experiment.store import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
needs_gloo = pytest.mark.skipif(not dist.is_gloo_available(), reason="gloo backend not available")

# Records every atomic write (os.replace onto its final name) with the rank that made it.
_SITECUSTOMIZE = '''
import os
_replace = os.replace
def _recorded(src, dst, *a, **k):
    with open(os.path.join(os.environ["AIMC_TEST_WRITES"], f"{os.getpid()}.txt"), "a") as f:
        f.write(f"{os.environ.get('RANK', 'launcher')}\\t{dst}\\n")
    return _replace(src, dst, *a, **k)
if os.environ.get("AIMC_TEST_WRITES"):
    os.replace = _recorded
'''


def experiment(**over) -> dict:
    """350 training images, global batch 32 (11 steps per epoch, 16 images per rank and step)."""
    d = {"name": "ddp", "seed": 5, "model": {"name": "tests.ddp_model:slow_mlp"},
         "data": {"name": "digits", "batch_size": 32, "train_limit": 400, "validation": 50},
         "training": [
             {"name": "fp", "kind": "fp", "epochs": 4, "optimizer": {"name": "adam", "lr": 0.003}},
             {"name": "hwa_clean", "kind": "hwa", "init": "fp", "epochs": 1, "optimizer": {"name": "sgd", "lr": 0.05},
              "training": {"noise": "none", "clip": "gaussian"}},
             {"name": "hwa", "kind": "hwa", "init": "fp", "epochs": 1, "optimizer": {"name": "sgd", "lr": 0.05}}],
         "baselines": {"fp": "fp", "hwa_clean": "hwa_clean"},
         "evaluation": [{"name": "pcm", "analog": "joshi2020", "models": {"hwa": "hwa"}, "times": [25], "seeds": 1,
                         "compensations": ["none"], "n_calib": 32}]}
    d.update(over)
    return d


def _cli(exp: dict, out: Path, nproc: int = 2, writes: Path | None = None) -> subprocess.Popen:
    f = out.parent / f"{out.name}.yaml"
    f.write_text(yaml.safe_dump(exp))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(out.parent / "site"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    if writes is not None:
        (out.parent / "site").mkdir(exist_ok=True)
        (out.parent / "site" / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        writes.mkdir()
        env["AIMC_TEST_WRITES"] = str(writes)
    cmd = [sys.executable, "-m", "aimc.cli", "run", str(f), "--out", str(out), "--quiet", "--threads", "1"]
    return subprocess.Popen(cmd + (["--nproc", str(nproc)] if nproc != 1 else []), env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _ok(p: subprocess.Popen) -> None:
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-3000:]


def _stage(run: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "stages" / f"{name}.safetensors"))


# ---- default tests: no processes launched ------------------------------------------------------------------------
def test_nproc_validation(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(experiment()))
    runner = CliRunner()
    for nproc, words in (("0", "--nproc 0"), ("-2", "--nproc -2"), ("3", "data.batch_size=32")):
        r = runner.invoke(app, ["run", str(f), "--out", str(tmp_path / "r"), "--nproc", nproc])
        assert r.exit_code == 2 and words in r.output and "error:" in r.output, r.output
    assert not (tmp_path / "r").exists()  # refused before launching anything
    check_world(32, 4)
    with pytest.raises(ConfigError, match="divisible by 3 .e.g. 30 or 33."):
        check_world(32, 3)


def test_nproc_relaunches_the_same_command_and_returns_its_exit_code(tmp_path, monkeypatch):
    import aimc.experiment.distributed as distributed

    f = tmp_path / "e.yaml"
    f.write_text(yaml.safe_dump(experiment()))
    calls = []
    monkeypatch.setattr(distributed, "launch", lambda args, nproc: calls.append((args, nproc)) or 3)
    r = CliRunner().invoke(app, ["run", str(f), "--nproc", "4", "--out", str(tmp_path / "r"), "--force", "--quiet",
                                 "--threads", "1"])
    assert r.exit_code == 3, r.output  # the first failing rank's code
    (args, nproc), = calls
    assert nproc == 4 and args[:2] == ["run", str(f)] and "--nproc" not in args
    opts = " ".join(args)
    assert f"--out {tmp_path / 'r'}" in opts and "--force" in opts and "--quiet" in opts and "--threads 1" in opts
    assert "--debug" not in opts and "--no-debug" not in opts


def test_torchrun_by_hand_checks_the_batch_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="cannot be split over 3 processes"):
        init_distributed("cpu", 64)  # raises before init_process_group (which would wait for 3 ranks)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed("cpu", 64) is None


@pytest.mark.parametrize("n", [37, 64, 5])
def test_rank_batches_add_up_to_the_single_process_batches(n):
    """The ranks' shares of every step are exactly the single-process batch (the last step of an odd-sized set
    repeats the first image, as DistributedSampler pads)."""
    ds, batch, world = list(range(n)), 8, 2
    single = list(DataLoader(ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(11)))
    ranks = [list(DataLoader(ds, batch_size=batch // world, sampler=_SameOrderSampler(
        ds, num_replicas=world, rank=r, shuffle=True, seed=11))) for r in range(world)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, b in enumerate(single):
        parts = torch.stack([ranks[0][step], ranks[1][step]], 1).flatten()  # rank r holds positions r, r + 2, ...
        assert parts[:len(b)].tolist() == b.tolist()
        assert len(parts) - len(b) == (len(b) % 2)


# ---- end to end through torchrun (marker ddp) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One uninterrupted `aimc run --nproc 2`, its writes recorded per rank."""
    tmp = tmp_path_factory.mktemp("ddp")
    t0 = time.perf_counter()
    _ok(_cli(experiment(), tmp / "run", writes=tmp / "writes"))
    return tmp / "run", tmp / "writes", time.perf_counter() - t0


@pytest.mark.ddp
@needs_gloo
def test_ddp_equals_single_process_and_only_rank0_writes(ddp_run, tmp_path):
    run, writes, seconds = ddp_run
    single = tmp_path / "single"
    _ok(_cli(experiment(), single, nproc=1))
    # no training noise, no batch norm: the averaged gradient of two half batches is the full-batch gradient
    for stage in ("fp", "hwa_clean"):
        a, b = _stage(single, stage), _stage(run, stage)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=f"{stage}/{k}")
    # training noise: each rank draws its own (seed + rank), so the noise differs but the result is close
    a, b = _stage(single, "hwa"), _stage(run, "hwa")
    assert all(0 < float((a[k] - b[k]).norm() / a[k].norm()) < 0.1 for k in a)  # measured: about 0.02
    ra, rb = pd.read_csv(single / "results.csv"), pd.read_csv(run / "results.csv")
    base = lambda t: t[t.sweep == "baseline"].set_index("model")["accuracy"]  # noqa: E731
    pd.testing.assert_series_equal(base(ra), base(rb))
    assert abs(ra[ra.sweep == "pcm"].accuracy.iloc[0] - rb[rb.sweep == "pcm"].accuracy.iloc[0]) < 0.1

    # only rank 0 wrote: every atomic write in the run directory comes from rank 0, each epoch is logged once
    made = [line.split("\t") for f in writes.glob("*.txt") for line in f.read_text().splitlines()]
    in_run = [(rank, Path(p)) for rank, p in made if Path(p).is_relative_to(run)]
    assert in_run and {rank for rank, _ in in_run} == {"0"}, in_run
    ckpts = [p for _, p in in_run if p.name == "last.safetensors"]
    assert len(ckpts) == 4 + 1 + 1  # one write per epoch
    log = (run / "run.log").read_text()
    assert log.count("stage fp epoch 2/4") == 1 and "DDP training on 2 processes" in log
    assert sorted(p.relative_to(run).as_posix() for p in (run / "checkpoints").rglob("*")
                  if p.is_file()) == ["checkpoints/fp/last.safetensors", "checkpoints/hwa/last.safetensors",
                                      "checkpoints/hwa_clean/last.safetensors"]
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".*"))
    assert yaml.safe_load((run / "environment.json").read_text())["world_size"] == 2
    assert seconds < 60


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.ddp
@needs_gloo
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_the_torchrun_group_and_resume(ddp_run, tmp_path):
    ref = ddp_run[0]
    cut = tmp_path / "cut"
    p = _cli(experiment(), cut)
    ckpt = cut / "checkpoints/fp/last.safetensors"
    deadline = time.time() + 60
    while not ckpt.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert p.poll() is None, "the run finished before it could be killed"
    ranks = _descendants(p.pid)
    os.killpg(p.pid, signal.SIGKILL)  # the launcher's group; the ranks (own sessions) die with it (PDEATHSIG)
    p.communicate()
    deadline = time.time() + 10
    while any(_running(r) for r in ranks) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_running(r) for r in ranks), "a rank outlived its launcher"
    assert load_checkpoint(ckpt)["epoch"] < 4 and not (cut / "stages/fp.safetensors").exists()
    _ok(_cli(experiment(), cut))  # resume: every rank loads the same checkpoint
    for stage in ("fp", "hwa_clean", "hwa"):
        a, b = _stage(ref, stage), _stage(cut, stage)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), stage
    pd.testing.assert_frame_equal(pd.read_csv(ref / "results.csv"), pd.read_csv(cut / "results.csv"))
    assert "resuming after epoch" in (cut / "run.log").read_text()
    assert not list(cut.rglob("*.tmp"))


@pytest.mark.ddp
@needs_gloo
def test_batch_norm_model_is_close_to_single_process(tmp_path):
    """Batch norm normalises over each rank's 16 images instead of 32 (SyncBatchNorm needs CUDA): close, not equal."""
    exp = experiment(model={"name": "digits_cnn"}, training=[experiment()["training"][0]], baselines={"fp": "fp"},
                     evaluation=[])
    ps = [_cli(exp, tmp_path / "ddp"), _cli(exp, tmp_path / "single", nproc=1)]
    for p in ps:
        _ok(p)
    hist = [json.loads(safe_open(str(tmp_path / r / "stages/fp.safetensors"), "pt").metadata()["aimc_stage"])["history"][-1]
            for r in ("single", "ddp")]
    assert abs(hist[0]["loss"] / hist[1]["loss"] - 1) < 0.1, hist  # measured: 1.18 vs 1.22
    acc = [pd.read_csv(tmp_path / r / "results.csv").accuracy.iloc[0] for r in ("single", "ddp")]
    assert abs(acc[0] - acc[1]) < 0.05 and min(acc) > 0.6, acc  # measured: 0.876 vs 0.867


@pytest.mark.ddp
@needs_gloo
def test_rank_error_propagates_exit_code(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(experiment(seed=99)))  # a different experiment lives here
    p = _cli(experiment(), out)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "--force" in err, err[-2000:]
