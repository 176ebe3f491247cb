"""Peak memory of ``aimc.convert`` on BERT-base (random weights, Hugging Face config defaults, 109.5 M parameters).

Each mode runs in its own process (peak RSS only grows): ``none`` (the model alone), ``copy`` (default
conversion: one deep copy) and ``inplace`` (``convert(..., inplace=True)``: the analog weights reuse the original
storage). Needs transformers (``pip install 'aimc[hf]'``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/convert_memory.py
"""

from __future__ import annotations

import gc
import resource
import subprocess
import sys


def _child(mode: str) -> None:
    import torch
    import transformers

    import aimc

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig()).eval()
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if mode != "none":
        analog = aimc.convert(model, aimc.presets.joshi2020(), inplace=mode == "inplace")
        assert analog.aimc_report.analog
    gc.collect()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"| {mode} | {n:.1f} M | {before:.0f} MB | {after:.0f} MB | {after - before:+.0f} MB |", flush=True)


def main() -> None:
    if len(sys.argv) > 1:
        _child(sys.argv[1])
        return
    print("| conversion | parameters | peak RSS, model built | peak RSS, after convert | added |")
    print("|---|---|---|---|---|")
    for mode in ("none", "copy", "inplace"):
        subprocess.run([sys.executable, __file__, mode], check=True)


if __name__ == "__main__":
    main()
