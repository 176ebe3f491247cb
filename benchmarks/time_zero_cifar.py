"""Accuracy of the CIFAR-10 ResNet-32 H (``models/resnet32_cifar10_hwa.safetensors``, ``joshi2020``) at t = 0 and
t = 25 s without compensation: what the model's own drift between t0 = 20 s and t0 + 25 s costs.

``at_time(t)`` follows aihwkit: drift is referenced to the first read at t0 = 20 s after programming and t counts
from t0, so t = 0 is that first read (no drift yet, read noise only) and t = 25 s has drifted by
(45/20)^−ν ≈ 0.96. Same 10,000 test images and the same seeds (programming noise, ν) at both times.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/time_zero_cifar.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

import aimc
from aimc.data.cifar import cifar10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--model", default="models/resnet32_cifar10_hwa.safetensors")
    args = ap.parse_args()
    t_start = time.perf_counter()
    model = aimc.load(args.model)
    test = DataLoader(cifar10("test"), batch_size=500)
    res = aimc.evaluate(model, test, times=[0.0, 25.0], seeds=range(args.seeds), compensation=("none", "gdc"),
                        progress=False)
    print(res.summary().to_string())
    print(f"total wall time {time.perf_counter() - t_start:.1f} s, torch threads {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
