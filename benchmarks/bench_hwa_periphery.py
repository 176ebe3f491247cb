"""Training-step cost of hardware-aware training through the periphery (``training.periphery``), measured in one run.

For the digits CNN (``aimc.models.digits_cnn``, batch 64 of 8×8 images) and the MNIST MLP (784-250-10, batch 128),
converted with ``aihwkit_default`` (7-bit DAC with per-vector ranges, output noise, iterative bound management,
9-bit ADC): one HWA training step (forward, backward, Adam step, ``aimc.clip``) with ``training.periphery`` off
(``F.linear``/convolution on the noisy weights) and on (``aimc.periphery.tiled_mvm`` per tile), and the plain
float32 step for reference. Random inputs of the real shapes (the cost does not depend on the values, except
for the rare bound-management retries). Blocks of ``--block`` steps of one variant alternate over ``--rounds``
rounds after warm-up; the medians of the per-round ratios are printed. Always exits 0.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_hwa_periphery.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_hwa_periphery.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import aimc
import aimc.models


def _step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
          analog: bool) -> None:
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if analog:
        aimc.clip(model)


def bench(name: str, model: torch.nn.Module, shape: tuple[int, ...], rounds: int, block: int) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(*shape, generator=g), torch.randint(0, 10, (shape[0],), generator=g)
    base = aimc.presets.aihwkit_default()
    variants = {"float32": (model, False)}
    for per in (False, True):
        cfg = dataclasses.replace(base, training=dataclasses.replace(base.training, periphery=per))
        variants[f"periphery={per}"] = (aimc.convert(model, cfg).train(), True)
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, (m, _) in variants.items()}
    for k, (m, analog) in variants.items():  # warm-up
        m.train()
        for _ in range(3):
            _step(m, opts[k], x, y, analog)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for k, (m, analog) in variants.items():
            t0 = time.perf_counter()
            for _ in range(block):
                _step(m, opts[k], x, y, analog)
            times[k].append((time.perf_counter() - t0) / block)
    med = {k: statistics.median(v) for k, v in times.items()}
    r_on_off = statistics.median(a / b for a, b in zip(times["periphery=True"], times["periphery=False"]))
    r_off_fp = statistics.median(a / b for a, b in zip(times["periphery=False"], times["float32"]))
    print(f"{name} (input {tuple(shape)}): float32 {1000 * med['float32']:.2f} ms, HWA without periphery "
          f"{1000 * med['periphery=False']:.2f} ms, with periphery {1000 * med['periphery=True']:.2f} ms per step; "
          f"with/without periphery {r_on_off:.2f}x, without periphery/float32 {r_off_fp:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    rounds, block = (2, 1) if a.quick else (a.rounds, a.block)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.1f}")
    print("command:", shlex.join([os.path.basename(sys.executable), *sys.argv]))
    torch.manual_seed(0)
    bench("digits_cnn", aimc.models.digits_cnn(), (64, 1, 8, 8), rounds, block)
    bench("mnist_mlp", aimc.models.mnist_mlp(), (128, 1, 28, 28), rounds, block)


if __name__ == "__main__":
    main()
