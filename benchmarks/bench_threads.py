"""Analog forward vs plain PyTorch at 1 and 2 torch threads (issue 20, item 4 "Both cores"), ratios in one run.

Two workloads, ResNet-32 on CIFAR-10-sized inputs, batch 128, ``torch.inference_mode``, ``aihwkit_default``
(7-bit DAC with per-vector input ranges, output noise, 9-bit ADC, iterative bound management), programmed and
drifted to t = 1 day:

1. ``random``: random-init ResNet-32 (``torch.manual_seed(0)``) on ``torch.randn`` inputs: outputs clip, so bound
   management re-reads vectors;
2. ``cifar``: the pretrained ResNet-32 (``resnet32_cifar10.safetensors``) on 128 real CIFAR-10 test images (the
   class-balanced ``limit=128`` subset, normalised as for training).

For each thread count (``torch.set_num_threads``) the median of paired analog/plain ratios (the two forwards
alternate, ``benchmarks/_paired.py``) against the target ≤ 2.5×, with the plain forward's median time and the load
average (``uptime``) measured right before. The machine's other load hits two threads hardest: read the load next
to each number.

    .venv/bin/python benchmarks/bench_threads.py [--repeats 7] [--data ../shared/data] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _paired import paired_ratio  # noqa: E402
from bench_core import header  # noqa: E402

import aimc  # noqa: E402
from aimc.data import cifar10  # noqa: E402
from aimc.models import load_pretrained_resnet32, resnet32_cifar  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = 2.5
PRESET = "aihwkit_default"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "uptime unavailable"


def workloads(args: argparse.Namespace) -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    rand = resnet32_cifar().eval()
    x_rand = torch.randn(args.batch, 3, 32, 32)
    pre = load_pretrained_resnet32(args.data / "resnet32_cifar10.safetensors").eval()
    ds = cifar10("test", root=args.data, limit=args.batch)
    x_img = torch.stack([ds[i][0] for i in range(len(ds))])
    return {"random": (rand, x_rand), "cifar": (pre, x_img)}


def analog(base: torch.nn.Module) -> torch.nn.Module:
    a = aimc.convert(base, aimc.presets.get(PRESET)).eval()
    aimc.program(a, seed=0)
    aimc.at_time(a, 86400.0, seed=0)
    return a


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7, help="timed pairs per workload and thread count (default 7)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--quick", action="store_true", help="batch 16, 2 pairs (smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.batch, args.repeats = 16, 2
    t0 = time.perf_counter()
    header(settings=f"{PRESET}, batch {args.batch}, t = 1 day, 1 warm-up pair, median of {args.repeats} paired "
                    f"ratios, torch.inference_mode")
    rows = []
    for name, (base, x) in workloads(args).items():
        a = analog(base)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            load = uptime()
            plain_t: list[float] = []

            def plain(base: torch.nn.Module = base, x: torch.Tensor = x) -> None:
                t = time.perf_counter()
                base(x)
                plain_t.append(time.perf_counter() - t)

            with torch.inference_mode():
                r = paired_ratio(plain, lambda a=a, x=x: a(x), args.repeats)
            rows.append((name, threads, statistics.median(plain_t), r, load))
            print(f"  {name:<7} threads {torch.get_num_threads()}: plain {statistics.median(plain_t) * 1e3:7.1f} ms, "
                  f"{PRESET}/plain {r:5.2f}x  ({load})", flush=True)
    print(f"\n{'workload':<9}{'threads':>8}{'plain ms':>10}{'analog/plain':>14}{'target':>8}  verdict   load avg")
    for name, threads, tp, r, load in rows:
        avg = load.split("load average:")[-1].strip()
        print(f"{name:<9}{threads:>8}{tp * 1e3:>10.1f}{r:>13.2f}x{TARGET:>7.1f}x  {'PASS' if r <= TARGET else 'MISS'}"
              f"      {avg}")
    print(f"\n{uptime()}\ntotal wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
