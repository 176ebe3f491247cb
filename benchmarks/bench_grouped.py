"""Grouped / depthwise convolutions: forward overhead of MobileNetV3-small- and EfficientNet-B0-shaped networks.

Both networks are built here with the full-size channel configurations of torchvision's ``mobilenet_v3_small``
and ``efficientnet_b0`` (stem, inverted-residual / MBConv blocks with depthwise 3x3 / 5x5 convolutions and
squeeze-excitation, head conv, classifier; batch norm in eval mode, random weights, no downloads). Each is
converted with ``joshi2020`` and ``aihwkit_default``, programmed and drifted to one day, and its forward
(``torch.inference_mode``) is timed against the plain model in the same run: median of the per-pair ratios, each
analog timing paired with a plain timing next to it (order alternating), 1 warm-up pair, N pairs; for 1 and 2
threads (``torch.set_num_threads``). The depthwise convolutions' groups are packed block-diagonally into tiles
(``aimc.mapping``); the table also gives the tile count of each converted network.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_grouped.py              # batch 8, 224x224, N = 5
    PYTHONPATH=src .venv/bin/python benchmarks/bench_grouped.py --quick      # smoke test (batch 2, 64x64, N = 1)

Always exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch
from torch import nn

from _paired import paired_ratio  # noqa: E402  (benchmarks/, the script's own folder)
import aimc


def _div8(v: float) -> int:
    """torchvision's ``_make_divisible(v, 8)``."""
    n = max(8, int(v + 4) // 8 * 8)
    return n + 8 if n < 0.9 * v else n


class _Block(nn.Module):
    """Inverted residual / MBConv: 1x1 expand (if any), depthwise k x k, squeeze-excitation (if any), 1x1 project."""

    def __init__(self, cin: int, k: int, hidden: int, cout: int, se: int, act: type[nn.Module], stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act()]
        layers += [nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   act()]
        self.body = nn.Sequential(*layers)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden, se, 1), nn.ReLU() if act is nn.Hardswish
                                else nn.SiLU(), nn.Conv2d(se, hidden, 1),
                                nn.Hardsigmoid() if act is nn.Hardswish else nn.Sigmoid()) if se else None
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        if self.se is not None:
            h = h * self.se(h)
        y = self.project(h)
        return x + y if self.residual else y


def mobilenet_v3_small(classes: int = 1000) -> nn.Module:
    """torchvision ``mobilenet_v3_small`` shapes (2.5 M weights, 11 depthwise convolutions)."""
    hs, re = nn.Hardswish, nn.ReLU
    cfg = [(16, 3, 16, 16, True, re, 2), (16, 3, 72, 24, False, re, 2), (24, 3, 88, 24, False, re, 1),
           (24, 5, 96, 40, True, hs, 2), (40, 5, 240, 40, True, hs, 1), (40, 5, 240, 40, True, hs, 1),
           (40, 5, 120, 48, True, hs, 1), (48, 5, 144, 48, True, hs, 1), (48, 5, 288, 96, True, hs, 2),
           (96, 5, 576, 96, True, hs, 1), (96, 5, 576, 96, True, hs, 1)]
    blocks = [_Block(i, k, e, o, _div8(e // 4) if se else 0, a, s) for i, k, e, o, se, a, s in cfg]
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), hs(), *blocks,
                         nn.Conv2d(96, 576, 1, bias=False), nn.BatchNorm2d(576), hs(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(576, 1024), hs(), nn.Linear(1024, classes))


def efficientnet_b0(classes: int = 1000) -> nn.Module:
    """torchvision ``efficientnet_b0`` shapes (5.3 M weights, 16 depthwise convolutions)."""
    stages = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]
    blocks = []
    for exp, k, stride, cin, cout, n in stages:
        for i in range(n):
            c = cin if i == 0 else cout
            blocks.append(_Block(c, k, c * exp, cout, max(1, c // 4), nn.SiLU, stride if i == 0 else 1))
    return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.SiLU(), *blocks,
                         nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.SiLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes))


def _ratio(plain: nn.Module, analog: nn.Module, x: torch.Tensor, n: int) -> float:
    with torch.inference_mode():
        return paired_ratio(lambda: plain(x), lambda: analog(x), n, warmup=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--n", type=int, default=5)
    args = ap.parse_args()
    batch, size, n = (2, 64, 1) if args.quick else (args.batch, args.size, args.n)
    print(f"# bench_grouped: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, batch {batch}, {size}x{size}, N = {n}; command: python {' '.join(sys.argv)}")
    print("| network | preset | tiles | forward / plain, 1 thread | forward / plain, 2 threads |")
    print("|---|---|---|---|---|")
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    for name, make in (("MobileNetV3-small", mobilenet_v3_small), ("EfficientNet-B0", efficientnet_b0)):
        torch.manual_seed(0)
        plain = make().eval()
        for preset in ("joshi2020", "aihwkit_default"):
            a = aimc.convert(plain, getattr(aimc.presets, preset)()).eval()
            aimc.program(a, seed=0)
            aimc.at_time(a, 86_400.0, seed=0)
            cells = []
            for threads in (1, 2):
                torch.set_num_threads(threads)
                cells.append(f"{_ratio(plain, a, x, n):.2f}x")
            print(f"| {name} | {preset} | {a.aimc_report.n_tiles} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
