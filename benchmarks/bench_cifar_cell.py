"""Wall time of one full CIFAR-10 evaluation cell vs the plain PyTorch forward over the same images (issue
"Reproduce Joshi et al. 2020", target ≤ 1.2× with ideal periphery), measured in one run.

A cell = ``aimc.at_time(model, t, seed)`` (drift, read noise, GDC read-out of every tile) + accuracy over the
10,000 test images, for the saved HWA ResNet-32 (``models/resnet32_cifar10_hwa.safetensors``, ``joshi2020``); the
plain reference is the same network's digital forward over the same batches (same loader, same batch size). The
``gdc+bn`` cell also re-estimates BN statistics on 2,600 training images and is reported separately (it is a
compensation step, not part of the evaluation pass). Pairs alternate their order; verdict on the median pair
ratio. One torch thread.

    .venv/bin/python benchmarks/bench_cifar_cell.py [--quick] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import header, med, paired  # noqa: E402

import aimc  # noqa: E402
from aimc.compensation import recalibrate_bn  # noqa: E402
from aimc.data import cifar10  # noqa: E402
from aimc.evaluation import accuracy  # noqa: E402
from aimc.models import resnet32_cifar  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 test images, 2 pairs")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = ap.parse_args()
    args.batch, args.warmup = 250, 0
    args.repeats = 2 if args.quick else 3
    torch.set_num_threads(1)
    header(args)
    n = 1000 if args.quick else 10000
    test = DataLoader(cifar10("test", root=args.data, limit=n if args.quick else None), batch_size=args.batch)
    calib = DataLoader(cifar10("train", root=args.data, augment=True, generator=torch.Generator().manual_seed(0)),
                       batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = aimc.load(ROOT / "models" / "resnet32_cifar10_hwa.safetensors").eval()
    plain = resnet32_cifar()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    plain.eval()
    aimc.program(model, seed=0)
    t_cell = 86400.0

    def cell(comp: str) -> float:
        aimc.at_time(model, t_cell, seed=0, gdc=comp != "none")
        if comp == "gdc+bn":
            recalibrate_bn(model, calib, 2600)
        return accuracy(model, test)

    fns = {"gdc": lambda: cell("gdc"), "none": lambda: cell("none")}
    t0 = time.perf_counter()
    tb, tf, ratio = paired(lambda: accuracy(plain, test), fns, args.warmup, args.repeats)
    print(f"\none evaluation cell over {n:,} test images (t = 1 day, seed 0) vs the plain forward over the same "
          f"batches (batch {args.batch})")
    print(f"  {'cell':<10}{'median s':>10}{'n':>4}{'median pair ratio':>19}{'target':>8}  verdict")
    print(f"  {'plain':<10}{med(tb):>10.2f}{len(tb):>4}{1.0:>18.2f}x")
    for k in fns:
        r = med(ratio[k])
        print(f"  {k:<10}{med(tf[k]):>10.2f}{len(tf[k]):>4}{r:>18.2f}x{TARGET:>7.1f}x  "
              f"{'PASS' if r <= TARGET else 'MISS'}")
    tb2, tf2, ratio2 = paired(lambda: accuracy(plain, test), {"gdc+bn": lambda: cell("gdc+bn")}, 0, 2)
    print(f"  {'gdc+bn':<10}{med(tf2['gdc+bn']):>10.2f}{len(tf2['gdc+bn']):>4}{med(ratio2['gdc+bn']):>18.2f}x"
          "   (includes BN re-estimation on 2,600 training images; no target)")
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
