"""Saved-file size of a programmed, drifted model against its plain weights (issue 20, item 3).

For each model: ``aimc.save`` after ``aimc.program`` and ``aimc.at_time(1 day)`` against
``safetensors.torch.save_file`` of the plain model's ``state_dict``; then ``aimc.load`` and a check that the loaded
model's outputs equal the saved one's bit for bit. Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_file_size.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

import aimc
from aimc import models


def main() -> None:
    torch.manual_seed(0)
    cases = [("resnet32_cifar", {}, (2, 3, 32, 32)), ("resnet34_imagenet", {}, (1, 3, 64, 64))]
    print("| model | weights | plain file | aimc.save, programmed + 1 day | ratio | load bit-exact |")
    print("|---|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as d:
        for name, kw, shape in cases:
            plain = models.get_model(name, **kw).eval()
            p_plain = Path(d) / f"{name}_plain.safetensors"
            save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(p_plain))
            a = aimc.convert(plain, aimc.presets.joshi2020()).eval()
            a.aimc_arch = name
            aimc.program(a, seed=0)
            aimc.at_time(a, 86400.0, seed=0)
            p = Path(d) / f"{name}.safetensors"
            aimc.save(a, p)
            b = aimc.load(p).eval()
            x = torch.randn(*shape)
            with torch.no_grad():
                same = torch.equal(a(x), b(x))
            n = sum(w.numel() for w in plain.parameters())
            s0, s1 = p_plain.stat().st_size, p.stat().st_size
            print(f"| {name} | {n:,} | {s0 / 1e6:.2f} MB | {s1 / 1e6:.2f} MB | {s1 / s0:.3f}× | {same} |")


if __name__ == "__main__":
    main()
