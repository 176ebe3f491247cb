"""Peak memory of a Llama-shaped model with the physics on, against the plain model (issue 20, item 2).

Each case runs in its own subprocess and reports its peak resident set size (VmHWM of /proc/self/status):

* plain: build the model (random weights), forward on ``--tokens`` tokens (no grad);
* analog: build, ``aimc.convert`` (a copy: the original is then dropped; with ``inplace=True`` where this aimc has
  it), ``aimc.program``, ``aimc.at_time`` to 1 day with GDC, the same forward. The peak is reported over the whole
  run and over program + at_time + forward only (VmHWM reset after conversion via /proc/self/clear_refs).

The model is a stack of Llama blocks built from ``nn.Linear``/``nn.Embedding`` (RMSNorm, causal multi-head
attention, SiLU-gated MLP, untied LM head); ``--preset tinyllama`` gives the 1.1 B shapes (hidden 2048, 22 layers,
intermediate 5632, vocab 32000). Run it only where free RAM allows (the 1.1 B plain model alone is 4.4 GB in
float32). Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory.py --hidden 768 --layers 6 --intermediate 2048
    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_memory.py --preset tinyllama --dtype bfloat16
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import subprocess
import sys
import time

import torch
from torch import nn

SHAPES = {"tinyllama": dict(hidden=2048, layers=22, intermediate=5632, vocab=32000, heads=32)}


class RMSNorm(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(x.dtype) * self.weight


class Block(nn.Module):
    def __init__(self, h: int, inter: int, heads: int):
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = RMSNorm(h), RMSNorm(h)
        self.q, self.k, self.v, self.o = (nn.Linear(h, h, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(h, inter, bias=False), nn.Linear(h, inter, bias=False)
        self.down = nn.Linear(inter, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        y = self.n1(x)
        q, k, v = (m(y).view(b, n, self.heads, -1).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, n, h))
        y = self.n2(x)
        return x + self.down(nn.functional.silu(self.gate(y)) * self.up(y))


class Llama(nn.Module):
    def __init__(self, hidden: int, layers: int, intermediate: int, vocab: int, heads: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, intermediate, heads) for _ in range(layers))
        self.norm = RMSNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))


def _status(field: str) -> float:
    """A /proc/self/status field in GiB (VmHWM: peak RSS, VmRSS: current)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    return math.nan


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_case(args: argparse.Namespace) -> dict:
    import aimc

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    model = Llama(args.hidden, args.layers, args.intermediate, args.vocab, args.heads).to(dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    tokens = torch.randint(0, args.vocab, (1, args.tokens))
    out: dict = {"case": args.case, "params": n_params, "dtype": args.dtype}
    times = {}
    t0 = time.perf_counter()
    if args.case == "analog":
        cfg = aimc.presets.get(args.config)
        inplace = "inplace" in inspect.signature(aimc.convert).parameters
        out["inplace_convert"] = inplace
        if inplace:
            model = aimc.convert(model, cfg, inplace=True)
        else:
            copy = aimc.convert(model, cfg)
            del model
            gc.collect()
            model = copy
        model.eval()
        times["convert_s"] = time.perf_counter() - t0
        out["peak_convert_gib"] = _status("VmHWM")
        out["peak_reset"] = _reset_peak()
        t = time.perf_counter()
        aimc.program(model, seed=0)
        times["program_s"] = time.perf_counter() - t
        t = time.perf_counter()
        aimc.at_time(model, 86400.0, seed=0, gdc=True)
        times["at_time_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        y = model(tokens)
    times["forward_s"] = time.perf_counter() - t
    out["finite"] = bool(torch.isfinite(y).all())
    out.update(times)
    out["peak_after_convert_gib"] = _status("VmHWM")  # since the reset (whole run where it failed)
    out["peak_gib"] = max(out["peak_after_convert_gib"], out.get("peak_convert_gib", 0.0))
    out["rss_end_gib"] = _status("VmRSS")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(SHAPES), default=None, help="model shapes (overrides the sizes)")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--config", default="joshi2020", help="aimc preset of the analog case")
    ap.add_argument("--case", choices=["plain", "analog"], default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.preset:
        for k, v in SHAPES[args.preset].items():
            setattr(args, k, v)
    if args.case:
        print(json.dumps(run_case(args)))
        return
    res = {}
    for case in ("plain", "analog"):
        cmd = [sys.executable, __file__, "--case", case] + [f"--{k}={getattr(args, k)}" for k in
                                                            ("hidden", "layers", "intermediate", "vocab", "heads",
                                                             "tokens", "dtype", "config")]
        p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if p.returncode:
            sys.exit(f"{case} case failed:\n{p.stderr[-3000:]}")
        res[case] = json.loads(p.stdout.strip().splitlines()[-1])
    pl, an = res["plain"], res["analog"]
    print(f"Llama-shaped model: {pl['params'] / 1e6:.1f} M parameters (hidden {args.hidden}, {args.layers} layers, "
          f"intermediate {args.intermediate}, vocab {args.vocab}), {args.dtype} master weights, {args.tokens} tokens, "
          f"config {args.config} (embedding digital, every Linear analog)")
    print(f"  plain : peak RSS {pl['peak_gib']:.2f} GiB (forward {pl['forward_s']:.2f} s)")
    print(f"  analog: peak RSS {an['peak_gib']:.2f} GiB over the whole run = {an['peak_gib'] / pl['peak_gib']:.2f}x "
          f"plain; convert ({'in place' if an['inplace_convert'] else 'copy, original dropped'}) peak "
          f"{an['peak_convert_gib']:.2f} GiB")
    if an["peak_reset"]:
        print(f"          program + at_time + forward alone: peak RSS {an['peak_after_convert_gib']:.2f} GiB = "
              f"{an['peak_after_convert_gib'] / pl['peak_gib']:.2f}x plain")
    print(f"          convert {an['convert_s']:.1f} s, program {an['program_s']:.1f} s, at_time(1 day, GDC) "
          f"{an['at_time_s']:.1f} s, forward {an['forward_s']:.2f} s; end RSS {an['rss_end_gib']:.2f} GiB; "
          f"outputs finite: {an['finite']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
