"""Distributed data-parallel training for ``aimc run --nproc N``: PyTorch DDP through torchrun.

``aimc run X --nproc N`` (N ≥ 2) re-launches the same command under torchrun's launcher (``torch.distributed.run``,
in-process) with N local ranks on 127.0.0.1 and returns the exit code of the first rank that failed;
``torchrun --nproc-per-node N -m aimc.cli run X`` does the same by hand (and spans nodes). Inside, when
``WORLD_SIZE > 1``:

* the process group is gloo on CPU and nccl on CUDA (rank r then uses ``cuda:LOCAL_RANK``);
* every rank builds the same seeded model; training stages wrap it in ``DistributedDataParallel``;
* ``data.batch_size`` stays the *global* batch: each rank takes ``batch_size / world_size`` images per step from a
  ``DistributedSampler`` seeded with the single-process shuffle seed of that epoch, so rank r gets positions
  r, r + W, … of the very permutation a single process uses and the ranks' batches together are exactly the
  single-process batch (same number of steps, same learning-rate schedule). Averaging the ranks' gradients then
  equals the full-batch gradient up to float rounding — except for batch-norm batch statistics, which each rank
  computes over its own share (aimc does not convert to SyncBatchNorm, which runs on CUDA only; the running
  statistics are rank 0's, broadcast by DDP). A training set that is not a multiple of W repeats its first
  images in the last step of an epoch (DistributedSampler's padding);
* training noise draws from ``seed + rank``: independent per rank, reproducible;
* only rank 0 writes files (checkpoints, stage weights, run.log, results); the other ranks wait at a barrier after
  every write, so all ranks continue from the same files, and a resumed run loads the same checkpoint everywhere;
* after training the ranks > 0 leave; digital baselines and evaluation sweeps run on rank 0 alone.
"""

from __future__ import annotations

import enum
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from aimc.errors import ConfigError

__all__ = ["Dist", "world_size", "is_main_process", "check_world", "init_distributed", "launch", "relaunch_args"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the group."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` (already on ``self.device``) in DistributedDataParallel; parameters are broadcast from rank 0."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def loader(self, ds: Dataset, batch_size: int, seed: int) -> DataLoader:
        """This rank's share of the single-process loader ``DataLoader(ds, batch_size, shuffle=True, generator seeded
        with seed)``: batches of ``batch_size / W`` images that together are the single-process batches."""
        sampler = _SameOrderSampler(ds, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed)
        sampler.set_epoch(0)  # the epoch is already folded into ``seed`` (as in the single-process loader)
        return DataLoader(ds, batch_size=batch_size // self.world, sampler=sampler)

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def finish(self) -> None:
        """Final barrier (every rank's training is on disk), then leave the group."""
        self.barrier()
        dist.destroy_process_group()


class _SameOrderSampler(DistributedSampler):
    """A DistributedSampler whose global order is the single-process loader's: rank r gets positions r, r + W, … of
    exactly the permutation ``DataLoader(ds, shuffle=True, generator=Generator().manual_seed(seed + epoch))`` yields.

    That permutation is taken from such a DataLoader over the indices themselves, so it follows whatever that
    loader draws from its generator (it draws a worker base seed before the permutation, so a plain
    ``randperm(generator)`` as in DistributedSampler would differ). Padding to a multiple of W is
    DistributedSampler's: the first images of the permutation are repeated.
    """

    def __iter__(self):  # noqa: ANN204
        n = len(self.dataset)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = [i for b in DataLoader(range(n), batch_size=max(n, 1), shuffle=True, generator=g) for i in b.tolist()]
        order += (order * (self.total_size // max(n, 1) + 1))[: self.total_size - n]
        return iter(order[self.rank:self.total_size:self.num_replicas])


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """False in the ranks > 0 of a torchrun launch (they print nothing and write nothing)."""
    return int(os.environ.get("RANK", "0")) == 0


def check_world(batch_size: int, world: int) -> None:
    """The global batch must split evenly over the processes."""
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ConfigError(f"--nproc {world!r} is not allowed: give the number of training processes, an integer ≥ 1 "
                          "(1 = no DDP).")
    if batch_size % world:
        lo = batch_size - batch_size % world
        raise ConfigError(
            f"data.batch_size={batch_size} cannot be split over {world} processes: it is the global batch, and each "
            f"process takes batch_size / {world} images per step. Choose a batch size divisible by {world} (e.g. "
            f"{lo or world} or {lo + world}) or another --nproc.")


def init_distributed(exp_device: str, batch_size: int) -> Dist | None:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; ``None`` in a single process."""
    world = world_size()
    if world <= 1:
        return None
    check_world(batch_size, world)
    _die_with_parent()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if exp_device.startswith("cuda"):
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Dist(rank, world, local, device)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when its launcher dies (torchrun starts ranks in their own session, so a killed
    launcher would otherwise leave them training and writing into the run directory)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before prctl
        os._exit(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], nproc: int) -> int:
    """Run ``python -m aimc.cli *args`` in ``nproc`` local ranks under torchrun's launcher; the exit code of the first
    rank that failed (0 if all succeeded; 128 + signal for a rank killed by a signal)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, without its warning
    targs = parse_args(["--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1", "--master-port",
                        str(_free_port()), "--local-addr", "127.0.0.1", "--module", "aimc.cli", *args])
    try:
        run(targs)
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 128 - code
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0


def relaunch_args(ctx: Any, drop: tuple[str, ...] = ("nproc",)) -> list[str]:
    """The command line of a typer (click) command rebuilt from its parsed parameters, without ``drop``."""
    out: list[str] = [ctx.info_name]
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if p.name in drop or v is None:
            continue
        values = [x.value if isinstance(x, enum.Enum) else x for x in (v if isinstance(v, (list, tuple)) else [v])]
        if p.param_type_name == "argument":
            out += [str(x) for x in values]
        elif getattr(p, "is_flag", False):
            if v != p.default:
                out.append(p.opts[0] if v else (p.secondary_opts or p.opts)[0])
        else:
            for x in values:
                out += [p.opts[0], str(x)]
    return out
